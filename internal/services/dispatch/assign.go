package dispatch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/services/orders"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// Decisions callers act on.
var (
	// ErrNoDasher: no available dasher within the radius; retry later or wider.
	ErrNoDasher = errors.New("no available dasher within the radius")
	// ErrOrderNotFound: the order has no accepted event.
	ErrOrderNotFound = errors.New("order not found")
	// ErrOrderClosed: the order is delivered or cancelled.
	ErrOrderClosed = errors.New("order is delivered or cancelled")
	// ErrNoLease: the dasher holds no lease for this order (expired, declined, or another order's).
	ErrNoLease = errors.New("the dasher holds no lease for this order")
	// ErrContended: the order's record kept changing under this request; retry.
	ErrContended = errors.New("the order's assignment changed concurrently; retry")
	// ErrEventIDTaken: the WAL already holds another event under the assignment's
	// event id, so the assignment could not be recorded; the dasher was given
	// back, and a retry assigns under the next source_seq.
	ErrEventIDTaken = errors.New("the WAL already holds another event with the assignment's event id")
)

// Lease states.
const (
	LeaseReserved  = "reserved"
	LeaseConfirmed = "confirmed"
)

// Lease is the value of KV dasher_leases[dasher id].
type Lease struct {
	OrderID string `json:"order_id"`
	State   string `json:"state"`
	// Seq is the source_seq of the assignment's WAL event.
	Seq        uint64    `json:"seq"`
	ReservedAt time.Time `json:"reserved_at"`
}

// Record is the value of KV order_dispatch[order id].
type Record struct {
	// DasherID is the last dasher the order was given to; the assignment is live
	// while that dasher's lease names this order and Seq.
	DasherID string `json:"dasher_id,omitempty"`
	// Seq is the source_seq of the last assignment event.
	Seq      uint64   `json:"seq"`
	Pickup   Point    `json:"pickup"`
	Dropoff  *Point   `json:"dropoff,omitempty"`
	Declined []string `json:"declined,omitempty"`
}

// AssignRequest is the body of POST /v1/orders/{id}/assign.
type AssignRequest struct {
	// Pickup is where the dasher goes first: the restaurant.
	Pickup Point `json:"pickup"`
	// Dropoff is the customer, optional (the estimator uses it).
	Dropoff *Point `json:"dropoff,omitempty"`
	// RadiusM bounds the search; 0 = the configured default.
	RadiusM float64 `json:"radius_m,omitempty"`
}

// Assignment is an answer of Assign, Accept, Decline and Release.
type Assignment struct {
	OrderID   string  `json:"order_id"`
	DasherID  string  `json:"dasher_id"`
	State     string  `json:"state"`
	SourceSeq uint64  `json:"source_seq"`
	EventID   string  `json:"event_id,omitempty"`
	DistanceM float64 `json:"distance_m,omitempty"`
	// ExpiresAt is when the lease lapses unless confirmed (or, confirmed, released).
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// Existing is true when the order already had this live assignment.
	Existing bool `json:"existing"`
}

// OrderReader is what assignment needs from the status read path.
type OrderReader interface {
	Get(ctx context.Context, id string) (resolver.View, error)
}

// AssignConfig configures a Dispatcher.
type AssignConfig struct {
	// LeaseTTL is how long a reservation waits for the dasher to accept; default 30s.
	LeaseTTL time.Duration
	// ConfirmedTTL bounds an accepted lease that is never released; default 3h.
	ConfirmedTTL time.Duration
	// RadiusM is the default search radius; default 5 km.
	RadiusM float64
	// MaxPositionAge leaves out dashers silent for longer; default 2m (the dead-band
	// heartbeat is 15s).
	MaxPositionAge time.Duration
	// Candidates is how many nearest dashers one attempt tries; default 32.
	Candidates int
	// Orders, when set, checks the order exists and is open, and gives the platform
	// version the assignment's source_seq must exceed.
	Orders     OrderReader
	Now        func() time.Time
	Registerer prometheus.Registerer
	// Logger receives why following the milestones failed; default slog.Default().
	Logger *slog.Logger
}

