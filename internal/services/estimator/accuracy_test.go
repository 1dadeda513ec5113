package estimator

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/schemas"
)

// simOrder is one simulated delivery with its ground truth.
type simOrder struct {
	id, restaurant, dasher          string
	pickup, dropoff, dasherStart    dispatch.Point
	speed                           float64
	created, confirmed, ready       time.Time
	arriveRestaurant, picked, deliv time.Time
}

// simulate draws n orders over nRestaurants restaurants, each with its own mean
// preparation time, dashers at their own speeds, on city-sized distances.
func simulate(seed uint64, n, nRestaurants int) []simOrder {
	r := rand.New(rand.NewPCG(seed, 1))
	city := dispatch.Point{Lat: 40.73, Lng: -73.99}
	type rest struct {
		p    dispatch.Point
		prep float64 // minutes
	}
	rs := make([]rest, nRestaurants)
	for i := range rs {
		rs[i] = rest{dispatch.Destination(city, r.Float64()*360, r.Float64()*6000), 5 + r.Float64()*25}
	}
	var out []simOrder
	start := time.Date(2026, 12, 1, 11, 0, 0, 0, time.UTC)
	for i := range n {
		ri := r.IntN(nRestaurants)
		o := simOrder{id: fmt.Sprintf("o%d", i), restaurant: fmt.Sprintf("r%d", ri), dasher: fmt.Sprintf("d%d", i)}
		o.pickup = rs[ri].p
		o.dropoff = dispatch.Destination(o.pickup, r.Float64()*360, 800+r.Float64()*5000)
		o.dasherStart = dispatch.Destination(o.pickup, r.Float64()*360, 300+r.Float64()*3500)
		o.speed = 4 + r.Float64()*6
		o.created = start.Add(time.Duration(i) * 20 * time.Second)
		o.confirmed = o.created.Add(time.Duration(30+r.IntN(90)) * time.Second)
		prep := rs[ri].prep * math.Exp(r.NormFloat64()*0.15)
		o.ready = o.confirmed.Add(time.Duration(prep * float64(time.Minute)))
		travel := func(a, b dispatch.Point) time.Duration {
			// Real roads are not a constant factor longer than the crow flies.
			f := RoadFactor * math.Exp(r.NormFloat64()*0.1)
			return time.Duration(dispatch.DistanceM(a, b) * f / o.speed * float64(time.Second))
		}
		o.arriveRestaurant = o.confirmed.Add(travel(o.dasherStart, o.pickup))
		o.picked = maxTime(o.ready, o.arriveRestaurant).Add(time.Duration(20+r.IntN(60)) * time.Second)
		o.deliv = o.picked.Add(travel(o.pickup, o.dropoff) + Handoff)
		out = append(out, o)
	}
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// baseline is the naive estimator: the global mean duration of each remaining
// stage, learnt from the same history.
type baseline struct{ toConfirm, toReady, toPicked, toDelivered mean }

func (b *baseline) learn(o simOrder) {
	b.toConfirm.add(o.confirmed.Sub(o.created).Seconds())
	b.toReady.add(o.ready.Sub(o.confirmed).Seconds())
	b.toPicked.add(o.picked.Sub(o.ready).Seconds())
	b.toDelivered.add(o.deliv.Sub(o.picked).Seconds())
}

func avg(m mean) time.Duration { return time.Duration(m.sum / m.n * float64(time.Second)) }

// etaAtConfirm: entering confirmed, what is left is preparing, pickup, delivery.
func (b *baseline) etaAtConfirm(o simOrder) time.Time {
	return o.confirmed.Add(avg(b.toReady) + avg(b.toPicked) + avg(b.toDelivered))
}

func (b *baseline) etaAtPickup(o simOrder) time.Time { return o.picked.Add(avg(b.toDelivered)) }

func (m *Model) feed(o simOrder, upTo time.Time) {
	evs := []schemas.Event{
		{OrderID: o.id, Source: schemas.SourcePlatform, SourceSeq: 1, OccurredAt: o.created, Status: schemas.StatusCreated, RestaurantID: o.restaurant},
		{OrderID: o.id, Source: schemas.SourcePlatform, SourceSeq: 2, OccurredAt: o.confirmed, DasherID: o.dasher},
		{OrderID: o.id, Source: schemas.SourceMerchant, SourceSeq: 1, OccurredAt: o.confirmed, Status: schemas.StatusConfirmed},
		{OrderID: o.id, Source: schemas.SourceMerchant, SourceSeq: 2, OccurredAt: o.ready, Status: schemas.StatusReadyForPickup},
		{OrderID: o.id, Source: schemas.SourceDriver, SourceSeq: 1, OccurredAt: o.picked, Status: schemas.StatusPickedUp},
		{OrderID: o.id, Source: schemas.SourceDriver, SourceSeq: 2, OccurredAt: o.deliv, Status: schemas.StatusDelivered},
	}
	m.SetPlaces(o.id, o.pickup, &o.dropoff)
	for _, ev := range evs {
		if !ev.OccurredAt.After(upTo) {
			m.Observe(ev)
		}
	}
}

func percentile(xs []float64, p float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1))]
}

