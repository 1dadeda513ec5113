// Package estimator owns the GPS and ETA predictions orderflow publishes as the
// `estimator` source (DESIGN §8.4): a predicted stage from where the dasher is, and an
// eta from distance, speed and a preparation time learnt per restaurant.
//
// Model is the pure core: it folds WAL events and dasher positions, with the time
// passed in, and answers predictions; no I/O, no clock. Service is the shell that
// follows the WAL and the location firehose and publishes what Model decides.
//
// # How the eta is made
//
//	before pickup: eta = now + max(prep left, dasher → restaurant) + restaurant → customer + handoff
//	after pickup:  eta = now + dasher → customer + handoff
//
// A leg takes great-circle distance × RoadFactor ÷ speed, with the dasher's reported
// speed when they are moving, else CitySpeedMPS. Prep left = confirmed_at + the
// restaurant's learnt preparation time − now. The learnt time is the mean of the
// restaurant's observed confirmed → ready_for_pickup durations, shrunk toward the
// mean over all restaurants while it has few samples (PriorWeight pseudo-samples),
// so a new restaurant starts at the global figure.
//
// # Predicted stage
//
// Within NearM of the customer: arrived. Having been within NearM of the restaurant
// (or picked up) and now closer to the customer than the restaurant: en_route.
// Within NearM of the restaurant: ready_for_pickup. The resolver shows a prediction
// only while it leads the authoritative status (DESIGN §3 rule 5).
package estimator

import (
	"time"

	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/schemas"
)

// Model parameters.
const (
	RoadFactor   = 1.3 // road distance / great-circle distance in a city grid
	CitySpeedMPS = 7.0 // a scooter in traffic, when the dasher reports no motion
	Handoff      = time.Minute
	NearM        = 75.0
	PriorWeight  = 3.0
	// DefaultPrep is the preparation time before any restaurant reported one.
	DefaultPrep = 12 * time.Minute
)

// Prediction is what the model says about one order now.
type Prediction struct {
	// Stage is the predicted stage from GPS, "" when GPS says nothing.
	Stage schemas.Status
	ETA   time.Time
	// OK is false when the model knows too little (no pickup or drop-off point).
	OK bool
}

type order struct {
	restaurant  string
	dasher      string
	status      schemas.Status // highest authoritative status seen
	confirmedAt time.Time
	readyAt     time.Time
	pickup      *dispatch.Point
	dropoff     *dispatch.Point
	visited     bool // the dasher has been near the restaurant
	// Published state: what the estimator already said, from its own WAL events.
	seq       uint64
	predicted schemas.Status
	eta       time.Time
	etaAt     time.Time // when that eta was published (event time)
}

type mean struct{ n, sum float64 }

func (m *mean) add(x float64) { m.n++; m.sum += x }

// Model is the estimator's state. Not safe for concurrent use.
type Model struct {
	orders  map[string]*order
	prep    map[string]*mean // restaurant -> confirmed→ready seconds
	global  mean
	dashers map[string]dispatch.Position
	// finished holds the orders that ended (delivered or cancelled) most recently,
	// oldest first: they leave orders, so the model and each round stay the size of
	// the open orders, and a late event for one does not bring it back as a new
	// order (that would predict for it again from source_seq 1).
	finished     map[string]struct{}
	finishedFIFO []string
}

// KeepFinished is how many ended orders the model remembers to ignore late events for.
const KeepFinished = 100_000

// NewModel returns an empty model.
func NewModel() *Model {
	return &Model{orders: map[string]*order{}, prep: map[string]*mean{}, dashers: map[string]dispatch.Position{},
		finished: map[string]struct{}{}}
}

// finish moves an ended order out of the model, remembering its id.
func (m *Model) finish(id string) {
	delete(m.orders, id)
	if _, ok := m.finished[id]; ok {
		return
	}
	m.finished[id] = struct{}{}
	m.finishedFIFO = append(m.finishedFIFO, id)
	if len(m.finishedFIFO) > KeepFinished {
		delete(m.finished, m.finishedFIFO[0])
		m.finishedFIFO = m.finishedFIFO[1:]
	}
}