func (c *AssignConfig) setDefaults() {
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 30 * time.Second
	}
	if c.ConfirmedTTL == 0 {
		c.ConfirmedTTL = 3 * time.Hour
	}
	if c.RadiusM == 0 {
		c.RadiusM = 5000
	}
	if c.MaxPositionAge == 0 {
		c.MaxPositionAge = 2 * time.Minute
	}
	if c.Candidates == 0 {
		c.Candidates = 32
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Dispatcher gives orders to dashers. Every decision is a compare-and-set in KV, so
// any number of instances may assign at once: a dasher's lease is created only if
// none exists (one order per dasher), and an order's record is updated only from
// the revision read (one dasher per order).
type Dispatcher struct {
	cfg      AssignConfig
	js       jetstream.JetStream
	leases   jetstream.KeyValue
	records  jetstream.KeyValue
	index    *Index
	outcomes *prometheus.CounterVec
	latency  prometheus.Histogram
	released prometheus.Counter
	// followRetries counts failed attempts to follow ORDER_MILESTONES (release.go).
	followRetries prometheus.Counter
}

// NewDispatcher opens the dispatch buckets (topology.Provision creates them).
func NewDispatcher(ctx context.Context, js jetstream.JetStream, index *Index, cfg AssignConfig) (*Dispatcher, error) {
	cfg.setDefaults()
	leases, err := js.KeyValue(ctx, topology.LeasesBucket)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", topology.LeasesBucket, err)
	}
	records, err := js.KeyValue(ctx, topology.DispatchBucket)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", topology.DispatchBucket, err)
	}
	d := &Dispatcher{
		cfg: cfg, js: js, leases: leases, records: records, index: index,
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderflow_dispatch_assign_total", Help: "Assign requests by outcome.",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "orderflow_dispatch_assign_duration_seconds", Help: "Time to reserve a dasher and write the assignment to the WAL.",
			Buckets: prometheus.ExponentialBuckets(1e-4, 2, 16),
		}),
		released: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderflow_dispatch_released_total", Help: "Leases given back because their order was delivered or cancelled.",
		}),
		followRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderflow_dispatch_release_follow_retries_total",
			Help: "Times following ORDER_MILESTONES to give dashers back failed (the stream gone, a JetStream error) and was tried again.",
		}),
	}
	for _, c := range []prometheus.Collector{d.outcomes, d.latency, d.released, d.followRetries} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("dispatch metrics: %w", err)
		}
	}
	return d, nil
}

// Assign gives order id the nearest available dasher to req.Pickup, or answers the
// live assignment it already has. The assignment enters the WAL as a platform event
// carrying dasher_id before Assign returns.
func (d *Dispatcher) Assign(ctx context.Context, id string, req AssignRequest) (a Assignment, err error) {
	start := time.Now()
	defer func() {
		outcome := "assigned"
		switch {
		case errors.Is(err, ErrNoDasher):
			outcome = "no_dasher"
		case err != nil:
			outcome = "error"
		case a.Existing:
			outcome = "existing"
		}
		d.outcomes.WithLabelValues(outcome).Inc()
		d.latency.Observe(time.Since(start).Seconds())
	}()
	if !req.Pickup.Valid() {
		return Assignment{}, fmt.Errorf("pickup %+v is not a position", req.Pickup)
	}
	radius := req.RadiusM
	if radius <= 0 {
		radius = d.cfg.RadiusM
	}
	platformSeq, err := d.openOrder(ctx, id)
	if err != nil {
		return Assignment{}, err
	}
	for range 8 {
		rec, recRev, err := d.record(ctx, id)
		if err != nil {
			return Assignment{}, err
		}
		if rec.DasherID != "" {
			l, _, err := d.lease(ctx, rec.DasherID)
			if err != nil && !errors.Is(err, ErrNoLease) {
				return Assignment{}, err
			}
			if err == nil && l.OrderID == id && l.Seq == rec.Seq {
				a := d.answer(id, rec.DasherID, l)
				a.Existing = true
				if l.State == LeaseReserved {
					// The first answer may have been lost after the lease was taken
					// but before the WAL stored the event: publishing again is
					// harmless (same Nats-Msg-Id) and makes the WAL agree.
					if err := d.publish(ctx, id, rec.DasherID, l); err != nil {
						return Assignment{}, err
					}
				}
				return a, nil
			}
		}
		seq := max(rec.Seq, platformSeq) + 1
		lease := Lease{OrderID: id, State: LeaseReserved, Seq: seq, ReservedAt: d.cfg.Now().UTC()}
		hit, leaseRev, err := d.reserve(ctx, req.Pickup, radius, rec.Declined, lease)
		if err != nil {
			return Assignment{}, err
		}
		rec.DasherID, rec.Seq, rec.Pickup = hit.DasherID, seq, req.Pickup
		if req.Dropoff != nil {
			rec.Dropoff = req.Dropoff
		}
		if err := d.putRecord(ctx, id, rec, recRev); err != nil {
			// Another request assigned the order meanwhile: give the dasher back
			// and answer what it did.
			_ = d.leases.Delete(ctx, hit.DasherID, jetstream.LastRevision(leaseRev))
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
			return Assignment{}, err
		}
		if err := d.publish(ctx, id, hit.DasherID, lease); err != nil {
			return Assignment{}, err
		}
		a := d.answer(id, hit.DasherID, lease)
		a.DistanceM = hit.DistanceM
		return a, nil
	}
	return Assignment{}, ErrContended
}

