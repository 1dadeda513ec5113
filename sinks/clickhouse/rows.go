package clickhouse

import (
	"context"
	"strings"
	"time"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// epoch stands for "none" in DateTime columns: 18.16 has no usable Nullable
// aggregates, so absent times are 1970-01-01 00:00:00.
var epoch = time.Unix(0, 0).UTC()

func timeOrEpoch(t *time.Time) time.Time {
	if t == nil || t.IsZero() {
		return epoch
	}
	return *t
}

// maxDetail bounds the DLQ detail stored per rejected event.
const maxDetail = 2048

// eventRows holds order_events rows column by column, in eventColumns order, so a
// failed insert is rebuilt from them without redoing any work.
type eventRows struct {
	walSeq       []uint64
	storedAt     []time.Time
	orderID      []string
	source       []string
	eventID      []string
	sourceSeq    []uint64
	status       []string
	eta          []time.Time
	occurredAt   []time.Time
	actorID      []string
	customerID   []string
	restaurantID []string
	dasherID     []string
	eventReason  []string
	decision     []string
	reason       []string
	detail       []string
	changed      []uint8
	orderStatus  []string
	predicted    []uint8
	transition   []string
	milestones   [][]string
}

func (r *eventRows) len() int { return len(r.walSeq) }

// grow preallocates n rows: appending column by column to full-size slices is what
// keeps the reader fast (growing 22 slices dominated its profile).
func (r *eventRows) grow(n int) {
	r.walSeq = make([]uint64, 0, n)
	r.storedAt = make([]time.Time, 0, n)
	r.orderID = make([]string, 0, n)
	r.source = make([]string, 0, n)
	r.eventID = make([]string, 0, n)
	r.sourceSeq = make([]uint64, 0, n)
	r.status = make([]string, 0, n)
	r.eta = make([]time.Time, 0, n)
	r.occurredAt = make([]time.Time, 0, n)
	r.actorID = make([]string, 0, n)
	r.customerID = make([]string, 0, n)
	r.restaurantID = make([]string, 0, n)
	r.dasherID = make([]string, 0, n)
	r.eventReason = make([]string, 0, n)
	r.decision = make([]string, 0, n)
	r.reason = make([]string, 0, n)
	r.detail = make([]string, 0, n)
	r.changed = make([]uint8, 0, n)
	r.orderStatus = make([]string, 0, n)
	r.predicted = make([]uint8, 0, n)
	r.transition = make([]string, 0, n)
	r.milestones = make([][]string, 0, n)
}

// columns returns the column slices in eventColumns order.
func (r *eventRows) columns() []any {
	return []any{r.walSeq, r.storedAt, r.orderID, r.source, r.eventID, r.sourceSeq, r.status, r.eta,
		r.occurredAt, r.actorID, r.customerID, r.restaurantID, r.dasherID, r.eventReason, r.decision,
		r.reason, r.detail, r.changed, r.orderStatus, r.predicted, r.transition, r.milestones}
}

// subjectTokens returns the source and order id tokens of a WAL subject
// orders.wal.<partition>.<source>.<order_id>; "" where the subject has no such token.
func subjectTokens(walSubject string) (source, orderID string) {
	rest, ok := strings.CutPrefix(walSubject, topology.WALPrefix+".")
	if !ok {
		return "", ""
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return "", ""
	}
	return parts[1], parts[2]
}

// addRejected records an event that Classify set aside (the DLQ holds it): the
// order and source come from the subject, as the producer addressed them.
func (r *eventRows) addRejected(rec wal.Record, rej *fold.Rejection) {
	src, id := subjectTokens(rec.Subject)
	detail := rej.Detail
	if len(detail) > maxDetail {
		detail = detail[:maxDetail]
	}
	r.add(rec, src, id, nil, string(resolver.Rejected), rej.Reason, detail, outcome{})
}

// outcome is what folding one event did to its order.
type outcome struct {
	changed    bool
	status     schemas.Status
	predicted  bool
	transition schemas.Status
	milestones []string
}

func (r *eventRows) addEvent(rec wal.Record, ev *schemas.Event, d resolver.Decision, o outcome) {
	r.add(rec, string(ev.Source), ev.OrderID, ev, string(d.Outcome), string(d.Reason), "", o)
}

func (r *eventRows) add(rec wal.Record, src, orderID string, ev *schemas.Event, decision, reason, detail string, o outcome) {
	r.walSeq = append(r.walSeq, rec.Seq)
	r.storedAt = append(r.storedAt, rec.Time)
	r.orderID = append(r.orderID, orderID)
	r.source = append(r.source, src)
	if ev != nil {
		r.eventID = append(r.eventID, ev.EventID)
		r.sourceSeq = append(r.sourceSeq, ev.SourceSeq)
		r.status = append(r.status, string(ev.Status))
		r.eta = append(r.eta, timeOrEpoch(ev.ETA))
		r.occurredAt = append(r.occurredAt, timeOrEpoch(&ev.OccurredAt))
		r.actorID = append(r.actorID, ev.ActorID)
		r.customerID = append(r.customerID, ev.CustomerID)
		r.restaurantID = append(r.restaurantID, ev.RestaurantID)
		r.dasherID = append(r.dasherID, ev.DasherID)
		r.eventReason = append(r.eventReason, ev.Reason)
	} else {
		r.eventID = append(r.eventID, "")
		r.sourceSeq = append(r.sourceSeq, 0)
		r.status = append(r.status, "")
		r.eta = append(r.eta, epoch)
		r.occurredAt = append(r.occurredAt, epoch)
		r.actorID = append(r.actorID, "")
		r.customerID = append(r.customerID, "")
		r.restaurantID = append(r.restaurantID, "")
		r.dasherID = append(r.dasherID, "")
		r.eventReason = append(r.eventReason, "")
	}
	r.decision = append(r.decision, decision)
	r.reason = append(r.reason, reason)
	r.detail = append(r.detail, detail)
	r.changed = append(r.changed, b2u(o.changed))
	r.orderStatus = append(r.orderStatus, string(o.status))
	r.predicted = append(r.predicted, b2u(o.predicted))
	r.transition = append(r.transition, string(o.transition))
	if o.milestones == nil {
		o.milestones = noMilestones
	}
	r.milestones = append(r.milestones, o.milestones)
}

// noMilestones is shared by every row that reached none (never appended to).
var noMilestones = []string{}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// orderRows holds rows of orders or of an index table, in orderColumns order (plus
// active for index tables).
type orderRows struct {
	orderID      []string
	version      []uint64
	createdAt    []time.Time
	updatedAt    []time.Time
	lastEventAt  []time.Time
	events       []uint32
	status       []string
	statusSource []string
	predicted    []uint8
	eta          []time.Time
	customerID   []string
	restaurantID []string
	dasherID     []string
	pickedUpAt   []time.Time
	deliveredAt  []time.Time
	cancelledAt  []time.Time
	active       []uint8
}

func (r *orderRows) len() int { return len(r.orderID) }

func (r *orderRows) grow(n int) {
	r.orderID = make([]string, 0, n)
	r.version = make([]uint64, 0, n)
	r.createdAt = make([]time.Time, 0, n)
	r.updatedAt = make([]time.Time, 0, n)
	r.lastEventAt = make([]time.Time, 0, n)
	r.events = make([]uint32, 0, n)
	r.status = make([]string, 0, n)
	r.statusSource = make([]string, 0, n)
	r.predicted = make([]uint8, 0, n)
	r.eta = make([]time.Time, 0, n)
	r.customerID = make([]string, 0, n)
	r.restaurantID = make([]string, 0, n)
	r.dasherID = make([]string, 0, n)
	r.pickedUpAt = make([]time.Time, 0, n)
	r.deliveredAt = make([]time.Time, 0, n)
	r.cancelledAt = make([]time.Time, 0, n)
	r.active = make([]uint8, 0, n)
}

func (r *orderRows) columns(withActive bool) []any {
	cols := []any{r.orderID, r.version, r.createdAt, r.updatedAt, r.lastEventAt, r.events, r.status,
		r.statusSource, r.predicted, r.eta, r.customerID, r.restaurantID, r.dasherID, r.pickedUpAt,
		r.deliveredAt, r.cancelledAt}
	if withActive {
		cols = append(cols, r.active)
	}
	return cols
}

// add appends the order's current state. kind >= 0 makes it an index row of that
// entity kind keyed by key (which differs from the state's id for a tombstone).
func (r *orderRows) add(e *entry, kind int, key string, active bool) {
	v := &e.view
	ids := [numKinds]string{v.CustomerID, v.RestaurantID, v.DasherID}
	if kind >= 0 {
		ids[kind] = key
	}
	r.orderID = append(r.orderID, e.id)
	r.version = append(r.version, e.st.WalSeq())
	r.createdAt = append(r.createdAt, e.createdAt)
	r.updatedAt = append(r.updatedAt, timeOrEpoch(&v.UpdatedAt))
	r.lastEventAt = append(r.lastEventAt, e.lastAt)
	r.events = append(r.events, e.events)
	r.status = append(r.status, string(v.Status))
	r.statusSource = append(r.statusSource, string(v.StatusSource))
	r.predicted = append(r.predicted, b2u(v.Predicted))
	r.eta = append(r.eta, timeOrEpoch(v.ETA))
	r.customerID = append(r.customerID, ids[kindCustomer])
	r.restaurantID = append(r.restaurantID, ids[kindRestaurant])
	r.dasherID = append(r.dasherID, ids[kindDasher])
	r.pickedUpAt = append(r.pickedUpAt, timeOrEpoch(&e.reachedAt[msPickedUp]))
	r.deliveredAt = append(r.deliveredAt, timeOrEpoch(&e.reachedAt[msDelivered]))
	r.cancelledAt = append(r.cancelledAt, timeOrEpoch(&e.reachedAt[msCancelled]))
	r.active = append(r.active, b2u(active))
}

// Entity kinds of the index tables.
const (
	kindCustomer = iota
	kindRestaurant
	kindDasher
	numKinds
)

// kindNames maps kinds to OrdersQuery.Entity values.
var kindNames = [numKinds]string{"customer", "restaurant", "dasher"}

func entityIDs(v *resolver.View) [numKinds]string {
	return [numKinds]string{v.CustomerID, v.RestaurantID, v.DasherID}
}

// batch is what one insert round writes: every table's rows for a range of WAL
// events. It is immutable once sealed, so the writer can rebuild a failed insert.
type batch struct {
	first, last uint64 // WAL sequence range of its events
	events      eventRows
	orders      orderRows
	index       [numKinds]orderRows
	ack         ackable // the newest delivered message; acking it acks the batch (AckAll)
	// firstAt is the WAL time of the batch's first event, for the lag gauge.
	firstAt time.Time
	// barrier, when not nil, carries no rows: the writer closes it once every batch
	// before it is confirmed.
	barrier chan struct{}
}

// ackable is the part of jetstream.Msg the writer needs.
type ackable interface {
	DoubleAck(context.Context) error
}

func (b *batch) empty() bool { return b.events.len() == 0 }

// newBatch returns a batch with room for size events.
func newBatch(size int) *batch {
	b := &batch{}
	b.events.grow(size)
	return b
}
