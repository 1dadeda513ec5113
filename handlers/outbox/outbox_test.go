package outbox

import (
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/orderflow/orderflow/schemas"
)

func TestLifecycle(t *testing.T) {
	var o Outbox
	steps := []struct {
		reached []schemas.Status
		want    []string
	}{
		{nil, nil},
		{[]schemas.Status{schemas.StatusPickedUp}, []string{"picked_up"}},
		{[]schemas.Status{schemas.StatusPickedUp}, nil},
		{[]schemas.Status{schemas.StatusPickedUp, schemas.StatusDelivered}, []string{"delivered"}},
		// an agent reverts the mistaken delivered
		{[]schemas.Status{schemas.StatusPickedUp}, []string{"delivered_revoked"}},
		// the driver delivers for real
		{[]schemas.Status{schemas.StatusPickedUp, schemas.StatusDelivered}, []string{"delivered_reinstated"}},
		// further flips owe nothing more
		{[]schemas.Status{schemas.StatusPickedUp}, nil},
		{[]schemas.Status{schemas.StatusPickedUp, schemas.StatusDelivered}, nil},
	}
	for i, s := range steps {
		before := len(o.Pending)
		changed := o.Update(s.reached)
		got := o.Pending[before:]
		if !slices.Equal(got, s.want) || changed != (len(s.want) > 0) {
			t.Fatalf("step %d: owed %v (changed=%v), want %v", i, got, changed, s.want)
		}
	}
	for _, k := range slices.Clone(o.Pending) {
		o.Published(k)
	}
	if !o.Empty() || len(o.Emitted) != 4 {
		t.Fatalf("after publishing: %+v", o)
	}
}

// Every kind is owed at most once, whatever sequence of milestone sets arrives, and
// publishing in any interleaving never loses or repeats one.
func TestPropertyEachKindAtMostOnce(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var o Outbox
		steps := rapid.IntRange(0, 30).Draw(t, "steps")
		for i := 0; i < steps; i++ {
			var reached []schemas.Status
			for _, m := range Milestones {
				if rapid.Bool().Draw(t, string(m)) {
					reached = append(reached, m)
				}
			}
			o.Update(reached)
			if len(o.Pending) > 0 && rapid.Bool().Draw(t, "publish") {
				o.Published(o.Pending[rapid.IntRange(0, len(o.Pending)-1).Draw(t, "which")])
			}
		}
		all := append(slices.Clone(o.Emitted), o.Pending...)
		seen := map[string]bool{}
		for _, k := range all {
			if seen[k] {
				t.Fatalf("kind %s owed twice: %+v", k, o)
			}
			seen[k] = true
		}
		for _, m := range Milestones {
			if (seen[string(m)+Revoked] && !seen[string(m)]) || (seen[string(m)+Reinstated] && !seen[string(m)+Revoked]) {
				t.Fatalf("out of order for %s: %+v", m, o)
			}
		}
	})
}
