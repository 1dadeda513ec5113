package snapshot_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

func openStore(t *testing.T, ttl time.Duration) (*snapshot.Store, jetstream.KeyValue) {
	s, kv, _ := openStoreEnv(t, ttl)
	return s, kv
}

func openStoreEnv(t *testing.T, ttl time.Duration) (*snapshot.Store, jetstream.KeyValue, *testenv.NATSEnv) {
	t.Helper()
	env := testenv.NATS(t)
	ctx := context.Background()
	if _, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	s, err := snapshot.Open(ctx, env.JS, ttl)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := env.JS.KeyValue(ctx, topology.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	return s, kv, env
}

// state is order o-1 after one driver event with status at WAL sequence seq.
func state(status schemas.Status, seq uint64) *resolver.State {
	st := resolver.New("o-1")
	st.Apply(&schemas.Event{EventID: "e", OrderID: "o-1", Source: schemas.SourceDriver, SourceSeq: seq,
		Status: status, OccurredAt: time.Date(2026, 1, 5, 18, 0, 0, 0, time.UTC)}, seq)
	return st
}

func put(t *testing.T, kv jetstream.KeyValue, st *resolver.State, ob outbox.Outbox) {
	t.Helper()
	b, err := snapshot.Encode(st, ob)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), "o-1", b); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateRetriesAConflictWithTheNewState: another writer moves the key between
// Update's read and its write; Update reads again and calls fn with the new state.
func TestUpdateRetriesAConflictWithTheNewState(t *testing.T) {
	s, kv, env := openStoreEnv(t, time.Hour)
	ctx := context.Background()
	var seen []uint64
	wrote, err := s.Update(ctx, "o-1", func(st *resolver.State, ob outbox.Outbox) (*resolver.State, outbox.Outbox, error) {
		if st == nil {
			seen = append(seen, 0)
			put(t, kv, state(schemas.StatusPickedUp, 3), outbox.Outbox{Pending: []string{"picked_up"}}) // the lane, meanwhile
		} else {
			seen = append(seen, st.WalSeq())
			if len(ob.Pending) != 1 {
				t.Errorf("fn got outbox %+v, want the stored one", ob)
			}
		}
		return state(schemas.StatusDelivered, 9), outbox.Outbox{Emitted: []string{"delivered"}}, nil
	})
	if err != nil || !wrote {
		t.Fatalf("Update = %v, %v", wrote, err)
	}
	if len(seen) != 2 || seen[0] != 0 || seen[1] != 3 {
		t.Fatalf("fn saw WAL sequences %v, want [0 3]: nothing, then the conflicting write", seen)
	}
	st, ob, _, err := s.Get(ctx, "o-1")
	if err != nil || st.WalSeq() != 9 || len(ob.Emitted) != 1 {
		t.Fatalf("stored %v %+v %v, want the state fn returned", st, ob, err)
	}
	// Terminal: written with the store's TTL.
	if ttl := lastHeader(t, env, jetstream.MsgTTLHeader); ttl != time.Hour.String() {
		t.Fatalf("terminal snapshot written with TTL %q, want the store's 1h", ttl)
	}
}

// lastHeader is a header of the newest KV message of o-1.
func lastHeader(t *testing.T, env *testenv.NATSEnv, name string) string {
	t.Helper()
	m, err := env.JS.Stream(context.Background(), "KV_"+topology.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := m.GetLastMsgForSubject(context.Background(), snapshot.Key("o-1"))
	if err != nil {
		t.Fatal(err)
	}
	return raw.Header.Get(name)
}

// TestUpdateWritesNothingWhenFnSaysSoOrFails: a nil state or an error leaves the key.
func TestUpdateWritesNothingWhenFnSaysSoOrFails(t *testing.T) {
	s, kv := openStore(t, 0)
	ctx := context.Background()
	put(t, kv, state(schemas.StatusPickedUp, 3), outbox.Outbox{})
	boom := errors.New("boom")
	for _, ret := range []error{nil, boom} {
		wrote, err := s.Update(ctx, "o-1", func(st *resolver.State, ob outbox.Outbox) (*resolver.State, outbox.Outbox, error) {
			if ret != nil {
				return state(schemas.StatusDelivered, 9), ob, ret
			}
			return nil, ob, nil
		})
		if wrote || !errors.Is(err, ret) && err != ret {
			t.Fatalf("Update with fn returning %v = %v, %v", ret, wrote, err)
		}
	}
	e, err := kv.Get(ctx, "o-1")
	if err != nil || e.Revision() != 1 {
		t.Fatalf("key at %v, %v; want untouched at revision 1", e, err)
	}
}

// TestUpdateGivesUpOnAKeyThatNeverSettles: a conflict on every attempt is an error
// that says so, not a loop.
func TestUpdateGivesUpOnAKeyThatNeverSettles(t *testing.T) {
	s, kv := openStore(t, 0)
	calls := 0
	_, err := s.Update(context.Background(), "o-1", func(*resolver.State, outbox.Outbox) (*resolver.State, outbox.Outbox, error) {
		calls++
		put(t, kv, state(schemas.StatusPickedUp, uint64(calls)), outbox.Outbox{})
		return state(schemas.StatusDelivered, 99), outbox.Outbox{}, nil
	})
	if !errors.Is(err, snapshot.ErrConflict) || calls < 2 {
		t.Fatalf("Update under constant conflict = %v after %d calls, want ErrConflict after retries", err, calls)
	}
}

// TestRemoveLeavesAMarkerAndRespectsKeep: keep=true leaves the snapshot; false
// purges it behind a marker that expires; a key with nothing stored is left alone.
func TestRemoveLeavesAMarkerAndRespectsKeep(t *testing.T) {
	s, kv := openStore(t, 0)
	ctx := context.Background()
	if removed, err := s.Remove(ctx, "o-1", time.Hour, func(*resolver.State) bool { return false }); removed || err != nil {
		t.Fatalf("Remove of a missing key = %v, %v", removed, err)
	}
	put(t, kv, state(schemas.StatusDelivered, 5), outbox.Outbox{})
	if removed, err := s.Remove(ctx, "o-1", time.Hour, func(st *resolver.State) bool { return st.WalSeq() > 4 }); removed || err != nil {
		t.Fatalf("Remove kept by keep = %v, %v", removed, err)
	}
	if removed, err := s.Remove(ctx, "o-1", time.Hour, func(st *resolver.State) bool { return st.WalSeq() > 5 }); !removed || err != nil {
		t.Fatalf("Remove = %v, %v", removed, err)
	}
	st, _, rev, err := s.Get(ctx, "o-1")
	if st != nil || rev == 0 || err != nil {
		t.Fatalf("after Remove: %v at %d, %v; want no state, the marker's revision", st, rev, err)
	}
	if _, err := kv.Get(ctx, "o-1"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("KV Get after Remove: %v, want ErrKeyNotFound", err)
	}
}
