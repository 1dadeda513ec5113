package handlers_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// refusingMilestones is the real publisher, except that its first sends are
// refused on the spot, as a client with too many publishes outstanding refuses.
type refusingMilestones struct {
	handlers.MilestoneSink
	mu      sync.Mutex
	refuse  int
	refusal error
}

func (r *refusingMilestones) PublishAsync(orderID, kind string) (jetstream.PubAckFuture, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse > 0 {
		r.refuse--
		return nil, r.refusal
	}
	return r.MilestoneSink.PublishAsync(orderID, kind)
}

// syncBuffer is a log sink safe for the lane's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRelayRetriesMilestonesItCouldNotSend: a milestone whose publish is refused
// before it leaves the client is retried until it is in the stream, the lane holds
// its checkpoint until then, and the log names the refusal (it used to be dropped).
func TestRelayRetriesMilestonesItCouldNotSend(t *testing.T) {
	env := testenv.WAL(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i, ev := range []schemas.Event{
		testenv.Event("o-1", schemas.SourcePlatform, 1, schemas.StatusCreated),
		testenv.Event("o-1", schemas.SourceDriver, 1, schemas.StatusPickedUp),
		testenv.Event("o-1", schemas.SourceDriver, 2, schemas.StatusDelivered),
	} {
		if seq := env.Publish(t, ev); seq != uint64(i+1) {
			t.Fatalf("published at %d", seq)
		}
	}

	walLog, err := wal.Open(ctx, env.JS)
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := snapshot.Open(ctx, env.JS, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lanes, err := handlers.NewJetStreamLanes(ctx, env.JS)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	refusal := errors.New("nats: too many outstanding publishes (test)")
	lane := handlers.NewLane(0, handlers.LaneConfig{RetryBackoff: 10 * time.Millisecond}, handlers.Deps{
		Orders: walLog, Lanes: lanes, Snapshots: snaps, DLQ: handlers.NewDLQ(env.JS),
		Milestones: &refusingMilestones{MilestoneSink: handlers.NewMilestonePublisher(env.JS, topology.MilestonesPrefix), refuse: 3, refusal: refusal},
		Metrics:    handlers.NewMetrics(prometheus.NewRegistry()),
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
	})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go lane.Run(runCtx)

	var batch []handlers.Delivery
	if err := lanes.ReadLane(ctx, 0, 1, 3, func(r fold.Record) error {
		batch = append(batch, handlers.Delivery{Record: r, ConsumerSeq: uint64(len(batch) + 1)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := lane.HandleBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := lane.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}

	ms, err := env.JS.Stream(ctx, topology.MilestonesStream)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"picked_up", "delivered"} {
		if _, err := ms.GetLastMsgForSubject(ctx, topology.MilestonesPrefix+"."+kind+".o-1"); err != nil {
			t.Fatalf("milestone %s: %v", kind, err)
		}
	}
	if pos, err := lanes.Checkpoint(ctx, 0); err != nil || pos != 3 {
		t.Fatalf("checkpoint %d (%v), want 3", pos, err)
	}
	if !strings.Contains(logs.String(), refusal.Error()) {
		t.Fatalf("the log does not name the refusal:\n%s", logs.String())
	}
}