func (m *Model) order(id string) *order {
	o := m.orders[id]
	if o == nil {
		o = &order{}
		m.orders[id] = o
	}
	return o
}

// rank orders the lifecycle; cancelled ranks after delivered here (both end it).
func rank(s schemas.Status) int {
	for i, v := range schemas.Statuses {
		if v == s {
			return i
		}
	}
	return -1
}

// Observe folds one WAL event. Its own (estimator) events restore what was
// published, so a restarted estimator continues its source_seq and does not repeat
// itself. Authoritative statuses teach preparation times.
func (m *Model) Observe(ev schemas.Event) {
	if _, ended := m.finished[ev.OrderID]; ended {
		return
	}
	o := m.order(ev.OrderID)
	if ev.RestaurantID != "" {
		o.restaurant = ev.RestaurantID
	}
	if ev.Source == schemas.SourceEstimator {
		if ev.SourceSeq > o.seq {
			o.seq = ev.SourceSeq
		}
		if rank(ev.Status) > rank(o.predicted) {
			o.predicted = ev.Status
		}
		if rank(ev.Status) >= rank(schemas.StatusReadyForPickup) {
			o.visited = true // it said so from GPS before the restart
		}
		if ev.ETA != nil && !ev.OccurredAt.Before(o.etaAt) {
			o.eta, o.etaAt = *ev.ETA, ev.OccurredAt
		}
		return
	}
	if ev.DasherID != "" && (ev.Source == schemas.SourcePlatform || ev.Source == schemas.SourceAgent) {
		if ev.DasherID != o.dasher {
			o.visited = false
		}
		o.dasher = ev.DasherID
	}
	if ev.Status == "" {
		return
	}
	switch ev.Status {
	case schemas.StatusConfirmed:
		if o.confirmedAt.IsZero() {
			o.confirmedAt = ev.OccurredAt
		}
	case schemas.StatusReadyForPickup:
		if o.readyAt.IsZero() {
			o.readyAt = ev.OccurredAt
			if !o.confirmedAt.IsZero() && o.restaurant != "" && o.readyAt.After(o.confirmedAt) {
				m.LearnPrep(o.restaurant, o.readyAt.Sub(o.confirmedAt))
			}
		}
	}
	if rank(ev.Status) > rank(o.status) {
		o.status = ev.Status
	}
	if done(o) {
		m.finish(ev.OrderID)
	}
}

// LearnPrep records one observed preparation time of restaurant.
func (m *Model) LearnPrep(restaurant string, d time.Duration) {
	r := m.prep[restaurant]
	if r == nil {
		r = &mean{}
		m.prep[restaurant] = r
	}
	r.add(d.Seconds())
	m.global.add(d.Seconds())
}

// Prep is the preparation time expected of restaurant.
func (m *Model) Prep(restaurant string) time.Duration {
	g := DefaultPrep.Seconds()
	if m.global.n > 0 {
		g = m.global.sum / m.global.n
	}
	r := m.prep[restaurant]
	if r == nil {
		return time.Duration(g * float64(time.Second))
	}
	return time.Duration((r.sum + PriorWeight*g) / (r.n + PriorWeight) * float64(time.Second))
}

// SetPlaces sets an order's pickup and drop-off points (from its dispatch record).
func (m *Model) SetPlaces(id string, pickup dispatch.Point, dropoff *dispatch.Point) {
	o := m.order(id)
	p := pickup
	o.pickup, o.dropoff = &p, dropoff
}

// Dasher returns the dasher of an order and whether it still needs predictions.
func (m *Model) Dasher(id string) (string, bool) {
	o := m.orders[id]
	if o == nil {
		return "", false
	}
	return o.dasher, !done(o)
}

func done(o *order) bool {
	return o.status == schemas.StatusDelivered || o.status == schemas.StatusCancelled
}

// Move records a dasher's position.
func (m *Model) Move(dasher string, p dispatch.Position) {
	if old, ok := m.dashers[dasher]; ok && !p.At.After(old.At) {
		return
	}
	m.dashers[dasher] = p
}

