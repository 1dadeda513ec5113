package estimator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/internal/services/estimator"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// openOrders is a checkpoint of n open orders, as a busy platform's estimator
// holds them: each with its restaurant, dasher, places and what was said, 2000
// restaurants' prep times, and one pending event in every thousand orders.
func openOrders(n int, walSeq uint64) estimator.Checkpoint {
	now := time.Now().UTC().Truncate(time.Millisecond)
	c := estimator.Checkpoint{WALSeq: walSeq, Model: estimator.ModelState{
		Orders: map[string]estimator.OrderState{}, Prep: map[string]estimator.PrepState{}, Global: estimator.PrepState{N: 4e5, Sum: 4e5 * 700}}}
	for i := range n {
		pickup := dispatch.Point{Lat: 51.4 + float64(i%997)/5e3, Lng: -0.2 + float64(i%991)/5e3}
		dropoff := dispatch.Destination(pickup, float64(i%360), 1000+float64(i%4000))
		id, restaurant := fmt.Sprintf("order-%07d", i), fmt.Sprintf("rest-%04d", i%2000)
		c.Model.Orders[id] = estimator.OrderState{
			Restaurant: restaurant, Dasher: fmt.Sprintf("dasher-%06d", i), Status: schemas.StatusConfirmed,
			ConfirmedAt: now.Add(-time.Duration(i) * time.Millisecond), Pickup: &pickup, Dropoff: &dropoff, Visited: i%3 == 0,
			Seq: uint64(i%7 + 1), Predicted: schemas.StatusReadyForPickup,
			ETA: now.Add(time.Duration(1200+i%900) * time.Second).Truncate(time.Second), ETAAt: now.Add(-time.Duration(i) * time.Microsecond),
		}
		c.Model.Prep[restaurant] = estimator.PrepState{N: float64(i % 50), Sum: float64(i%50) * 690}
		if i%1000 == 0 {
			eta := now.Add(20 * time.Minute).Truncate(time.Second)
			seq := uint64(i%7 + 1)
			c.Pending = append(c.Pending, schemas.Event{SchemaVersion: schemas.SchemaVersion, EventID: estimator.EventID(id, seq),
				OrderID: id, Source: schemas.SourceEstimator, SourceSeq: seq, OccurredAt: now, ETA: &eta, ActorID: "estimator"})
		}
	}
	return c
}

// sameCheckpoint compares two checkpoints by their JSON, which sorts maps and
// does not tell a nil map from an empty one.
func sameCheckpoint(t *testing.T, got, want estimator.Checkpoint) {
	t.Helper()
	g, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	w, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if string(g) != string(w) {
		t.Fatalf("restored checkpoint differs: WAL seq %d, %d orders, %d pending; want %d, %d, %d",
			got.WALSeq, len(got.Model.Orders), len(got.Pending), want.WALSeq, len(want.Model.Orders), len(want.Pending))
	}
}

func checkpointStore(t *testing.T, env *testenv.NATSEnv) (*estimator.CheckpointStore, jetstream.KeyValue) {
	t.Helper()
	kv, err := env.JS.KeyValue(context.Background(), topology.EstimatorBucket)
	if err != nil {
		t.Fatal(err)
	}
	s, err := estimator.NewCheckpointStore(kv, "estimator")
	if err != nil {
		t.Fatal(err)
	}
	return s, kv
}

