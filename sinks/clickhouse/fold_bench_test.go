package clickhouse

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/internal/tools/simulate"
)

// BenchmarkFold measures the sink's CPU per event without I/O: classify, resolve,
// build rows (the reader's share of the work).
func BenchmarkFold(b *testing.B) {
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 1, Orders: 10_000})
	if err != nil {
		b.Fatal(err)
	}
	w := walOf(msgs)
	b.ResetTimer()
	n := 0
	for b.Loop() {
		var lookups atomic.Uint64
		f := newFolder(w, 1<<20, 1, time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), &lookups)
		f.reset(true)
		bt := newBatch(20000)
		for _, r := range w.records {
			ev, rej := fold.Classify(r)
			if err := f.fold(context.Background(), r, ev, rej, bt); err != nil {
				b.Fatal(err)
			}
			if bt.events.len() >= 20000 {
				f.seal(bt)
				bt = newBatch(20000)
			}
			n++
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
}
