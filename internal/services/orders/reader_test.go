package orders_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/services/orders"
	"github.com/orderflow/orderflow/internal/testsupport/orderstest"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/schemas"
)

func newReader(t *testing.T) (*testenv.NATSEnv, *snapshot.Store, *orders.Reader) {
	t.Helper()
	env := testenv.WAL(t, 4)
	rp := orderstest.New(t, env)
	return env, rp.Snaps, rp.Reader
}

// TestGetFoldsTheWALAfterTheSnapshot: a cold read starts from the stored snapshot
// (never re-reading the events it holds) and folds the WAL events after its
// wal_seq; a warm read folds only what came since.
func TestGetFoldsTheWALAfterTheSnapshot(t *testing.T) {
	env, snaps, r := newReader(t)
	ctx := context.Background()
	created := env.Publish(t, testenv.Event("o-1", schemas.SourcePlatform, 1, schemas.StatusCreated))
	confirmed := env.Publish(t, testenv.Event("o-1", schemas.SourceMerchant, 1, schemas.StatusConfirmed))

	// The snapshot says the order was created with customer c-snap: only the
	// snapshot can be the source of that customer.
	st := resolver.New("o-1")
	ev := testenv.Event("o-1", schemas.SourcePlatform, 1, schemas.StatusCreated)
	ev.CustomerID = "c-snap"
	st.Apply(&ev, created)
	data, err := snapshot.Encode(st, outbox.Outbox{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snaps.Write(ctx, "o-1", data, 0, false); err != nil {
		t.Fatal(err)
	}

	v, err := r.Get(ctx, "o-1")
	if err != nil {
		t.Fatal(err)
	}
	want := map[schemas.Source]uint64{schemas.SourcePlatform: 1, schemas.SourceMerchant: 1}
	if v.Status != schemas.StatusConfirmed || v.StatusSource != schemas.SourceMerchant || v.CustomerID != "c-snap" ||
		v.WalSeq != confirmed || !reflect.DeepEqual(v.Version, want) {
		t.Fatalf("got %+v, want confirmed by the merchant at %d over the snapshot's customer c-snap", v, confirmed)
	}

	picked := env.Publish(t, testenv.Event("o-1", schemas.SourceDriver, 1, schemas.StatusPickedUp))
	if v, err = r.Get(ctx, "o-1"); err != nil {
		t.Fatal(err)
	}
	if v.Status != schemas.StatusPickedUp || v.DasherID != "d-o-1" || v.WalSeq != picked || v.CustomerID != "c-snap" {
		t.Fatalf("warm read: got %+v, want picked_up by d-o-1 at %d", v, picked)
	}
}

// TestGetWithoutSnapshot folds the order's whole WAL.
func TestGetWithoutSnapshot(t *testing.T) {
	env, _, r := newReader(t)
	env.Publish(t, testenv.Event("o-2", schemas.SourcePlatform, 1, schemas.StatusCreated))
	env.Publish(t, testenv.Event("o-2", schemas.SourceDriver, 1, schemas.StatusDelivered))
	// A cancellation after delivery is ignored: delivered is terminal.
	env.Publish(t, testenv.Event("o-2", schemas.SourcePlatform, 2, schemas.StatusCancelled))
	v, err := r.Get(context.Background(), "o-2")
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != schemas.StatusDelivered || v.CustomerID != "c-o-2" || v.RestaurantID != "r-o-2" || v.Version[schemas.SourcePlatform] != 2 {
		t.Fatalf("got %+v", v)
	}
}

func TestGetNotFound(t *testing.T) {
	env, _, r := newReader(t)
	ctx := context.Background()
	if _, err := r.Get(ctx, "nobody"); !errors.Is(err, orders.ErrNotFound) {
		t.Fatalf("unknown order: got %v, want ErrNotFound", err)
	}
	if _, err := r.Timeline(ctx, "nobody"); !errors.Is(err, orders.ErrNotFound) {
		t.Fatalf("unknown order's timeline: got %v, want ErrNotFound", err)
	}
	// An order whose only event is rejected is not an order yet, but it has a timeline.
	env.PublishRaw(t, schemas.Subject(schemas.SourcePlatform, "o-bad"), "o-bad-1", []byte(`{"schema_version":1,`))
	if _, err := r.Get(ctx, "o-bad"); !errors.Is(err, orders.ErrNotFound) {
		t.Fatalf("order with only a rejected event: got %v, want ErrNotFound", err)
	}
	tl, err := r.Timeline(ctx, "o-bad")
	if err != nil {
		t.Fatal(err)
	}
	if tl.Current != nil || len(tl.Events) != 1 || tl.Events[0].Decision != "rejected" || tl.Events[0].Reason != "malformed_json" {
		t.Fatalf("got %+v", tl)
	}
}

// TestTimelineDecisions: every event of the order, in WAL order, with the decision
// the rules give it, and the view they resolve to.
func TestTimelineDecisions(t *testing.T) {
	env, _, r := newReader(t)
	id := "o-3"
	created := testenv.Event(id, schemas.SourcePlatform, 1, schemas.StatusCreated)
	env.Publish(t, created)
	env.Publish(t, testenv.Event(id, schemas.SourceMerchant, 2, schemas.StatusPreparing))
	env.Publish(t, testenv.Event(id, schemas.SourceMerchant, 1, schemas.StatusConfirmed)) // older source_seq
	again := created
	env.PublishRaw(t, schemas.Subject(again.Source, id), "retry-past-the-window", testenv.EventJSON(t, again)) // same event id
	env.PublishRaw(t, schemas.Subject(schemas.SourceDriver, id), "",
		testenv.EventJSON(t, testenv.Event(id, schemas.SourceMerchant, 3, schemas.StatusReadyForPickup))) // source differs from the subject
	env.Publish(t, testenv.Event(id, schemas.SourceDriver, 1, schemas.StatusPickedUp))
	env.Publish(t, testenv.Event(id, schemas.SourceMerchant, 3, schemas.StatusReadyForPickup)) // behind picked_up

	tl, err := r.Timeline(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range tl.Events {
		got = append(got, fmt.Sprintf("%d %s %s/%d %s: %s %s", e.WalSeq, e.EventID, e.Source, e.SourceSeq, e.Status, e.Decision, e.Reason))
	}
	want := []string{
		"1 o-3-platform-1 platform/1 created: applied advanced",
		"2 o-3-merchant-2 merchant/2 preparing: applied advanced",
		"3 o-3-merchant-1 merchant/1 confirmed: stale older_source_seq",
		"4 o-3-platform-1 platform/1 created: duplicate same_event_id",
		"5  /0 : rejected source_mismatch",
		"6 o-3-driver-1 driver/1 picked_up: applied advanced",
		"7 o-3-merchant-3 merchant/3 ready_for_pickup: ignored regression",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("timeline\n%s\nwant\n%s", join(got), join(want))
	}
	if tl.Current == nil || tl.Current.Status != schemas.StatusPickedUp || tl.Current.WalSeq != 7 {
		t.Fatalf("current %+v, want picked_up at 7", tl.Current)
	}
}

func join(lines []string) string { return "  " + strings.Join(lines, "\n  ") }