// openOrder checks, when the dispatcher has Orders, that order id exists and is
// neither delivered nor cancelled, and returns its platform version (0 without Orders).
func (d *Dispatcher) openOrder(ctx context.Context, id string) (platformSeq uint64, err error) {
	if d.cfg.Orders == nil {
		return 0, nil
	}
	v, err := d.cfg.Orders.Get(ctx, id)
	switch {
	case errors.Is(err, orders.ErrNotFound):
		return 0, ErrOrderNotFound
	case err != nil:
		return 0, fmt.Errorf("read order %s: %w", id, err)
	case !v.Predicted && (v.Status == schemas.StatusDelivered || v.Status == schemas.StatusCancelled):
		return 0, ErrOrderClosed
	}
	return v.Version[schemas.SourcePlatform], nil
}

// reserve takes a lease on the nearest dasher within radius that has none.
func (d *Dispatcher) reserve(ctx context.Context, pickup Point, radius float64, declined []string, l Lease) (Hit, uint64, error) {
	body, _ := json.Marshal(l)
	hits := d.index.Nearby(Query{
		Center: pickup, RadiusM: radius, Limit: d.cfg.Candidates,
		Since: d.cfg.Now().Add(-d.cfg.MaxPositionAge),
		Skip:  func(id string) bool { return slices.Contains(declined, id) },
	})
	for _, h := range hits {
		rev, err := d.leases.Create(ctx, h.DasherID, body, jetstream.KeyTTL(d.cfg.LeaseTTL))
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // busy: another order holds this dasher
		}
		if err != nil {
			return Hit{}, 0, fmt.Errorf("lease dasher %s: %w", h.DasherID, err)
		}
		return h, rev, nil
	}
	return Hit{}, 0, ErrNoDasher
}

// Accept confirms dasherID's reservation for order id: the lease no longer expires
// after LeaseTTL, only after ConfirmedTTL or a Release. An order delivered or
// cancelled meanwhile is refused (ErrOrderClosed) and the dasher given back: an
// assign racing the order's end can leave a reservation the release missed, and
// confirming it would hold the dasher for ConfirmedTTL.
func (d *Dispatcher) Accept(ctx context.Context, id, dasherID string) (Assignment, error) {
	l, rev, err := d.leaseFor(ctx, id, dasherID)
	if err != nil {
		return Assignment{}, err
	}
	if _, err := d.openOrder(ctx, id); errors.Is(err, ErrOrderClosed) {
		if err := d.Release(ctx, id, dasherID); err != nil && !errors.Is(err, ErrNoLease) {
			return Assignment{}, err
		}
		return Assignment{}, ErrOrderClosed
	} else if err != nil {
		return Assignment{}, err
	}
	if l.State == LeaseConfirmed {
		return d.answer(id, dasherID, l), nil
	}
	l.State = LeaseConfirmed
	body, _ := json.Marshal(l)
	// kv.Update cannot set a TTL; this is the same compare-and-set as a plain
	// publish to the key's subject with the expected revision.
	_, err = d.js.Publish(ctx, "$KV."+topology.LeasesBucket+"."+dasherID, body,
		jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(d.cfg.ConfirmedTTL))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Assignment{}, ErrNoLease // expired or changed meanwhile
		}
		return Assignment{}, fmt.Errorf("confirm lease of %s: %w", dasherID, err)
	}
	return d.answer(id, dasherID, l), nil
}

