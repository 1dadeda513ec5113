// Package outbox decides which milestone messages an order owes downstream: the
// pure bookkeeping behind exactly-once milestones. The outbox travels inside the
// order's snapshot, so recording a milestone and changing the status are one
// compare-and-set; a relay publishes what is pending and the next snapshot write
// clears it.
//
// Milestones are picked_up, delivered and cancelled. An agent can take a status back
// (revert a mistaken delivered), so each milestone m has up to three messages, each
// published at most once per order, ever:
//
//	m               the order reached m
//	m_revoked       it no longer has m (an agent override took it back)
//	m_reinstated    it reached m again after the revocation
//
// Downstream folds them in that order: reached, revoked, reinstated. Flips after a
// reinstatement are not published again; the order's status remains the truth.
package outbox

import (
	"slices"

	"github.com/orderflow/orderflow/schemas"
)

// Milestones are the statuses that owe downstream a message.
var Milestones = []schemas.Status{schemas.StatusPickedUp, schemas.StatusDelivered, schemas.StatusCancelled}

// Suffixes of the follow-up kinds.
const (
	Revoked    = "_revoked"
	Reinstated = "_reinstated"
)

// Outbox is what an order has published and still owes.
type Outbox struct {
	// Emitted are the kinds published, in order.
	Emitted []string `json:"emitted,omitempty"`
	// Pending are the kinds recorded but not yet published, in order.
	Pending []string `json:"pending,omitempty"`
}

// Update records the messages owed for the milestones now reached and reports
// whether anything was added.
func (o *Outbox) Update(reached []schemas.Status) bool {
	changed := false
	for _, m := range Milestones {
		kind := o.next(string(m), slices.Contains(reached, m))
		if kind != "" {
			o.Pending = append(o.Pending, kind)
			changed = true
		}
	}
	return changed
}

// next is the kind owed for milestone m, or "".
func (o *Outbox) next(m string, reached bool) string {
	last := ""
	for _, k := range []string{m, m + Revoked, m + Reinstated} {
		if o.has(k) {
			last = k
		}
	}
	switch {
	case last == "" && reached:
		return m
	case (last == m || last == m+Reinstated) && !reached && !o.has(m+Revoked):
		return m + Revoked
	case last == m+Revoked && reached && !o.has(m+Reinstated):
		return m + Reinstated
	}
	return ""
}

func (o *Outbox) has(kind string) bool {
	return slices.Contains(o.Emitted, kind) || slices.Contains(o.Pending, kind)
}

// Published moves kind from pending to emitted.
func (o *Outbox) Published(kind string) {
	if i := slices.Index(o.Pending, kind); i >= 0 {
		o.Pending = slices.Delete(o.Pending, i, i+1)
		o.Emitted = append(o.Emitted, kind)
	}
}

// Empty reports whether nothing is owed.
func (o *Outbox) Empty() bool { return len(o.Pending) == 0 }

// Subject is where a milestone message goes: orders.milestones.<kind>.<order_id>.
func Subject(orderID, kind string) string {
	return schemas.MilestonesPrefix + "." + kind + "." + orderID
}

// MsgID is the deterministic Nats-Msg-Id of a milestone message.
func MsgID(orderID, kind string) string { return orderID + "." + kind }
