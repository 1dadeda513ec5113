package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/internal/testsupport/orderstest"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/schemas"
)

var pickup = dispatch.Point{Lat: 52.52, Lng: 13.405}

// instance is one orderflow instance's dispatch: its own connection and index.
func instance(t *testing.T, env *testenv.NATSEnv, dashers int, cfg dispatch.AssignConfig) *dispatch.Dispatcher {
	t.Helper()
	nc, err := nats.Connect(env.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ix := dispatch.NewIndex(0)
	for i := range dashers {
		p := dispatch.Position{Point: dispatch.Destination(pickup, float64(i*37), float64(100+200*i)), At: time.Now()}
		ix.Update(fmt.Sprintf("d%d", i), p, 0)
	}
	d, err := dispatch.NewDispatcher(context.Background(), js, ix, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// walAssignments reads every platform event in the WAL: per order, in WAL order.
func walAssignments(t *testing.T, env *testenv.NATSEnv) map[string][]schemas.Event {
	t.Helper()
	out := map[string][]schemas.Event{}
	for _, ev := range env.WALEvents(t, schemas.SourcePlatform) {
		out[ev.OrderID] = append(out[ev.OrderID], ev)
	}
	return out
}

// TestContendedAssignment: two instances assign 30 orders over 4 dashers, each
// order twice at once (once per instance).
func TestContendedAssignment(t *testing.T) {
	env := testenv.WAL(t, 2)
	leases := env.WatchLeases(t)
	const dashers, orderCount = 4, 30
	cfg := dispatch.AssignConfig{LeaseTTL: time.Second}
	a, b := instance(t, env, dashers, cfg), instance(t, env, dashers, cfg)
	ctx := context.Background()

	type result struct {
		order string
		a     dispatch.Assignment
		err   error
	}
	round := func(orders []string) map[string][]result {
		var mu sync.Mutex
		got := map[string][]result{}
		var wg sync.WaitGroup
		for _, o := range orders {
			for _, inst := range []*dispatch.Dispatcher{a, b} {
				wg.Go(func() {
					as, err := inst.Assign(ctx, o, dispatch.AssignRequest{Pickup: pickup})
					if err != nil && !errors.Is(err, dispatch.ErrNoDasher) {
						t.Errorf("assign %s: %v", o, err)
					}
					mu.Lock()
					got[o] = append(got[o], result{o, as, err})
					mu.Unlock()
				})
			}
		}
		wg.Wait()
		return got
	}
	assigned := func(got map[string][]result) map[string]string {
		won := map[string]string{} // order -> dasher
		byDasher := map[string]string{}
		for o, rs := range got {
			for _, r := range rs {
				if r.err != nil {
					continue
				}
				if prev, ok := won[o]; ok && prev != r.a.DasherID {
					t.Errorf("order %s given to %s and %s", o, prev, r.a.DasherID)
				}
				won[o] = r.a.DasherID
				if prev, ok := byDasher[r.a.DasherID]; ok && prev != o {
					t.Errorf("dasher %s given %s and %s in one lease period", r.a.DasherID, prev, o)
				}
				byDasher[r.a.DasherID] = o
			}
		}
		return won
	}

	var orders []string
	for i := range orderCount {
		orders = append(orders, fmt.Sprintf("o%02d", i))
	}
	first := assigned(round(orders))
	// At most one order per dasher. Usually every dasher is taken, but an order two
	// instances raced for gives the loser's dasher back, which may come too late
	// for this round.
	if len(first) == 0 || len(first) > dashers {
		t.Fatalf("%d orders assigned in the first round, want 1..%d (one per dasher): %v", len(first), dashers, first)
	}

	// Nobody confirms: the leases expire and the dashers come back.
	time.Sleep(1500 * time.Millisecond)
	var rest []string
	for _, o := range orders {
		if _, ok := first[o]; !ok {
			rest = append(rest, o)
		}
	}
	second := assigned(round(rest))
	if len(second) == 0 || len(second) > dashers {
		t.Fatalf("%d orders assigned after the leases expired, want 1..%d: %v", len(second), dashers, second)
	}

	time.Sleep(200 * time.Millisecond) // let the watcher drain
	// Every assignment held a lease; a raced order's loser held one briefly too.
	if spans, won := leases.Check(t), len(first)+len(second); spans < won {
		t.Errorf("%d lease spans for %d assignments", spans, won)
	}

	// The WAL agrees: one assignment event per order given a dasher, naming that
	// dasher, and live leases point at orders whose WAL names the dasher.
	wal := walAssignments(t, env)
	for _, won := range []map[string]string{first, second} {
		for o, dasher := range won {
			evs := wal[o]
			if len(evs) != 1 || evs[0].DasherID != dasher || evs[0].Source != schemas.SourcePlatform {
				t.Errorf("order %s: WAL has %+v, want one platform event naming %s", o, evs, dasher)
			}
		}
	}
	if len(wal) != len(first)+len(second) {
		t.Errorf("WAL has assignments for %d orders, want %d", len(wal), len(first)+len(second))
	}
	for i := range dashers {
		id := fmt.Sprintf("d%d", i)
		l, err := a.Lease(ctx, id)
		if errors.Is(err, dispatch.ErrNoLease) {
			continue // given back by a raced order, not taken again in the round
		}
		if err != nil {
			t.Fatalf("lease of %s: %v", id, err)
		}
		if evs := wal[l.OrderID]; len(evs) == 0 || evs[len(evs)-1].DasherID != id {
			t.Errorf("dasher %s leased to %s but its WAL says %+v", id, l.OrderID, evs)
		}
	}
}

func TestAcceptDeclineRelease(t *testing.T) {
	env := testenv.WAL(t, 2)
	ctx := context.Background()
	d := instance(t, env, 3, dispatch.AssignConfig{LeaseTTL: time.Second})

	first, err := d.Assign(ctx, "o1", dispatch.AssignRequest{Pickup: pickup})
	if err != nil || first.DasherID != "d0" || first.State != dispatch.LeaseReserved || first.SourceSeq != 1 {
		t.Fatalf("assign: %+v %v, want d0 (nearest) reserved, seq 1", first, err)
	}
	again, err := d.Assign(ctx, "o1", dispatch.AssignRequest{Pickup: pickup})
	if err != nil || !again.Existing || again.DasherID != "d0" {
		t.Fatalf("assign again: %+v %v, want the same assignment", again, err)
	}
	if _, err := d.Accept(ctx, "o2", "d0"); !errors.Is(err, dispatch.ErrNoLease) {
		t.Fatalf("accept for another order: %v, want ErrNoLease", err)
	}
	// Declined: d0 is free and o1 goes to the next nearest.
	if err := d.Decline(ctx, "o1", "d0"); err != nil {
		t.Fatal(err)
	}
	next, err := d.Assign(ctx, "o1", dispatch.AssignRequest{Pickup: pickup})
	if err != nil || next.DasherID != "d1" || next.SourceSeq != 2 {
		t.Fatalf("after decline: %+v %v, want d1 with seq 2", next, err)
	}
	other, err := d.Assign(ctx, "o2", dispatch.AssignRequest{Pickup: pickup})
	if err != nil || other.DasherID != "d0" {
		t.Fatalf("o2: %+v %v, want d0 (free again)", other, err)
	}
	// Accepted: the lease outlives LeaseTTL.
	if acc, err := d.Accept(ctx, "o1", "d1"); err != nil || acc.State != dispatch.LeaseConfirmed {
		t.Fatalf("accept: %+v %v", acc, err)
	}
	time.Sleep(1500 * time.Millisecond)
	if l, err := d.Lease(ctx, "d1"); err != nil || l.OrderID != "o1" || l.State != dispatch.LeaseConfirmed {
		t.Fatalf("confirmed lease after the reservation TTL: %+v %v", l, err)
	}
	if _, err := d.Lease(ctx, "d0"); !errors.Is(err, dispatch.ErrNoLease) {
		t.Fatalf("unconfirmed lease of d0: %v, want expired", err)
	}
	if err := d.Release(ctx, "o1", "d1"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Lease(ctx, "d1"); !errors.Is(err, dispatch.ErrNoLease) {
		t.Fatalf("released lease: %v", err)
	}
	rec, err := d.Record(ctx, "o1")
	if err != nil || rec.DasherID != "d1" || len(rec.Declined) != 1 || rec.Pickup != pickup {
		t.Fatalf("record %+v %v", rec, err)
	}
	wal := walAssignments(t, env)
	if evs := wal["o1"]; len(evs) != 2 || evs[0].DasherID != "d0" || evs[1].DasherID != "d1" || evs[1].SourceSeq != 2 {
		t.Fatalf("WAL for o1: %+v", evs)
	}
}

// TestAssignmentWhoseEventIDIsTaken: the WAL already holds another assignment
// under the id the next one would use (its dispatch record was lost, so its
// source_seq is reused). JetStream answers "duplicate" and drops the new event;
// dispatch must not take that for success (the WAL would name another dasher than
// the lease): it gives the dasher back and fails, and the retry assigns under the
// next source_seq, which the WAL then records. A retried assign whose event is
// already in the WAL stays a success.
func TestAssignmentWhoseEventIDIsTaken(t *testing.T) {
	env := testenv.WAL(t, 2)
	ctx := context.Background()
	d := instance(t, env, 2, dispatch.AssignConfig{})
	old := dispatch.AssignmentEvent("o1", "someone-else", dispatch.Lease{OrderID: "o1", Seq: 1, ReservedAt: time.Now().UTC()})
	env.Publish(t, old)

	if a, err := d.Assign(ctx, "o1", dispatch.AssignRequest{Pickup: pickup}); !errors.Is(err, dispatch.ErrEventIDTaken) {
		t.Fatalf("assign over a taken event id: %+v %v, want ErrEventIDTaken", a, err)
	}
	if _, err := d.Lease(ctx, "d0"); !errors.Is(err, dispatch.ErrNoLease) {
		t.Fatalf("d0 after the failed assignment: %v, want given back", err)
	}
	a, err := d.Assign(ctx, "o1", dispatch.AssignRequest{Pickup: pickup})
	if err != nil || a.DasherID != "d0" || a.SourceSeq != 2 {
		t.Fatalf("retry: %+v %v, want d0 under source_seq 2", a, err)
	}
	again, err := d.Assign(ctx, "o1", dispatch.AssignRequest{Pickup: pickup})
	if err != nil || !again.Existing || again.DasherID != "d0" {
		t.Fatalf("assign again (publishes the same event, a duplicate of itself): %+v %v", again, err)
	}
	evs := walAssignments(t, env)["o1"]
	if len(evs) != 2 || evs[0].DasherID != "someone-else" || evs[1].DasherID != "d0" || evs[1].SourceSeq != 2 {
		t.Fatalf("WAL for o1: %+v, want the old event and d0's under source_seq 2", evs)
	}
}

// TestAcceptRefusesAClosedOrder: an assign that raced the order's cancel can leave
// a reservation the release never saw (it read the record before the assign wrote
// it); accepting it would hold the dasher for hours. Accept refuses the closed
// order and gives the dasher back.
func TestAcceptRefusesAClosedOrder(t *testing.T) {
	env := testenv.WAL(t, 2)
	ctx := context.Background()
	d := instance(t, env, 1, dispatch.AssignConfig{Orders: orderstest.New(t, env).Reader})
	env.Publish(t, testenv.Event("o1", schemas.SourcePlatform, 1, schemas.StatusCreated))
	a, err := d.Assign(ctx, "o1", dispatch.AssignRequest{Pickup: pickup})
	if err != nil || a.DasherID != "d0" || a.SourceSeq != 2 {
		t.Fatalf("assign: %+v %v, want d0 under source_seq 2", a, err)
	}
	env.Publish(t, testenv.Event("o1", schemas.SourcePlatform, 3, schemas.StatusCancelled))
	if _, err := d.Accept(ctx, "o1", "d0"); !errors.Is(err, dispatch.ErrOrderClosed) {
		t.Fatalf("accept for a cancelled order: %v, want ErrOrderClosed", err)
	}
	if _, err := d.Lease(ctx, "d0"); !errors.Is(err, dispatch.ErrNoLease) {
		t.Fatalf("d0 after the refused accept: %v, want given back", err)
	}
}
