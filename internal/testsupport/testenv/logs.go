package testenv

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// serverLogLines is how much of a server's log a failing test prints.
const serverLogLines = 300

// serverLog returns a logger whose output is printed only if t fails: passing
// tests stay quiet (a stopped cluster node makes its peers log route errors
// many times a second), failing ones show what the servers saw. Call it before
// starting the server, so the log is printed after the server's own cleanup.
// Output is kept in memory, not sent to t.Log: servers log from their own
// goroutines, and t.Log after the test has finished panics.
func serverLog(t testing.TB, name string) *slog.Logger {
	b := &tailBuffer{max: serverLogLines}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log (last %d lines):\n%s", name, serverLogLines, b.String())
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// tailBuffer keeps the last max lines written to it.
type tailBuffer struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for line := range strings.SplitSeq(strings.TrimRight(string(p), "\n"), "\n") {
		b.lines = append(b.lines, line)
	}
	if over := len(b.lines) - b.max; over > 0 {
		b.lines = append(b.lines[:0], b.lines[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out bytes.Buffer
	for _, l := range b.lines {
		out.WriteString(l)
		out.WriteByte('\n')
	}
	return out.String()
}
