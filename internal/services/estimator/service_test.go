package estimator_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/internal/services/estimator"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/schemas"
)

func estimatorEvents(t *testing.T, env *testenv.NATSEnv) []schemas.Event {
	t.Helper()
	return env.WALEvents(t, schemas.SourceEstimator)
}

// run starts an estimator and returns a stop function that waits for it.
func run(t *testing.T, env *testenv.NATSEnv) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := estimator.New(ctx, env.Conn, env.JS, estimator.Config{Tick: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("estimator: %v", err)
		}
	}
}

func waitFor(t *testing.T, env *testenv.NATSEnv, what string, ok func([]schemas.Event) bool) []schemas.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs := estimatorEvents(t, env)
		if ok(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: estimator events %+v", what, evs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestEstimatorFollowsTheDasherAndRestartsWhereItStopped.
func TestEstimatorFollowsTheDasherAndRestartsWhereItStopped(t *testing.T) {
	env := testenv.WAL(t, 2)
	ctx := context.Background()
	restaurant := dispatch.Point{Lat: 51.5074, Lng: -0.1278}
	customer := dispatch.Destination(restaurant, 90, 3000)
	start := dispatch.Destination(restaurant, 200, 1500)
	move := func(p dispatch.Point, speed float64) {
		t.Helper()
		if err := env.Conn.Publish(dispatch.LocationsSubject("d1"), dispatch.EncodePosition(dispatch.Position{Point: p, At: time.Now(), SpeedMPS: speed})); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC().Truncate(time.Second)
	created := testenv.Event("o1", schemas.SourcePlatform, 1, schemas.StatusCreated)
	created.OccurredAt = now
	env.Publish(t, created)
	confirmed := testenv.Event("o1", schemas.SourceMerchant, 1, schemas.StatusConfirmed)
	confirmed.OccurredAt = now
	env.Publish(t, confirmed)
	ix := dispatch.NewIndex(0)
	ix.Update("d1", dispatch.Position{Point: start, At: time.Now()}, 0)
	d, err := dispatch.NewDispatcher(ctx, env.JS, ix, dispatch.AssignConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Assign(ctx, "o1", dispatch.AssignRequest{Pickup: restaurant, Dropoff: &customer}); err != nil {
		t.Fatal(err)
	}

	stop := run(t, env)
	move(start, 6)
	first := waitFor(t, env, "an eta", func(evs []schemas.Event) bool { return len(evs) >= 1 && evs[0].ETA != nil })
	eta := first[0].ETA.Sub(now)
	// Prep (12 min default) dominates the 1.5 km ride; then 3 km at 7 m/s and a handoff.
	if eta < 20*time.Minute || eta > 23*time.Minute {
		t.Errorf("eta %v after confirmation, want about 21.3 min", eta)
	}
	move(restaurant, 0)
	waitFor(t, env, "ready_for_pickup", func(evs []schemas.Event) bool {
		return len(evs) >= 2 && evs[len(evs)-1].Status == schemas.StatusReadyForPickup
	})
	stop()
	before := estimatorEvents(t, env)

	// Restarted: it reads its own events back, continues their source_seq, and
	// does not say ready_for_pickup again.
	stop = run(t, env)
	defer stop()
	time.Sleep(300 * time.Millisecond)
	move(dispatch.Destination(restaurant, 90, 2000), 8)
	after := waitFor(t, env, "en_route after the restart", func(evs []schemas.Event) bool {
		return len(evs) > len(before) && evs[len(evs)-1].Status == schemas.StatusEnRoute
	})
	ids := map[string]bool{}
	for i, ev := range after {
		if ev.SourceSeq != uint64(i+1) || ev.EventID != estimator.EventID("o1", ev.SourceSeq) || ids[ev.EventID] {
			t.Fatalf("event %d: %+v; want source_seq %d, no gaps, no repeats (all: %v)", i, ev, i+1, fmt.Sprint(after))
		}
		ids[ev.EventID] = true
		if i >= len(before) && ev.Status == schemas.StatusReadyForPickup {
			t.Errorf("repeated ready_for_pickup after the restart: %+v", ev)
		}
	}
}