// Decline frees dasherID from order id, and remembers not to offer the order to
// them again; the order can then be assigned anew.
func (d *Dispatcher) Decline(ctx context.Context, id, dasherID string) error {
	return d.free(ctx, id, dasherID, true)
}

// Release frees dasherID from order id once the delivery is done or cancelled.
func (d *Dispatcher) Release(ctx context.Context, id, dasherID string) error {
	return d.free(ctx, id, dasherID, false)
}

func (d *Dispatcher) free(ctx context.Context, id, dasherID string, decline bool) error {
	_, rev, err := d.leaseFor(ctx, id, dasherID)
	if err != nil {
		return err
	}
	if err := d.leases.Delete(ctx, dasherID, jetstream.LastRevision(rev)); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return ErrNoLease
		}
		return fmt.Errorf("free dasher %s: %w", dasherID, err)
	}
	if !decline {
		return nil
	}
	for range 8 {
		rec, recRev, err := d.record(ctx, id)
		if err != nil {
			return err
		}
		if slices.Contains(rec.Declined, dasherID) {
			return nil
		}
		rec.Declined = append(rec.Declined, dasherID)
		if err := d.putRecord(ctx, id, rec, recRev); !errors.Is(err, jetstream.ErrKeyExists) {
			return err
		}
	}
	return ErrContended
}

// leaseFor reads dasherID's lease and checks it is for order id.
func (d *Dispatcher) leaseFor(ctx context.Context, id, dasherID string) (Lease, uint64, error) {
	l, rev, err := d.lease(ctx, dasherID)
	if err != nil {
		return Lease{}, 0, err
	}
	if l.OrderID != id {
		return Lease{}, 0, ErrNoLease
	}
	return l, rev, nil
}

// Lease reads dasherID's lease, ErrNoLease when there is none.
func (d *Dispatcher) Lease(ctx context.Context, dasherID string) (Lease, error) {
	l, _, err := d.lease(ctx, dasherID)
	return l, err
}

func (d *Dispatcher) lease(ctx context.Context, dasherID string) (Lease, uint64, error) {
	e, err := d.leases.Get(ctx, dasherID)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Lease{}, 0, ErrNoLease
	}
	if err != nil {
		return Lease{}, 0, fmt.Errorf("read lease of %s: %w", dasherID, err)
	}
	var l Lease
	if err := json.Unmarshal(e.Value(), &l); err != nil {
		return Lease{}, 0, fmt.Errorf("lease of %s: %w", dasherID, err)
	}
	return l, e.Revision(), nil
}

// Record reads order id's dispatch record (zero when it has none).
func (d *Dispatcher) Record(ctx context.Context, id string) (Record, error) {
	r, _, err := d.record(ctx, id)
	return r, err
}

func (d *Dispatcher) record(ctx context.Context, id string) (Record, uint64, error) {
	e, err := d.records.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Record{}, 0, nil
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("read dispatch record of %s: %w", id, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Record{}, 0, fmt.Errorf("dispatch record of %s: %w", id, err)
	}
	return r, e.Revision(), nil
}

// putRecord writes r if the record is still at rev (0: absent). A conflict is
// jetstream.ErrKeyExists.
func (d *Dispatcher) putRecord(ctx context.Context, id string, r Record, rev uint64) error {
	body, _ := json.Marshal(r)
	var err error
	if rev == 0 {
		_, err = d.records.Create(ctx, id, body)
	} else {
		_, err = d.records.Update(ctx, id, body, rev)
	}
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("write dispatch record of %s: %w", id, err)
	}
	return err
}