func leg(a, b dispatch.Point, speed float64) time.Duration {
	if speed < 1 {
		speed = CitySpeedMPS
	}
	return time.Duration(dispatch.DistanceM(a, b) * RoadFactor / speed * float64(time.Second))
}

// Predict answers what the model expects of order id at now.
func (m *Model) Predict(id string, now time.Time) Prediction {
	o := m.orders[id]
	if o == nil || o.pickup == nil || o.dropoff == nil || done(o) {
		return Prediction{}
	}
	pos, located := m.dashers[o.dasher]
	if o.dasher == "" {
		located = false
	}
	var stage schemas.Status
	if located {
		toPickup, toDropoff := dispatch.DistanceM(pos.Point, *o.pickup), dispatch.DistanceM(pos.Point, *o.dropoff)
		if toPickup <= NearM {
			o.visited = true
		}
		switch {
		case toDropoff <= NearM && (o.visited || rank(o.status) >= rank(schemas.StatusPickedUp)):
			stage = schemas.StatusArrived
		case (o.visited || rank(o.status) >= rank(schemas.StatusPickedUp)) && toPickup > NearM && toDropoff < toPickup:
			stage = schemas.StatusEnRoute
		case toPickup <= NearM:
			stage = schemas.StatusReadyForPickup
		}
	}
	pickedUp := rank(o.status) >= rank(schemas.StatusPickedUp) || stage == schemas.StatusEnRoute || stage == schemas.StatusArrived
	var eta time.Time
	switch {
	case pickedUp && located:
		eta = now.Add(leg(pos.Point, *o.dropoff, pos.SpeedMPS) + Handoff)
	case pickedUp:
		eta = now.Add(leg(*o.pickup, *o.dropoff, 0) + Handoff)
	default:
		wait := time.Duration(0)
		if o.readyAt.IsZero() {
			start := o.confirmedAt
			if start.IsZero() {
				start = now
			}
			wait = max(0, start.Add(m.Prep(o.restaurant)).Sub(now))
		}
		if located {
			wait = max(wait, leg(pos.Point, *o.pickup, pos.SpeedMPS))
		}
		eta = now.Add(wait + leg(*o.pickup, *o.dropoff, 0) + Handoff)
	}
	return Prediction{Stage: stage, ETA: eta, OK: true}
}

// Publish policy: a new event when the predicted stage moves ahead, or the eta
// moved by at least ETAStep and the last one is at least MinInterval old.
const (
	ETAStep     = time.Minute
	MinInterval = 15 * time.Second
)

// Decide turns a prediction into the event to publish, if any: it carries the next
// source_seq and a deterministic event id, and Decide records it as published (a
// failed publish is retried with the same event: call Observe with it or Forget).
func (m *Model) Decide(id string, now time.Time) (schemas.Event, bool) {
	o := m.orders[id]
	p := m.Predict(id, now)
	if !p.OK {
		return schemas.Event{}, false
	}
	newStage := p.Stage != "" && rank(p.Stage) > rank(o.predicted) && rank(p.Stage) > rank(o.status)
	etaMoved := o.eta.IsZero() || absDur(p.ETA.Sub(o.eta)) >= ETAStep
	if !newStage && !(etaMoved && now.Sub(o.etaAt) >= MinInterval) {
		return schemas.Event{}, false
	}
	eta := p.ETA.UTC().Truncate(time.Second)
	ev := schemas.Event{
		SchemaVersion: schemas.SchemaVersion, OrderID: id, Source: schemas.SourceEstimator,
		SourceSeq: o.seq + 1, OccurredAt: now.UTC(), ETA: &eta, ActorID: "estimator",
	}
	ev.EventID = EventID(id, ev.SourceSeq)
	if newStage {
		ev.Status = p.Stage
	}
	m.Observe(ev)
	return ev, true
}

// EventID is the deterministic id of the seq-th estimator event of an order.
func EventID(orderID string, seq uint64) string { return dispatch.EventID("est", orderID, seq) }

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// Active lists the orders that still need predictions.
func (m *Model) Active() []string {
	var ids []string
	for id, o := range m.orders {
		if !done(o) && o.pickup != nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// Forget drops a finished order.
func (m *Model) Forget(id string) { delete(m.orders, id) }
