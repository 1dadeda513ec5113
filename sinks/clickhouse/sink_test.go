package clickhouse

import (
	"context"
	"testing"
	"time"
)

// TestSinkMatchesWAL runs a contending workload with producer retries and bad input
// through the sink and compares every table with the WAL folded by the resolver.
func TestSinkMatchesWAL(t *testing.T) {
	env := natsWAL(t)
	conn, dsn := sharedDB(t)
	msgs := workload(t, 11, 600, 0.01)
	publishAll(t, env.JS, msgs)

	s := startSink(t, Config{DSN: dsn, BatchSize: 700, BatchWait: 50 * time.Millisecond}, env.JS, conn)
	last := lastWALSeq(t, env.JS)
	waitConfirmed(t, s.Sink, last, 45*time.Second)
	st := s.Stats()
	t.Logf("confirmed %d events in %d batches, %d lookups, %d failures", st.Events, st.Batches, st.Lookups, st.Failures)
	if st.Lookups != 0 {
		t.Errorf("a sink reading the WAL from its start needs no WAL lookups, did %d", st.Lookups)
	}
	checkExact(t, conn, walTruth(t, env.JS))

	// Live events after catching up land too.
	more := workload(t, 12, 50, 0)
	publishAll(t, env.JS, more)
	waitConfirmed(t, s.Sink, lastWALSeq(t, env.JS), 30*time.Second)
	checkExact(t, conn, walTruth(t, env.JS))
	_ = context.Background
}

// TestSinkRestartAndReplay stops the sink mid-batch without a flush, restarts it,
// then replays part of the WAL twice (a consumer reset while stopped and another
// while running), with a cache small enough to evict: the tables still match the
// WAL exactly, every event once, every decision as the timeline's.
func TestSinkRestartAndReplay(t *testing.T) {
	env := natsWAL(t)
	conn, dsn := sharedDB(t)
	publishAll(t, env.JS, workload(t, 21, 800, 0.01))
	last := lastWALSeq(t, env.JS)
	cfg := Config{DSN: dsn, BatchSize: 300, BatchWait: 20 * time.Millisecond, ShutdownTimeout: -1, CacheSize: 64}

	// 1. Kill the sink part-way: batches handed over but not written are lost to it.
	s := startSink(t, cfg, env.JS, conn)
	waitConfirmed(t, s.Sink, last/3, 30*time.Second)
	s.stop(t)
	t.Logf("stopped at confirmed %d of %d", s.Stats().ConfirmedSeq, last)

	// 2. A new instance resumes from the ack floor; the delivered-but-unacked tail is
	// redelivered or read from the WAL.
	s = startSink(t, cfg, env.JS, conn)
	waitConfirmed(t, s.Sink, last, 45*time.Second)
	s.stop(t)
	if s.Stats().Lookups == 0 {
		t.Error("a sink resuming mid-WAL with a small cache must rebuild orders from the WAL")
	}
	tr := walTruth(t, env.JS)
	checkExact(t, conn, tr)

	// 3. Reset the consumer while stopped: everything from a third on is read again.
	if err := ResetConsumer(context.Background(), env.JS, cfg, last/3); err != nil {
		t.Fatal(err)
	}
	s = startSink(t, cfg, env.JS, conn)
	waitConfirmed(t, s.Sink, last, 45*time.Second)
	if s.Stats().Events < last-last/3 {
		t.Errorf("replay confirmed only %d events", s.Stats().Events)
	}

	// 4. Reset again while it runs, then publish more.
	if err := ResetConsumer(context.Background(), env.JS, cfg, last/2); err != nil {
		t.Fatal(err)
	}
	before := s.Stats().Events
	publishAll(t, env.JS, workload(t, 22, 100, 0))
	last2 := lastWALSeq(t, env.JS)
	waitConfirmed(t, s.Sink, last2, 45*time.Second)
	if got := s.Stats().Events - before; got < last2-last/2 {
		t.Errorf("after a live reset to %d the sink confirmed %d events, want at least %d", last/2, got, last2-last/2)
	}
	s.stop(t)
	checkExact(t, conn, walTruth(t, env.JS))
}
