package resolver

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/orderflow/orderflow/schemas"
)

// eventsFromBytes turns fuzz input into an event sequence, 4 bytes an event:
//
//	b0: source (b0%5); b0>>3&3 picks source_seq: next, skip one, an arbitrary 1..8
//	    (reordering and reuse), or an exact copy of an earlier event
//	b1: status: "" or one of the nine (b1%11), or an unknown one
//	b2: bit0 eta (bits 1-3 its minute), bit4..6 customer/restaurant/dasher ids
//	b3: agent observed vector: bit0 present, driver up to 7, merchant and estimator up to 3
func eventsFromBytes(data []byte) []*schemas.Event {
	var events []*schemas.Event
	var seq [numSources]uint64
	for ; len(data) >= 4 && len(events) < 64; data = data[4:] {
		b0, b1, b2, b3 := data[0], data[1], data[2], data[3]
		i := int(b0 % numSources)
		switch b0 >> 3 & 3 {
		case 0:
			seq[i]++
		case 1:
			seq[i] += 2
		case 2:
			seq[i] = uint64(b1%8) + 1
		case 3:
			if len(events) > 0 {
				events = append(events, events[int(b1)%len(events)])
				continue
			}
			seq[i]++
		}
		var st schemas.Status
		switch k := int(b1 % 11); {
		case k == 10:
			st = "lost"
		case k > 0:
			st = schemas.Statuses[k-1]
		}
		e := ev(sourceName[i], seq[i], st)
		if b2&1 != 0 {
			eta := t0.Add(time.Duration(b2>>1&7) * time.Minute)
			e.ETA = &eta
		}
		id := func(bit byte, v string) string {
			if b2&bit != 0 {
				return fmt.Sprintf("%s-%d", v, b3&1)
			}
			return ""
		}
		e.CustomerID, e.RestaurantID, e.DasherID = id(1<<4, "c"), id(1<<5, "r"), id(1<<6, "d")
		if i == srcAgent && b3&1 != 0 {
			e.Observed = map[schemas.Source]uint64{
				schemas.SourceDriver:    uint64(b3 >> 1 & 7),
				schemas.SourceMerchant:  uint64(b3 >> 4 & 3),
				schemas.SourceEstimator: uint64(b3 >> 6),
			}
		}
		events = append(events, e)
	}
	return events
}

// FuzzApply checks, for any event sequence: every decision is documented, the answer
// does not depend on arrival order (reversed), and a snapshot round trip in the
// middle changes nothing.
func FuzzApply(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 1, 2, 0, 0, 1, 3, 1, 0, 2, 5, 0x10, 0, 2, 8, 0, 0, 4, 7, 0, 0x0f, 3, 6, 3, 0})
	f.Add([]byte{2, 8, 0, 0, 1, 9, 0, 0, 24, 0, 0, 0, 4, 7, 0, 3, 18, 5, 0, 0})
	f.Add([]byte{3, 7, 5, 0, 3, 0, 9, 0, 2, 6, 0, 0, 11, 7, 1, 0, 4, 1, 0x70, 0x81})
	f.Fuzz(func(t *testing.T, data []byte) {
		events := eventsFromBytes(data)
		s, ds := fold(events)
		for k, d := range ds {
			if !slices.Contains(reasonsFor[d.Outcome], d.Reason) {
				t.Fatalf("event %d %+v: undocumented decision %+v", k, *events[k], d)
			}
		}
		reversed := slices.Clone(events)
		slices.Reverse(reversed)
		r, _ := fold(reversed)
		if a, b := answerOf(s), answerOf(r); !sameAnswer(a, b) {
			t.Fatalf("reversed arrival resolves differently:\n in order %+v\n reversed %+v", a, b)
		}
		cut := len(events) / 2
		half, _ := fold(events[:cut])
		b, err := half.MarshalSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		resumed, err := UnmarshalSnapshot(b)
		if err != nil {
			t.Fatalf("unmarshal %s: %v", b, err)
		}
		for k := cut; k < len(events); k++ {
			if d := resumed.Apply(events[k], uint64(k+1)); d != ds[k] {
				t.Fatalf("event %d after the round trip: %+v, without: %+v", k, d, ds[k])
			}
		}
		x, _ := resumed.MarshalSnapshot()
		y, _ := s.MarshalSnapshot()
		if !bytes.Equal(x, y) {
			t.Fatalf("end states differ:\n resumed %s\n direct  %s", x, y)
		}
	})
}
