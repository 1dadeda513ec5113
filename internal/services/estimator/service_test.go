package estimator_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/internal/services/estimator"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

func estimatorEvents(t *testing.T, env *testenv.NATSEnv) []schemas.Event {
	t.Helper()
	return env.WALEvents(t, schemas.SourceEstimator)
}

// run starts an estimator and returns a stop function that waits for it.
// published, if set, sees every event it publishes.
func run(t *testing.T, env *testenv.NATSEnv, published ...func(schemas.Event)) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := estimator.Config{Tick: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if len(published) > 0 {
		cfg.Published = published[0]
	}
	svc, err := estimator.New(ctx, env.Conn, env.JS, cfg)
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

// The tests' places: a restaurant, its customer 3 km east, and where the dasher starts.
var (
	restaurant = dispatch.Point{Lat: 51.5074, Lng: -0.1278}
	customer   = dispatch.Destination(restaurant, 90, 3000)
	start      = dispatch.Destination(restaurant, 200, 1500)
)

// moveDasher publishes dasher's position on the firehose, measured now.
func moveDasher(t *testing.T, env *testenv.NATSEnv, dasher string, p dispatch.Point, speed float64) {
	t.Helper()
	if err := env.Conn.Publish(dispatch.LocationsSubject(dasher), dispatch.EncodePosition(dispatch.Position{Point: p, At: time.Now(), SpeedMPS: speed})); err != nil {
		t.Fatal(err)
	}
}

// assignAt gives order to dasher, who is at start, with the restaurant as pickup
// and the customer as drop-off: the dispatch record the estimator reads.
func assignAt(t *testing.T, env *testenv.NATSEnv, order, dasher string) {
	t.Helper()
	ix := dispatch.NewIndex(0)
	ix.Update(dasher, dispatch.Position{Point: start, At: time.Now()}, 0)
	d, err := dispatch.NewDispatcher(context.Background(), env.JS, ix, dispatch.AssignConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if a, err := d.Assign(context.Background(), order, dispatch.AssignRequest{Pickup: restaurant, Dropoff: &customer}); err != nil || a.DasherID != dasher {
		t.Fatalf("assign %s: %+v %v, want %s", order, a, err, dasher)
	}
}

// TestEstimatorFollowsTheDasherAndRestartsWhereItStopped.
func TestEstimatorFollowsTheDasherAndRestartsWhereItStopped(t *testing.T) {
	env := testenv.WAL(t, 2)
	move := func(p dispatch.Point, speed float64) { t.Helper(); moveDasher(t, env, "d1", p, speed) }
	now := time.Now().UTC().Truncate(time.Second)
	created := testenv.Event("o1", schemas.SourcePlatform, 1, schemas.StatusCreated)
	created.OccurredAt = now
	env.Publish(t, created)
	confirmed := testenv.Event("o1", schemas.SourceMerchant, 1, schemas.StatusConfirmed)
	confirmed.OccurredAt = now
	env.Publish(t, confirmed)
	assignAt(t, env, "o1", "d1")

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

// TestEstimatorResumesFromItsCheckpoint: stopped mid-delivery, the estimator's
// checkpoint holds its WAL position and model; the WAL before that position is
// then purged (as the archive does), and events arrive while it is down. The
// restarted estimator must continue from the checkpoint: no source_seq repeated
// or skipped, no stage said twice (its history is no longer in the WAL, only in
// the checkpoint), and the events that came while it was down folded (a new
// order gets its predictions). Every event it published is in the WAL as
// published: none dropped as a duplicate of an earlier one. A checkpoint write
// that crashed before its manifest, while it was down, changes nothing.
func TestEstimatorResumesFromItsCheckpoint(t *testing.T) {
	env := testenv.WAL(t, 2)
	ctx := context.Background()
	move := func(dasher string, p dispatch.Point, speed float64) { t.Helper(); moveDasher(t, env, dasher, p, speed) }
	open := func(order, dasher string) {
		t.Helper()
		env.Publish(t, testenv.Event(order, schemas.SourcePlatform, 1, schemas.StatusCreated))
		env.Publish(t, testenv.Event(order, schemas.SourceMerchant, 1, schemas.StatusConfirmed))
		assignAt(t, env, order, dasher)
	}
	var mu sync.Mutex
	var published []schemas.Event
	afterRestart := 0 // published[afterRestart:] came from the restarted estimator
	record := func(ev schemas.Event) {
		mu.Lock()
		published = append(published, ev)
		mu.Unlock()
	}
	// says polls the WAL until order's last estimator event has status.
	says := func(order string, status schemas.Status, resend func()) {
		t.Helper()
		waitFor(t, env, order+" "+string(status), func(evs []schemas.Event) bool {
			resend()
			for i := len(evs) - 1; i >= 0; i-- {
				if evs[i].OrderID == order {
					return evs[i].Status == status
				}
			}
			return false
		})
	}

	open("o1", "d1")
	stop := run(t, env, record)
	says("o1", schemas.StatusReadyForPickup, func() { move("d1", restaurant, 0) })
	// Let a round pass after the last publish, so the checkpoint covers it, then stop.
	cp, store := checkpointAtWALEnd(t, env)
	stop()
	mu.Lock()
	afterRestart = len(published)
	mu.Unlock()
	cp, _, err := store.Load(ctx) // the last one it wrote
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cp.Model.Orders["o1"]; !ok {
		t.Fatalf("checkpoint lacks o1: %+v", cp)
	}
	// A crash in the middle of the next checkpoint: its chunks written, not its
	// manifest. Were that generation read, o1 would be unknown.
	crash := errors.New("crash")
	estimator.FailBeforeManifest(store, crash)
	if _, err := store.Save(ctx, estimator.Checkpoint{WALSeq: cp.WALSeq}); !errors.Is(err, crash) {
		t.Fatalf("checkpoint write with the failpoint: %v", err)
	}

	// While it is down: the WAL up to the checkpoint is purged, o1 is picked up,
	// and o2 is opened and assigned.
	stream, err := env.JS.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSequence(cp.WALSeq+1)); err != nil {
		t.Fatal(err)
	}
	env.Publish(t, testenv.Event("o1", schemas.SourceDriver, 1, schemas.StatusPickedUp))
	open("o2", "d2")

	stop = run(t, env, record)
	defer stop()
	says("o1", schemas.StatusEnRoute, func() { move("d1", dispatch.Destination(restaurant, 90, 2000), 8) })
	says("o2", schemas.StatusReadyForPickup, func() { move("d2", restaurant, 0) })

	mu.Lock()
	defer mu.Unlock()
	seqs := map[string]uint64{}
	stages := map[string]map[schemas.Status]bool{}
	for _, ev := range published {
		if ev.SourceSeq != seqs[ev.OrderID]+1 || ev.EventID != estimator.EventID(ev.OrderID, ev.SourceSeq) {
			t.Errorf("%s published %+v after source_seq %d: want the next, no gaps, no repeats", ev.OrderID, ev, seqs[ev.OrderID])
		}
		seqs[ev.OrderID] = ev.SourceSeq
		if stages[ev.OrderID] == nil {
			stages[ev.OrderID] = map[schemas.Status]bool{}
		}
		if ev.Status != "" && stages[ev.OrderID][ev.Status] {
			t.Errorf("%s said %s twice", ev.OrderID, ev.Status)
		}
		stages[ev.OrderID][ev.Status] = true
	}
	inWAL := map[string]schemas.Event{}
	for _, ev := range estimatorEvents(t, env) {
		inWAL[ev.EventID] = ev
	}
	for i, ev := range published {
		got, ok := inWAL[ev.EventID]
		switch {
		case !ok && i >= afterRestart:
			t.Errorf("published %+v is not in the WAL", ev)
		case ok && (got.Status != ev.Status || !got.ETA.Equal(*ev.ETA) || got.SourceSeq != ev.SourceSeq):
			t.Errorf("WAL holds %+v under %s, the estimator published %+v", got, ev.EventID, ev)
		}
	}
}

// TestEstimatorIgnoresACheckpointAheadOfTheWAL: a checkpoint past the WAL's last
// sequence, or of a WAL created at another time, belongs to a WAL since recreated;
// following it would skip events, or fold the new WAL into the old one's model.
// The estimator reads the WAL from the start.
func TestEstimatorIgnoresACheckpointAheadOfTheWAL(t *testing.T) {
	for name, cp := range map[string]string{
		"ahead":       `{"wal_seq":1000000,"model":{"orders":{"o1":{"seq":50}},"global":{"n":0,"sum":0}}}`,
		"another WAL": `{"wal_seq":1,"wal_created":"2020-01-01T00:00:00Z","model":{"orders":{"o1":{"seq":50}},"global":{"n":0,"sum":0}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			env := testenv.WAL(t, 2)
			ctx := context.Background()
			kv, err := env.JS.KeyValue(ctx, topology.EstimatorBucket)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(ctx, "estimator", []byte(cp)); err != nil {
				t.Fatal(err)
			}
			env.Publish(t, testenv.Event("o1", schemas.SourcePlatform, 1, schemas.StatusCreated))
			assignAt(t, env, "o1", "d1")
			stop := run(t, env)
			defer stop()
			evs := waitFor(t, env, "an eta", func(evs []schemas.Event) bool { moveDasher(t, env, "d1", start, 6); return len(evs) >= 1 })
			if evs[0].SourceSeq != 1 {
				t.Fatalf("first event %+v, want source_seq 1 (the stale checkpoint's 50 ignored)", evs[0])
			}
		})
	}
}

// TestEstimatorCheckpointsTensOfThousandsOfOpenOrders: with 30k open orders (ten
// times what one KV value held) the running estimator still writes a checkpoint
// at the WAL's end, holding every one of them.
func TestEstimatorCheckpointsTensOfThousandsOfOpenOrders(t *testing.T) {
	env := testenv.WAL(t, 2)
	const orders = 30_000
	for i := range orders {
		ev := testenv.Event(fmt.Sprintf("big-%05d", i), schemas.SourcePlatform, 1, schemas.StatusCreated)
		m := nats.NewMsg(schemas.Subject(ev.Source, ev.OrderID))
		m.Data = testenv.EventJSON(t, ev)
		m.Header.Set(jetstream.MsgIDHeader, ev.EventID)
		if _, err := env.JS.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 || i == orders-1 {
			select {
			case <-env.JS.PublishAsyncComplete():
			case <-time.After(time.Minute):
				t.Fatal("publishing 1000 orders did not complete within a minute")
			}
		}
	}
	stop := run(t, env)
	defer stop()
	if cp, _ := checkpointAtWALEnd(t, env); len(cp.Model.Orders) != orders {
		t.Fatalf("checkpoint holds %d open orders, want %d", len(cp.Model.Orders), orders)
	}
}

// checkpointAtWALEnd waits until the estimator's checkpoint covers the WAL's
// last message, and returns it and the store it was read from.
func checkpointAtWALEnd(t *testing.T, env *testenv.NATSEnv) (estimator.Checkpoint, *estimator.CheckpointStore) {
	t.Helper()
	ctx := context.Background()
	stream, err := env.JS.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	store, _ := checkpointStore(t, env)
	var cp estimator.Checkpoint
	for deadline := time.Now().Add(30 * time.Second); cp.WALSeq < info.State.LastSeq; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint at WAL seq %d, want %d", cp.WALSeq, info.State.LastSeq)
		}
		if cp, _, err = store.Load(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return cp, store
}
