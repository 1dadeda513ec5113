package pipelines

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
)

// wmLogger adapts slog for Watermill. Unlike Watermill's own adapter it checks the
// level before building attributes: Watermill logs several lines per message, and
// building them only to drop them was a measurable share of the hot path. Watermill's
// per-message info lines are debug detail here.
type wmLogger struct {
	log    *slog.Logger
	fields watermill.LogFields
}

func newWMLogger(log *slog.Logger) watermill.LoggerAdapter { return wmLogger{log: log} }

func (l wmLogger) emit(level slog.Level, msg string, err error, fields watermill.LogFields) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]any, 0, 2*(len(fields)+len(l.fields))+2)
	for k, v := range l.fields {
		attrs = append(attrs, k, v)
	}
	for k, v := range fields {
		attrs = append(attrs, k, v)
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	l.log.Log(context.Background(), level, msg, attrs...)
}

func (l wmLogger) Error(msg string, err error, fields watermill.LogFields) {
	l.emit(slog.LevelError, msg, err, fields)
}
func (l wmLogger) Info(msg string, fields watermill.LogFields) {
	l.emit(slog.LevelDebug, msg, nil, fields)
}
func (l wmLogger) Debug(msg string, fields watermill.LogFields) {
	l.emit(slog.LevelDebug-1, msg, nil, fields)
}
func (l wmLogger) Trace(msg string, fields watermill.LogFields) {
	l.emit(slog.LevelDebug-2, msg, nil, fields)
}
func (l wmLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return wmLogger{log: l.log, fields: l.fields.Add(fields)}
}
