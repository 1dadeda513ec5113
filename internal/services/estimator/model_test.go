package estimator

import (
	"fmt"
	"testing"
	"time"

	"github.com/orderflow/orderflow/schemas"
)

// TestFinishedOrdersLeaveTheModel: an order that ends leaves the model (so it stays
// the size of the open orders), a late event does not bring it back, and the
// memory of ended orders is bounded.
func TestFinishedOrdersLeaveTheModel(t *testing.T) {
	m := NewModel()
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	ev := func(id string, src schemas.Source, seq uint64, st schemas.Status) schemas.Event {
		return schemas.Event{OrderID: id, Source: src, SourceSeq: seq, Status: st, OccurredAt: at, RestaurantID: "r1"}
	}
	m.Observe(ev("o1", schemas.SourcePlatform, 1, schemas.StatusConfirmed))
	m.Observe(ev("o1", schemas.SourceEstimator, 3, ""))
	m.Observe(ev("o1", schemas.SourceDriver, 1, schemas.StatusDelivered))
	if _, ok := m.orders["o1"]; ok {
		t.Fatal("a delivered order is still in the model")
	}
	m.Observe(ev("o1", schemas.SourceDriver, 2, schemas.StatusPickedUp)) // late
	if _, ok := m.orders["o1"]; ok {
		t.Fatal("a late event brought a delivered order back")
	}
	for i := range KeepFinished + 10 {
		m.Observe(ev(fmt.Sprintf("c%d", i), schemas.SourcePlatform, 1, schemas.StatusCancelled))
	}
	if len(m.orders) != 0 || len(m.finished) != KeepFinished || len(m.finishedFIFO) != KeepFinished {
		t.Fatalf("model holds %d orders, remembers %d (%d) ended; want 0 and %d", len(m.orders), len(m.finished), len(m.finishedFIFO), KeepFinished)
	}
	if _, ok := m.finished["o1"]; ok {
		t.Fatal("the oldest ended order is still remembered past the bound")
	}
}
