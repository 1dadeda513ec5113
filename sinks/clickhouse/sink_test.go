package clickhouse

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/pipelines/topology"
)

// TestSinkMatchesWAL runs a contending workload with producer retries and bad input
// through the sink and compares every table with the WAL folded by the resolver.
func TestSinkMatchesWAL(t *testing.T) {
	env := natsWAL(t)
	conn, dsn := sharedDB(t)
	msgs := workload(t, 11, 600, 0.01)
	publishAll(t, env.JS, msgs)

	reg := prometheus.NewRegistry()
	s := startSinkWith(t, Config{DSN: dsn, BatchSize: 700, BatchWait: 50 * time.Millisecond}, env.JS, conn, reg)
	last := lastWALSeq(t, env.JS)
	waitConfirmed(t, s.Sink, last, 45*time.Second)
	st := s.Stats()
	t.Logf("confirmed %d events in %d batches, %d lookups, %d failures", st.Events, st.Batches, st.Lookups, st.Failures)
	if st.Lookups != 0 {
		t.Errorf("a sink reading the WAL from its start needs no WAL lookups, did %d", st.Lookups)
	}
	checkExact(t, conn, walTruth(t, env.JS))

	// Every batch acked: the consumer's ack floor is the WAL's end.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := env.JS.Consumer(context.Background(), topology.EventsStream, DefaultConsumer)
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.AckFloor.Stream == last && info.NumAckPending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ack floor %d, %d pending, want %d and 0", info.AckFloor.Stream, info.NumAckPending, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetGauge() != nil:
				names[mf.GetName()] = m.GetGauge().GetValue()
			case m.GetCounter() != nil && len(m.GetLabel()) == 0:
				names[mf.GetName()] = m.GetCounter().GetValue()
			case m.GetCounter() != nil && m.GetLabel()[0].GetValue() == TableEvents:
				names[mf.GetName()+"{"+TableEvents+"}"] = m.GetCounter().GetValue()
			default:
				names[mf.GetName()] = -1
			}
		}
	}
	if got := names["orderflow_sink_clickhouse_rows_total{order_events}"]; got != float64(last) {
		t.Errorf("rows_total{table=order_events} = %v, want %d", got, last)
	}
	if got := names["orderflow_sink_clickhouse_events_total"]; got != float64(last) {
		t.Errorf("events_total = %v, want %d", got, last)
	}
	for _, n := range []string{"orderflow_sink_clickhouse_rows_total", "orderflow_sink_clickhouse_batch_duration_seconds",
		"orderflow_sink_clickhouse_event_lag_seconds", "orderflow_sink_clickhouse_lag_events", "orderflow_sink_clickhouse_lag_seconds"} {
		if _, ok := names[n]; !ok {
			t.Errorf("metric %s not exported", n)
		}
	}
	if names["orderflow_sink_clickhouse_lag_events"] != 0 || names["orderflow_sink_clickhouse_lag_seconds"] != 0 {
		t.Errorf("caught up, yet lag is %v events, %v s", names["orderflow_sink_clickhouse_lag_events"], names["orderflow_sink_clickhouse_lag_seconds"])
	}
	if _, err := NewSink(Config{}, env.JS, conn, reg, nil); err == nil {
		t.Error("a second sink on one registry was accepted")
	}

	// Live events after catching up land too.
	more := workload(t, 12, 50, 0)
	publishAll(t, env.JS, more)
	waitConfirmed(t, s.Sink, lastWALSeq(t, env.JS), 30*time.Second)
	checkExact(t, conn, walTruth(t, env.JS))
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
	cfg := Config{DSN: dsn, BatchSize: 300, BatchWait: 20 * time.Millisecond, ShutdownTimeout: -1, CacheSize: 150}

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

// TestSinkFailover runs two instances on one consumer: one holds the pin and
// writes, the other stands by; when the active one stops, the standby takes over
// from the ack floor without re-reading what the first one wrote, and the tables
// stay exact.
func TestSinkFailover(t *testing.T) {
	env := natsWAL(t)
	conn, dsn := sharedDB(t)
	cfg := Config{DSN: dsn, BatchSize: 500, BatchWait: 20 * time.Millisecond}
	a := startSink(t, cfg, env.JS, conn)
	time.Sleep(200 * time.Millisecond) // a pulls first and gets the pin
	b := startSink(t, cfg, env.JS, conn)
	publishAll(t, env.JS, workload(t, 51, 500, 0.01))
	last := lastWALSeq(t, env.JS)
	deadline := time.Now().Add(30 * time.Second)
	for max(a.Stats().ConfirmedSeq, b.Stats().ConfirmedSeq) < last {
		if time.Now().After(deadline) {
			t.Fatalf("neither instance confirmed %d: %+v %+v", last, a.Stats(), b.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	active, standby := a, b
	if b.Stats().Events > a.Stats().Events {
		active, standby = b, a
	}
	// The pin goes to whichever pull request the first delivery meets and may move
	// once early on, so the standby may have written some events too: harmless
	// (rows are idempotent), and after that it skips to the other's ack floor.
	t.Logf("active confirmed %d events, standby %d", active.Stats().Events, standby.Stats().Events)
	active.stop(t) // a graceful stop unpins: the standby need not wait PinnedTTL
	before := standby.Stats().Events

	publishAll(t, env.JS, workload(t, 52, 100, 0))
	last2 := lastWALSeq(t, env.JS)
	waitConfirmed(t, standby.Sink, last2, 30*time.Second)
	if got := standby.Stats().Events - before; got > last2-last {
		t.Errorf("the standby re-read what the active instance had written: %d events for %d new", got, last2-last)
	}
	checkExact(t, conn, walTruth(t, env.JS))
}

// TestSinkNATSRestart restarts JetStream while the sink drains a backlog: deliveries
// in flight are lost to it, and it reads them from the WAL.
func TestSinkNATSRestart(t *testing.T) {
	env := natsWAL(t)
	conn, dsn := sharedDB(t)
	publishAll(t, env.JS, workload(t, 61, 800, 0.01))
	last := lastWALSeq(t, env.JS)
	s := startSink(t, Config{DSN: dsn, BatchSize: 200, BatchWait: 10 * time.Millisecond, RetryMaxBackoff: 200 * time.Millisecond}, env.JS, conn)
	waitConfirmed(t, s.Sink, last/4, 30*time.Second)
	env.Restart(t)
	publishAll(t, env.JS, workload(t, 62, 100, 0))
	last = lastWALSeq(t, env.JS)
	waitConfirmed(t, s.Sink, last, 45*time.Second)
	s.stop(t)
	checkExact(t, conn, walTruth(t, env.JS))
}

// TestIncompatibleConsumer: a consumer of the sink's name that the sink cannot use
// stops Run with an error instead of a silent retry loop.
func TestIncompatibleConsumer(t *testing.T) {
	env := natsWAL(t)
	conn, _ := sharedDB(t)
	_, err := env.JS.CreateConsumer(context.Background(), topology.EventsStream, jetstream.ConsumerConfig{
		Durable: DefaultConsumer, FilterSubject: topology.WALPrefix + ".>", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSink(Config{}, env.JS, conn, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Run(ctx); !errors.Is(err, ErrIncompatibleConsumer) {
		t.Fatalf("Run returned %v, want ErrIncompatibleConsumer", err)
	}
}