// TestCheckpointOf100kOpenOrders: a checkpoint of 100k open orders (about 100
// times what one KV value holds) is written and read back equal. The size and
// times are logged: go test ./internal/services/estimator -run 100k -v.
func TestCheckpointOf100kOpenOrders(t *testing.T) {
	env := testenv.WAL(t, 1)
	ctx := context.Background()
	want := openOrders(100_000, 12_345_678)

	// Five rounds as the estimator makes them: copy the model's durable part
	// (under its lock), encode and write it; then read it back as a restart
	// does, equal to what was written (compared once: 70 MB of JSON).
	m := estimator.ModelFromState(want.Model)
	store, _ := checkpointStore(t, env)
	var snapshot, encode, write, load []time.Duration
	var st estimator.SaveStats
	for range 5 {
		start := time.Now()
		state := m.State()
		snapshot = append(snapshot, time.Since(start))
		if len(state.Orders) != len(want.Model.Orders) {
			t.Fatalf("model state has %d orders, want %d", len(state.Orders), len(want.Model.Orders))
		}
		var err error
		if st, err = store.Save(ctx, want); err != nil {
			t.Fatal(err)
		}
		encode, write = append(encode, st.Encode), append(write, st.Write)
		reader, _ := checkpointStore(t, env)
		start = time.Now()
		got, found, err := reader.Load(ctx)
		load = append(load, time.Since(start))
		if err != nil || !found {
			t.Fatalf("load: found %v, %v", found, err)
		}
		if len(load) == 1 {
			sameCheckpoint(t, got, want)
		}
	}
	if st.Chunks < 2 {
		t.Fatalf("100k open orders in %d chunk(s) of %d bytes: want more than one KV value's worth", st.Chunks, st.Bytes)
	}
	span := func(ds []time.Duration) string {
		return fmt.Sprintf("%v–%v", slices.Min(ds).Round(time.Millisecond), slices.Max(ds).Round(time.Millisecond))
	}
	t.Logf("100k open orders: %.1f MB in %d chunks; over 5 rounds: snapshot under the lock %s, encode %s, write %s, load %s",
		float64(st.Bytes)/1e6, st.Chunks, span(snapshot), span(encode), span(write), span(load))
}

// TestCheckpointCrashBeforeTheManifest: a Save that stops after writing its
// chunks and before the manifest (a crash there) leaves the previous checkpoint
// whole; the next estimator's Save overwrites the partial generation and removes
// what is left of it, so the bucket holds the manifest and two generations.
func TestCheckpointCrashBeforeTheManifest(t *testing.T) {
	env := testenv.WAL(t, 1)
	ctx := context.Background()
	first := openOrders(10, 100)
	store, kv := checkpointStore(t, env)
	if _, err := store.Save(ctx, first); err != nil {
		t.Fatal(err)
	}
	crash := errors.New("crash")
	estimator.FailBeforeManifest(store, crash)
	if _, err := store.Save(ctx, openOrders(60_000, 200)); !errors.Is(err, crash) {
		t.Fatalf("save with the failpoint: %v, want the crash", err)
	}

	restarted, _ := checkpointStore(t, env)
	got, found, err := restarted.Load(ctx)
	if err != nil || !found {
		t.Fatalf("load after the crash: found %v, %v", found, err)
	}
	sameCheckpoint(t, got, first)

	third, fourth := openOrders(20, 300), openOrders(1, 400)
	for _, c := range []estimator.Checkpoint{third, fourth} {
		if _, err := restarted.Save(ctx, c); err != nil {
			t.Fatal(err)
		}
		got, _, err := restarted.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sameCheckpoint(t, got, c)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range keys.Keys() {
		names = append(names, k)
	}
	slices.Sort(names)
	if want := []string{"estimator", "estimator.0.0", "estimator.1.0"}; !slices.Equal(names, want) {
		t.Fatalf("bucket keys %v, want %v: the manifest and two one-chunk generations", names, want)
	}
}

// TestCheckpointStoreReadsASingleValueCheckpoint: the one-value JSON checkpoint
// earlier versions wrote is read (its orders' source_seq are the estimator's
// memory once the WAL below it is purged), and the first Save replaces it.
func TestCheckpointStoreReadsASingleValueCheckpoint(t *testing.T) {
	env := testenv.WAL(t, 1)
	ctx := context.Background()
	store, kv := checkpointStore(t, env)
	if _, err := kv.Put(ctx, "estimator", []byte(`{"wal_seq":42,"model":{"orders":{"o1":{"seq":5,"predicted":"ready_for_pickup"}},"global":{"n":2,"sum":1400}}}`)); err != nil {
		t.Fatal(err)
	}
	c, found, err := store.Load(ctx)
	if err != nil || !found {
		t.Fatalf("load: found %v, %v", found, err)
	}
	if c.WALSeq != 42 || c.Model.Orders["o1"].Seq != 5 || c.Model.Global.N != 2 {
		t.Fatalf("single-value checkpoint read as %+v", c)
	}
	next := openOrders(3, 43)
	if _, err := store.Save(ctx, next); err != nil {
		t.Fatal(err)
	}
	again, _ := checkpointStore(t, env)
	got, _, err := again.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameCheckpoint(t, got, next)
}

// A name with a dot could collide with another estimator's chunk keys.
func TestCheckpointNameHasNoDots(t *testing.T) {
	if _, err := estimator.NewCheckpointStore(nil, "a.0"); err == nil {
		t.Fatal("a name with a dot was accepted")
	}
}