func (d *Dispatcher) answer(id, dasherID string, l Lease) Assignment {
	a := Assignment{OrderID: id, DasherID: dasherID, State: l.State, SourceSeq: l.Seq, EventID: AssignmentEventID(id, l.Seq)}
	if l.State == LeaseReserved {
		a.ExpiresAt = l.ReservedAt.Add(d.cfg.LeaseTTL)
	}
	return a
}

// AssignmentEventID is the deterministic event id of an order's seq-th assignment:
// retries publish the same event, which JetStream and the resolver deduplicate.
func AssignmentEventID(orderID string, seq uint64) string { return EventID("assign", orderID, seq) }

// EventID is a deterministic event id, <kind>-<order id>-<seq>, for services that
// derive their events from state (dispatch, the estimator). An order id too long
// for that is replaced by a hash of it, so the id stays within schemas.MaxIDLen.
func EventID(kind, orderID string, seq uint64) string {
	id := kind + "-" + orderID + "-" + strconv.FormatUint(seq, 10)
	if len(id) <= schemas.MaxIDLen {
		return id
	}
	h := sha256.Sum256([]byte(orderID))
	return kind + "-" + hex.EncodeToString(h[:12]) + "-" + strconv.FormatUint(seq, 10)
}

// AssignmentEvent is the platform event that puts an assignment in the WAL.
func AssignmentEvent(orderID, dasherID string, l Lease) schemas.Event {
	return schemas.Event{
		SchemaVersion: schemas.SchemaVersion, EventID: AssignmentEventID(orderID, l.Seq), OrderID: orderID,
		Source: schemas.SourcePlatform, SourceSeq: l.Seq, OccurredAt: l.ReservedAt,
		ActorID: "dispatch", DasherID: dasherID,
	}
}

func (d *Dispatcher) publish(ctx context.Context, orderID, dasherID string, l Lease) error {
	ev := AssignmentEvent(orderID, dasherID, l)
	if ps := ev.Validate(); len(ps) > 0 {
		return fmt.Errorf("assignment event: %w", ps)
	}
	body, _ := json.Marshal(ev)
	m := nats.NewMsg(schemas.Subject(schemas.SourcePlatform, orderID))
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, ev.EventID)
	ack, err := d.js.PublishMsg(ctx, m)
	if err != nil {
		return fmt.Errorf("write assignment of %s to the WAL: %w", orderID, err)
	}
	if !ack.Duplicate {
		return nil
	}
	// A duplicate is expected when this is a retry of an assignment whose first
	// answer was lost: the WAL holds this very event. Anything else under the same
	// id (a dispatch record lost and its source_seq reused, another writer) means
	// this assignment is not in the WAL: the WAL would name another dasher than the
	// lease. Give the dasher back so the next attempt takes a new source_seq.
	same, err := d.walHolds(ctx, ack, ev)
	if err != nil {
		return fmt.Errorf("check the WAL's copy of assignment %s: %w", ev.EventID, err)
	}
	if same {
		return nil
	}
	if err := d.Release(ctx, orderID, dasherID); err != nil && !errors.Is(err, ErrNoLease) {
		return fmt.Errorf("%w (%s); give %s back: %w", ErrEventIDTaken, ev.EventID, dasherID, err)
	}
	return fmt.Errorf("%w: %s", ErrEventIDTaken, ev.EventID)
}

// walHolds reports whether the message a duplicate ack points at is ev: the same
// order, source_seq and dasher.
func (d *Dispatcher) walHolds(ctx context.Context, ack *jetstream.PubAck, ev schemas.Event) (bool, error) {
	stream, err := d.js.Stream(ctx, ack.Stream)
	if err != nil {
		return false, err
	}
	m, err := stream.GetMsg(ctx, ack.Sequence)
	if err != nil {
		return false, err
	}
	var stored schemas.Event
	if err := json.Unmarshal(m.Data, &stored); err != nil {
		return false, nil // not an assignment at all
	}
	return stored.OrderID == ev.OrderID && stored.Source == ev.Source && stored.SourceSeq == ev.SourceSeq && stored.DasherID == ev.DasherID, nil
}