// TestETABeatsTheGlobalMeanBaseline: on simulated deliveries with known ground
// truth, the eta at confirmation and at pickup is closer than the baseline's.
// Both learn from the same first half and are judged on the second.
func TestETABeatsTheGlobalMeanBaseline(t *testing.T) {
	orders := simulate(42, 4000, 40)
	train, test := orders[:2000], orders[2000:]
	m, b := NewModel(), &baseline{}
	for _, o := range train {
		m.feed(o, o.deliv)
		b.learn(o)
	}
	var estConfirm, baseConfirm, estPickup, basePickup []float64
	for _, o := range test {
		// At confirmation: the dasher is where they start, moving.
		m.feed(o, o.confirmed)
		m.Move(o.dasher, dispatch.Position{Point: o.dasherStart, At: o.confirmed, SpeedMPS: o.speed})
		p := m.Predict(o.id, o.confirmed)
		if !p.OK {
			t.Fatalf("no prediction for %s", o.id)
		}
		estConfirm = append(estConfirm, math.Abs(p.ETA.Sub(o.deliv).Minutes()))
		baseConfirm = append(baseConfirm, math.Abs(b.etaAtConfirm(o).Sub(o.deliv).Minutes()))
		// At pickup: at the restaurant, leaving.
		m.feed(o, o.picked)
		m.Move(o.dasher, dispatch.Position{Point: o.pickup, At: o.picked, SpeedMPS: o.speed})
		p = m.Predict(o.id, o.picked)
		estPickup = append(estPickup, math.Abs(p.ETA.Sub(o.deliv).Minutes()))
		basePickup = append(basePickup, math.Abs(b.etaAtPickup(o).Sub(o.deliv).Minutes()))
		// The model keeps learning online, as the service does.
		m.feed(o, o.deliv)
		b.learn(o)
	}
	report := func(name string, est, base []float64) {
		e50, e90, b50, b90 := percentile(est, .5), percentile(est, .9), percentile(base, .5), percentile(base, .9)
		t.Logf("ETA error at %-12s estimator p50 %5.2f min p90 %5.2f min | baseline p50 %5.2f min p90 %5.2f min", name, e50, e90, b50, b90)
		if e50 >= b50 || e90 >= b90 {
			t.Errorf("%s: the estimator does not beat the baseline", name)
		}
	}
	report("confirmation", estConfirm, baseConfirm)
	report("pickup", estPickup, basePickup)
}

func TestLearntPrepTimeShrinksTowardTheGlobalMean(t *testing.T) {
	m := NewModel()
	if m.Prep("new") != DefaultPrep {
		t.Fatalf("no data: %v", m.Prep("new"))
	}
	for range 10 {
		m.LearnPrep("slow", 30*time.Minute)
		m.LearnPrep("fast", 6*time.Minute)
	}
	if g := m.Prep("unseen"); g != 18*time.Minute {
		t.Fatalf("global mean %v", g)
	}
	if s := m.Prep("slow"); s <= 25*time.Minute || s >= 30*time.Minute {
		t.Fatalf("slow restaurant %v, want between 25 and 30 min", s)
	}
}

func TestPredictedStagesFollowTheDasher(t *testing.T) {
	m := NewModel()
	o := simulate(1, 1, 1)[0]
	m.feed(o, o.confirmed)
	at := o.confirmed
	step := func(p dispatch.Point) schemas.Status {
		at = at.Add(time.Minute)
		m.Move(o.dasher, dispatch.Position{Point: p, At: at, SpeedMPS: 6})
		return m.Predict(o.id, at).Stage
	}
	if s := step(o.dasherStart); s != "" {
		t.Fatalf("far from both: %q", s)
	}
	if s := step(o.pickup); s != schemas.StatusReadyForPickup {
		t.Fatalf("at the restaurant: %q", s)
	}
	mid := dispatch.Destination(o.pickup, 0, 0)
	mid.Lat, mid.Lng = (o.pickup.Lat+3*o.dropoff.Lat)/4, (o.pickup.Lng+3*o.dropoff.Lng)/4
	if s := step(mid); s != schemas.StatusEnRoute {
		t.Fatalf("on the way: %q", s)
	}
	if s := step(o.dropoff); s != schemas.StatusArrived {
		t.Fatalf("at the customer: %q", s)
	}
}

func TestDecideIsDeterministicAndContinuesAfterRestart(t *testing.T) {
	o := simulate(3, 1, 1)[0]
	run := func(m *Model) []schemas.Event {
		var out []schemas.Event
		for at := o.confirmed; at.Before(o.deliv); at = at.Add(10 * time.Second) {
			m.Move(o.dasher, dispatch.Position{Point: o.dasherStart, At: at, SpeedMPS: 6})
			if ev, ok := m.Decide(o.id, at); ok {
				out = append(out, ev)
			}
		}
		return out
	}
	m := NewModel()
	m.feed(o, o.confirmed)
	first := run(m)
	if len(first) == 0 || first[0].SourceSeq != 1 || first[0].EventID != "est-"+o.id+"-1" {
		t.Fatalf("first events %+v", first)
	}
	// A restarted estimator replays the WAL, its own events included.
	again := NewModel()
	again.feed(o, o.confirmed)
	for _, ev := range first {
		again.Observe(ev)
	}
	at := o.deliv.Add(-time.Minute)
	again.Move(o.dasher, dispatch.Position{Point: o.pickup, At: at, SpeedMPS: 0})
	ev, ok := again.Decide(o.id, at)
	if !ok || ev.SourceSeq != uint64(len(first))+1 || ev.Status != schemas.StatusReadyForPickup {
		t.Fatalf("after restart: %+v %v, want seq %d", ev, ok, len(first)+1)
	}
	// Replaying without anything new publishes nothing.
	if ev, ok := again.Decide(o.id, at); ok {
		t.Fatalf("repeated itself: %+v", ev)
	}
}
