package snapshot

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/schemas"
)

// TestEncodeWritesTheOutboxAsJSON: the outbox is appended by hand; the bytes must be
// what json.Marshal gives, and Decode must read back what Encode wrote.
func TestEncodeWritesTheOutboxAsJSON(t *testing.T) {
	st := resolver.New("o-1")
	st.Apply(&schemas.Event{EventID: "e-1", OrderID: "o-1", Source: schemas.SourceDriver, SourceSeq: 3,
		Status: schemas.StatusPickedUp, OccurredAt: time.Date(2026, 1, 5, 18, 0, 0, 0, time.UTC)}, 7)
	state, err := st.MarshalSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	for _, ob := range []outbox.Outbox{
		{},
		{Pending: []string{"picked_up"}},
		{Emitted: []string{"picked_up"}},
		{Emitted: []string{"picked_up", "delivered"}, Pending: []string{"delivered_revoked"}},
	} {
		got, err := Encode(st, ob)
		if err != nil {
			t.Fatal(err)
		}
		want := state
		if len(ob.Emitted)+len(ob.Pending) > 0 {
			obj, _ := json.Marshal(ob)
			want = append(append(append(bytes.Clone(state[:len(state)-1]), `,"outbox":`...), obj...), '}')
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("Encode(%+v):\n got  %s\n want %s", ob, got, want)
		}
		back, gotOb, err := Decode(got)
		if err != nil || back.View().Status != schemas.StatusPickedUp || !reflect.DeepEqual(gotOb, ob) {
			t.Fatalf("Decode(Encode(%+v)) = %+v, %+v, %v", ob, back.View(), gotOb, err)
		}
	}
}

// TestHoldsComparesStatesNotOutboxes: Holds is the byte-level form of "the stored
// snapshot decodes to this state", whatever outbox rides along.
func TestHoldsComparesStatesNotOutboxes(t *testing.T) {
	at := time.Date(2026, 1, 5, 18, 0, 0, 0, time.UTC)
	st := resolver.New("o-1")
	st.Apply(&schemas.Event{EventID: "e-1", OrderID: "o-1", Source: schemas.SourceDriver, SourceSeq: 3, Status: schemas.StatusPickedUp, OccurredAt: at}, 7)
	later := resolver.New("o-1")
	later.Apply(&schemas.Event{EventID: "e-1", OrderID: "o-1", Source: schemas.SourceDriver, SourceSeq: 3, Status: schemas.StatusPickedUp, OccurredAt: at}, 7)
	later.Apply(&schemas.Event{EventID: "e-2", OrderID: "o-1", Source: schemas.SourceDriver, SourceSeq: 4, Status: schemas.StatusDelivered, OccurredAt: at.Add(time.Minute)}, 9)
	for _, ob := range []outbox.Outbox{{}, {Pending: []string{"picked_up"}}, {Emitted: []string{"picked_up"}}} {
		data, err := Encode(st, ob)
		if err != nil {
			t.Fatal(err)
		}
		if !Holds(data, st) {
			t.Errorf("Holds(Encode(st, %+v), st) = false", ob)
		}
		if Holds(data, later) {
			t.Errorf("Holds(Encode(st, %+v), later) = true", ob)
		}
		if Holds(data[:len(data)-1], st) || Holds([]byte(`{"v":1}`), st) {
			t.Errorf("Holds accepted a truncated or foreign value")
		}
		// A state that matches beside an outbox Decode cannot read is not held: the
		// key needs a repair.
		state, _ := st.MarshalSnapshot()
		bad := append(bytes.Clone(state[:len(state)-1]), `,"outbox":{"pending":"picked_up"}}`...)
		if _, _, err := Decode(bad); err == nil || Holds(bad, st) {
			t.Errorf("Holds accepted an outbox Decode rejects (decode error: %v)", err)
		}
	}
}
