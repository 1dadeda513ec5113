package embedded

import (
	"context"
	"log/slog"
	"testing"
)

type recorder struct {
	level   slog.Level
	records []slog.Record
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= r.level }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.records = append(r.records, rec)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func TestLoggerLevels(t *testing.T) {
	rec := &recorder{level: slog.LevelDebug}
	l := NewLogger(slog.New(rec))
	l.Noticef("n %d", 1)
	l.Warnf("w")
	l.Errorf("e")
	l.Fatalf("f")
	l.Debugf("d")
	l.Tracef("t")
	want := []struct {
		level slog.Level
		msg   string
	}{
		{slog.LevelInfo, "n 1"}, {slog.LevelWarn, "w"}, {slog.LevelError, "e"},
		{slog.LevelError, "f"}, {slog.LevelDebug, "d"}, {slog.LevelDebug, "t"},
	}
	if len(rec.records) != len(want) {
		t.Fatalf("got %d records, want %d", len(rec.records), len(want))
	}
	for i, w := range want {
		if r := rec.records[i]; r.Level != w.level || r.Message != w.msg {
			t.Errorf("record %d = %s %q, want %s %q", i, r.Level, r.Message, w.level, w.msg)
		}
	}

	rec = &recorder{level: slog.LevelInfo}
	l = NewLogger(slog.New(rec))
	l.Debugf("d")
	l.Tracef("t")
	if len(rec.records) != 0 {
		t.Fatalf("debug records passed an Info logger: %d", len(rec.records))
	}
}
