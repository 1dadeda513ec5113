package clickhouse

import (
	"context"
	"flag"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/tools/simulate"
)

var long = flag.Bool("long", false, "run the long variants (a 30s ClickHouse outage)")

// publishPaced publishes msgs at rate per second and reports when all are stored.
func publishPaced(js jetstream.JetStream, msgs []simulate.Message, rate float64) <-chan error {
	done := make(chan error, 1)
	go func() { done <- simulate.PublishAll(context.Background(), js, msgs, rate) }()
	return done
}

// TestSinkOutage stops ClickHouse while events keep arriving, starts it again, and
// checks that nothing was lost or doubled. The outage lasts 6s, 30s with -long
// (go test ./sinks/clickhouse -run Outage -long).
func TestSinkOutage(t *testing.T) {
	outage := 6 * time.Second
	if *long {
		outage = 30 * time.Second
	}
	chEnv := testenv.ClickHouse(t)
	db := chEnv.CreateDatabase(t)
	conn, err := Open(context.Background(), chEnv.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	env := natsWAL(t)

	// AckWait and PinnedTTL far below the outage: JetStream redelivers what the
	// blocked sink holds, and the sink loses its pin and regains it.
	s := startSink(t, Config{DSN: chEnv.DSN(db), BatchSize: 500, BatchWait: 100 * time.Millisecond,
		RetryMaxBackoff: 500 * time.Millisecond, InsertTimeout: 5 * time.Second,
		AckWait: 2 * time.Second, PinnedTTL: 2 * time.Second}, env.JS, conn)
	msgs := workload(t, 31, 2500, 0.005)
	published := publishPaced(env.JS, msgs, float64(len(msgs))/(outage+4*time.Second).Seconds())

	time.Sleep(2 * time.Second)
	before := s.Stats()
	if before.Events == 0 {
		t.Fatal("nothing confirmed before the outage")
	}
	chEnv.Stop(t)
	time.Sleep(outage)
	during := s.Stats()
	chEnv.Start(t)
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	last := lastWALSeq(t, env.JS)
	t0 := time.Now()
	waitConfirmed(t, s.Sink, last, 60*time.Second)
	t.Logf("outage %s: confirmed %d events before, %d more during (in flight when it began), %d failed attempts; caught up %d events %s after restart; %d redeliveries skipped",
		outage, before.Events, during.Events-before.Events, s.Stats().Failures, last-during.ConfirmedSeq, time.Since(t0).Round(time.Millisecond), s.Stats().Redelivered)
	if s.Stats().Failures == 0 {
		t.Error("no insert failed: the outage was not observed")
	}
	s.stop(t)
	checkExact(t, conn, walTruth(t, env.JS))
}
