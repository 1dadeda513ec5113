package verify_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// simulated publishes a simulated workload with duplicates and invalid messages
// to a provisioned WAL.
func simulated(t *testing.T) (*testenv.NATSEnv, []simulate.Message) {
	t.Helper()
	env := testenv.WAL(t, 4)
	msgs, sum, err := simulate.Generate(simulate.Config{Seed: 12, Orders: 40, InvalidRate: 0.05, Interleave: 10, CancelRate: 0.3, AgentRate: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Invalid == 0 || sum.Duplicates == 0 || sum.Cancellations == 0 || sum.AgentCorrections == 0 {
		t.Fatalf("the workload lacks what the test needs: %+v", sum)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := simulate.PublishAll(ctx, env.JS, msgs, 0); err != nil {
		t.Fatal(err)
	}
	return env, msgs
}

// TestFromWALMatchesTheOracle: folding the stored WAL gives the states the
// publish-order oracle gives, order by order.
func TestFromWALMatchesTheOracle(t *testing.T) {
	env, msgs := simulated(t)
	got, err := verify.FromWAL(context.Background(), env.JS)
	if err != nil {
		t.Fatal(err)
	}
	want := verify.FoldMessages(msgs)
	if len(verify.Views(want)) != 40 {
		t.Fatalf("the oracle resolved %d orders, want 40", len(verify.Views(want)))
	}
	if diffs := verify.Diff(want, got); len(diffs) > 0 {
		t.Fatalf("%d orders differ, first %s", len(diffs), diffs[0])
	}
	// wal_seq too: the oracle numbers messages as the WAL stores them.
	for id, st := range want {
		if got[id].WalSeq() != st.WalSeq() {
			t.Fatalf("order %s: WAL fold at %d, oracle at %d", id, got[id].WalSeq(), st.WalSeq())
		}
	}
}

// TestFoldWALVisitsEachEventOnce: a filtered fold sees exactly the order's
// valid events, in WAL order.
func TestFoldWALVisitsEachEventOnce(t *testing.T) {
	env := testenv.WAL(t, 4)
	env.Publish(t, testenv.Event("o-1", schemas.SourcePlatform, 1, schemas.StatusCreated))
	env.Publish(t, testenv.Event("o-2", schemas.SourcePlatform, 1, schemas.StatusCreated))
	env.PublishRaw(t, schemas.Subject(schemas.SourceDriver, "o-1"), "", []byte(`{}`))
	env.Publish(t, testenv.Event("o-1", schemas.SourceDriver, 1, schemas.StatusDelivered))
	var seen []uint64
	states, err := verify.FoldWAL(context.Background(), env.JS, topology.OrderWALFilter("o-1"), func(ev *schemas.Event, seq uint64) {
		if ev.OrderID != "o-1" {
			t.Errorf("visited %s", ev.OrderID)
		}
		seen = append(seen, seq)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []uint64{1, 4}) {
		t.Fatalf("visited %v, want [1 4]", seen)
	}
	if len(states) != 1 || states["o-1"].View().Status != schemas.StatusDelivered {
		t.Fatalf("states %v", verify.Views(states))
	}
}

// TestCheckFindsBadSnapshots: snapshots equal to the WAL's fold pass; a corrupted
// one, a stale one and a missing live one are each reported, and nothing else.
func TestCheckFindsBadSnapshots(t *testing.T) {
	env, _ := simulated(t)
	ctx := context.Background()
	// Simulated orders all end delivered or cancelled: add open ones, whose
	// snapshots must exist.
	for _, id := range []string{"open-1", "open-2", "open-3"} {
		env.Publish(t, testenv.Event(id, schemas.SourcePlatform, 1, schemas.StatusCreated))
		env.Publish(t, testenv.Event(id, schemas.SourceMerchant, 1, schemas.StatusConfirmed))
	}
	want, err := verify.FromWAL(ctx, env.JS)
	if err != nil {
		t.Fatal(err)
	}
	store, err := snapshot.Open(ctx, env.JS, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write := func(id string, data []byte) {
		t.Helper()
		_, rev, err := store.GetRaw(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Write(ctx, id, data, rev, false); err != nil {
			t.Fatalf("write snapshot of %s: %v", id, err)
		}
	}
	var live []string
	for id, st := range want {
		data, err := snapshot.Encode(st, outbox.Outbox{})
		if err != nil {
			t.Fatal(err)
		}
		write(id, data)
		if !st.Terminal() && st.View().Status != "" {
			live = append(live, id)
		}
	}
	rep, err := verify.Check(ctx, env.JS, want)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Orders != len(verify.Views(want)) || len(rep.Differences) != 0 {
		t.Fatalf("clean store: %d orders, differences %v", rep.Orders, rep.Differences)
	}
	if len(live) < 3 {
		t.Fatalf("only %d orders still open, want at least 3", len(live))
	}
	slices.Sort(live)
	corrupted, stale, missing := live[0], live[1], live[2]

	write(corrupted, []byte(`{"order_id":`))
	old := resolver.New(stale)
	ev := testenv.Event(stale, schemas.SourcePlatform, 1, schemas.StatusCreated)
	old.Apply(&ev, 1)
	data, err := snapshot.Encode(old, outbox.Outbox{})
	if err != nil {
		t.Fatal(err)
	}
	write(stale, data)
	kv, err := env.JS.KeyValue(ctx, topology.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, missing); err != nil {
		t.Fatal(err)
	}

	rep, err = verify.Check(ctx, env.JS, want)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range rep.Differences {
		ids = append(ids, d.OrderID)
		switch d.OrderID {
		case corrupted:
			if d.Got == nil || d.Got.Status != "(missing or undecodable)" {
				t.Errorf("corrupted snapshot reported as %s", d)
			}
		case stale:
			if d.Got == nil || d.Got.Status != schemas.StatusCreated || d.Got.CustomerID != "c-"+stale {
				t.Errorf("stale snapshot reported as %s", d)
			}
		case missing:
			if d.Got != nil {
				t.Errorf("missing snapshot reported as %s", d)
			}
		}
		if d.Want == nil || d.Want.Status != want[d.OrderID].View().Status {
			t.Errorf("%s: want side is not the WAL's fold", d)
		}
	}
	if exp := []string{corrupted, stale, missing}; !slices.Equal(ids, exp) {
		t.Fatalf("differences in %v, want %v", ids, exp)
	}
}
