package embedded

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats-server/v2/server"
)

// Logger adapts a *slog.Logger to nats-server's printf-style server.Logger, so
// the server's logs go wherever the rest of orderflow logs go.
type Logger struct {
	l     *slog.Logger
	fatal chan string // when set, receives the first Fatalf message
}

// NewLogger returns a server.Logger that writes to l with component=nats-server.
func NewLogger(l *slog.Logger) *Logger {
	return &Logger{l: l.With("component", "nats-server")}
}

var _ server.Logger = (*Logger)(nil)

// Noticef logs at Info.
func (g *Logger) Noticef(format string, v ...any) { g.log(slog.LevelInfo, format, v) }

// Warnf logs at Warn.
func (g *Logger) Warnf(format string, v ...any) { g.log(slog.LevelWarn, format, v) }

// Errorf logs at Error.
func (g *Logger) Errorf(format string, v ...any) { g.log(slog.LevelError, format, v) }

// Fatalf logs at Error. nats-server's own logger exits the process here; an
// embedded server must leave that decision to its host, so Start is told instead
// (nats-server calls Fatalf, e.g., when the port is taken, and keeps running broken).
func (g *Logger) Fatalf(format string, v ...any) {
	g.log(slog.LevelError, format, v)
	if g.fatal != nil {
		select {
		case g.fatal <- fmt.Sprintf(format, v...):
		default:
		}
	}
}

// Debugf logs at Debug (nats-server calls it only when debug is on).
func (g *Logger) Debugf(format string, v ...any) { g.log(slog.LevelDebug, format, v) }

// Tracef logs at Debug (nats-server calls it only when trace is on).
func (g *Logger) Tracef(format string, v ...any) { g.log(slog.LevelDebug, format, v) }

func (g *Logger) log(level slog.Level, format string, v []any) {
	ctx := context.Background()
	if !g.l.Enabled(ctx, level) {
		return // skip Sprintf for dropped records
	}
	g.l.Log(ctx, level, fmt.Sprintf(format, v...))
}
