package simulate

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/orderflow/orderflow/schemas"
)

// Lifecycle stages as indexes into a timeline, in DESIGN §2 order.
const (
	stCreated = iota
	stConfirmed
	stPreparing
	stReady
	stPickedUp
	stEnRoute
	stArrived
	stDelivered
	numStages
)

// orderGap spaces order creation: about one new order per second, like a city.
const orderGap = time.Second

// step is one event as it happens in the world, before it gets its source_seq.
type step struct {
	ev   schemas.Event // Source, Status, ETA and entity fields set; the rest is filled in emit
	at   time.Time     // when it happened; the producer's clock reads at + skew
	sent time.Time     // when it reaches the broker: publish order before any reordering
	// observe fills ev.Observed with what had reached the broker before this step (agents).
	observe bool
}

// orderRun is one order's messages in publish order, plus what the summary counts about it.
type orderRun struct {
	msgs      []Message
	pos       int
	cancelled bool
	reordered bool
	ready     readyMode
}

type readyMode uint8

const (
	readyOnTime readyMode = iota
	readyMissing
	readyLate
)

// builder turns an order number into that order's messages. Every order draws from
// its own random streams, seeded by (Seed, order number), so an order's events do not
// depend on Interleave or on the other orders; invalid input draws from a separate
// stream so adding it leaves the valid events untouched.
type builder struct {
	cfg     Config
	width   int
	src     rand.PCG
	r       *rand.Rand
	badSrc  rand.PCG
	bad     *rand.Rand
	steps   []step
	reorder []int
	keys    []float64
}

func newBuilder(cfg Config) *builder {
	b := &builder{cfg: cfg, width: len(strconv.Itoa(cfg.Orders))}
	b.r = rand.New(&b.src)
	b.bad = rand.New(&b.badSrc)
	return b
}

// between returns a uniform duration in [lo, hi).
func (b *builder) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(b.r.Int64N(int64(hi-lo)))
}

func (b *builder) chance(p float64) bool { return b.r.Float64() < prob(p) }

func (b *builder) add(src schemas.Source, status schemas.Status, at time.Time) *step {
	lat := b.between(20*time.Millisecond, 600*time.Millisecond)
	if src == schemas.SourceDriver {
		lat = b.between(50*time.Millisecond, 3*time.Second) // mobile network
	}
	b.steps = append(b.steps, step{ev: schemas.Event{Source: src, Status: status}, at: at, sent: at.Add(lat)})
	return &b.steps[len(b.steps)-1]
}

var (
	merchantCancelReasons = []string{"item unavailable", "restaurant closing early", "kitchen overloaded"}
	offlineReasons        = []string{"driver app offline; dasher confirmed drop-off by phone", "driver app offline; customer confirmed receipt"}
	revertReasons         = []string{"customer reports order not received; dasher marked delivered by mistake", "delivered marked at wrong address; dasher still at door"}
)

// build returns order n (0-based) with all its messages in publish order.
func (b *builder) build(n int) *orderRun {
	cfg := b.cfg
	seed := splitmix(uint64(cfg.Seed))
	b.src.Seed(seed, splitmix(uint64(n)<<1))
	b.badSrc.Seed(seed, splitmix(uint64(n)<<1|1))
	b.steps = b.steps[:0]
	run := &orderRun{}

	id := cfg.OrderIDPrefix + pad(n+1, b.width)
	cust := b.r.IntN(cfg.Customers)
	u := b.r.Float64()
	rest := int(float64(cfg.Restaurants) * u * u) // popular restaurants take most orders
	dasher := b.r.IntN(cfg.Dashers)
	customerID := "cus-" + pad(cust+1, 6)
	restaurantID := "res-" + pad(rest+1, 4)
	dasherID := "dsh-" + pad(dasher+1, 5)
	merchantUser := restaurantID + "-u" + strconv.Itoa(1+b.r.IntN(3))

	// The true timeline, as if nothing went wrong.
	var t [numStages]time.Time
	t[stCreated] = cfg.Start.Add(time.Duration(n)*orderGap + b.between(0, orderGap))
	t[stConfirmed] = t[stCreated].Add(b.between(15*time.Second, 2*time.Minute))
	t[stPreparing] = t[stConfirmed].Add(b.between(10*time.Second, 3*time.Minute))
	t[stReady] = t[stPreparing].Add(b.between(5*time.Minute, 20*time.Minute))
	t[stPickedUp] = t[stReady].Add(b.between(30*time.Second, 8*time.Minute))
	t[stEnRoute] = t[stPickedUp].Add(b.between(5*time.Second, time.Minute))
	t[stArrived] = t[stEnRoute].Add(b.between(4*time.Minute, 25*time.Minute))
	t[stDelivered] = t[stArrived].Add(b.between(30*time.Second, 4*time.Minute))

	// One draw picks the order's fate, so CancelRate and AgentRate are exact shares of orders.
	fate := b.r.Float64()
	cancel := fate < prob(cfg.CancelRate)
	agent := !cancel && fate < prob(cfg.CancelRate)+prob(cfg.AgentRate)
	if b.chance(cfg.MissingReadyRate) {
		run.ready = readyMissing + readyMode(b.r.IntN(2))
	}
	estimator := b.chance(cfg.EstimatorRate)

	s := b.add(schemas.SourcePlatform, schemas.StatusCreated, t[stCreated])
	s.ev.CustomerID, s.ev.RestaurantID, s.ev.ActorID = customerID, restaurantID, customerID

	for _, st := range []int{stConfirmed, stPreparing, stReady} {
		at := t[st]
		if st == stReady {
			if run.ready == readyMissing {
				continue
			}
			if run.ready == readyLate { // pressed after the dasher already left with the food
				at = t[stPickedUp].Add(b.between(5*time.Second, 3*time.Minute))
			}
		}
		s := b.add(schemas.SourceMerchant, schemas.Statuses[st], at)
		s.ev.RestaurantID, s.ev.ActorID = restaurantID, merchantUser
	}

	driver := func(status schemas.Status, at time.Time) *step {
		s := b.add(schemas.SourceDriver, status, at)
		s.ev.DasherID, s.ev.ActorID = dasherID, dasherID
		return s
	}
	agentStep := func(status schemas.Status, at time.Time, reasons []string) {
		s := b.add(schemas.SourceAgent, status, at)
		s.ev.Reason = reasons[b.r.IntN(len(reasons))]
		s.ev.ActorID = "agt-" + pad(1+b.r.IntN(50), 3)
		s.observe = true
	}
	for st := stPickedUp; st <= stEnRoute; st++ {
		driver(schemas.Statuses[st], t[st])
	}
	switch {
	case agent && b.r.IntN(5) < 3:
		// The driver app goes offline after en_route: an agent marks delivered, and
		// sometimes the phone comes back and flushes its queued events late, with their
		// original clocks and source_seq.
		fix := t[stDelivered].Add(b.between(3*time.Minute, 15*time.Minute))
		agentStep(schemas.StatusDelivered, fix, offlineReasons)
		if b.r.IntN(2) == 0 {
			online := fix.Add(b.between(time.Minute, 30*time.Minute))
			for i, st := range []int{stArrived, stDelivered} {
				driver(schemas.Statuses[st], t[st]).sent = online.Add(time.Duration(i) * 150 * time.Millisecond)
			}
		}
	case agent:
		// The dasher taps delivered too early; an agent reverts it to arrived; the dasher
		// delivers for real afterwards.
		driver(schemas.StatusArrived, t[stArrived])
		oops := t[stArrived].Add(b.between(5*time.Second, 40*time.Second))
		driver(schemas.StatusDelivered, oops)
		fix := oops.Add(b.between(2*time.Minute, 8*time.Minute))
		agentStep(schemas.StatusArrived, fix, revertReasons)
		driver(schemas.StatusDelivered, fix.Add(b.between(time.Minute, 6*time.Minute)))
	default:
		driver(schemas.StatusArrived, t[stArrived])
		driver(schemas.StatusDelivered, t[stDelivered])
	}

	if estimator {
		b.estimate(&t)
	}
	if cancel {
		b.cancel(&t, customerID, merchantUser)
		run.cancelled = true
	}

	slices.SortStableFunc(b.steps, func(x, y step) int { return x.sent.Compare(y.sent) })
	events := b.emit(id, rest, dasher)
	if b.chance(cfg.ReorderRate) {
		run.reordered = b.shuffle(events)
	}
	run.msgs = b.messages(id, events)
	return run
}

// estimate adds 1–4 estimator events: ETA-only updates, and status predictions that
// sometimes lead the authoritative source and sometimes arrive after the fact.
func (b *builder) estimate(t *[numStages]time.Time) {
	for range 1 + b.r.IntN(4) {
		var status schemas.Status
		var at time.Time
		withETA := true
		if b.r.IntN(100) < 35 {
			at = t[stCreated].Add(b.between(time.Second, t[stDelivered].Sub(t[stCreated])))
		} else {
			st := stPreparing + b.r.IntN(stArrived-stPreparing+1)
			status = schemas.Statuses[st]
			if b.r.IntN(100) < 60 { // ahead of the authoritative source
				at = t[st].Add(-b.between(5*time.Second, 2*time.Minute))
				if floor := t[stCreated].Add(time.Second); at.Before(floor) {
					at = floor
				}
			} else { // late: the authoritative status is already known
				at = t[st].Add(b.between(10*time.Second, 4*time.Minute))
			}
			withETA = b.r.IntN(100) < 80
		}
		s := b.add(schemas.SourceEstimator, status, at)
		if withETA {
			eta := t[stDelivered].Add(time.Duration(b.r.NormFloat64() * float64(3*time.Minute)))
			if floor := at.Add(time.Minute); eta.Before(floor) {
				eta = floor
			}
			eta = eta.Truncate(time.Second)
			s.ev.ETA = &eta
		}
	}
}

// cancel adds a cancellation and drops what the other producers would not have sent
// after hearing of it; each learns with its own lag, so some events race the cancel.
func (b *builder) cancel(t *[numStages]time.Time, customerID, merchantUser string) {
	var c time.Time
	src, actor, reason := schemas.SourcePlatform, customerID, "customer cancelled"
	byMerchant := func() {
		src, actor = schemas.SourceMerchant, merchantUser
		reason = merchantCancelReasons[b.r.IntN(len(merchantCancelReasons))]
	}
	race := false
	switch k := b.r.IntN(100); {
	case k < 40: // the customer changes their mind early
		c = t[stCreated].Add(b.between(20*time.Second, 4*time.Minute))
	case k < 75: // the kitchen gives up while preparing
		byMerchant()
		c = t[stPreparing].Add(b.between(time.Minute, 10*time.Minute))
		if latest := t[stPickedUp].Add(-30 * time.Second); c.After(latest) {
			c = latest
		}
	default: // a cancel racing the pickup, from either side
		race = true
		if b.r.IntN(2) == 0 {
			byMerchant()
		}
		c = t[stPickedUp].Add(b.between(-20*time.Second, 20*time.Second))
	}
	lag := map[schemas.Source]time.Duration{
		schemas.SourceMerchant:  b.between(3*time.Second, 20*time.Second),
		schemas.SourceDriver:    b.between(5*time.Second, 30*time.Second),
		schemas.SourceEstimator: b.between(10*time.Second, 90*time.Second),
	}
	if race { // the dasher already has the bag in hand: picked_up goes out regardless
		lag[schemas.SourceDriver] = max(lag[schemas.SourceDriver], t[stPickedUp].Sub(c)+time.Second)
	}
	kept := b.steps[:0]
	for _, s := range b.steps {
		if l, ok := lag[s.ev.Source]; !ok || !s.at.After(c.Add(l)) {
			kept = append(kept, s)
		}
	}
	b.steps = kept
	s := b.add(src, schemas.StatusCancelled, c)
	s.ev.ActorID, s.ev.Reason = actor, reason
}

// emit numbers the steps per source in sent order and fills in each event.
func (b *builder) emit(id string, rest, dasher int) []schemas.Event {
	var seq [5]uint64 // by index in schemas.Sources
	events := make([]schemas.Event, len(b.steps))
	for i := range b.steps {
		s := &b.steps[i]
		e := s.ev
		if s.observe {
			e.Observed = make(map[schemas.Source]uint64, 4)
			for k, n := range seq {
				if n > 0 {
					e.Observed[schemas.Sources[k]] = n
				}
			}
		}
		k := sourceIndex(e.Source)
		seq[k]++
		e.SchemaVersion = schemas.SchemaVersion
		e.OrderID = id
		e.SourceSeq = seq[k]
		e.EventID = id + "-" + string(e.Source) + "-" + strconv.FormatUint(seq[k], 10)
		e.OccurredAt = b.clock(e.Source, s.at, rest, dasher)
		events[i] = e
	}
	return events
}

// clock returns what the producer's clock read at the true time at. Producer clocks
// are not trusted (DESIGN §2), so the workload must not let them look trustworthy:
// each tablet and phone has its own stable offset, a few phones are minutes off,
// and every reading has jitter.
func (b *builder) clock(src schemas.Source, at time.Time, rest, dasher int) time.Time {
	var skew time.Duration
	switch src {
	case schemas.SourceMerchant:
		skew = time.Duration((unit(b.cfg.Seed, 'm', rest)*2 - 1) * float64(20*time.Second))
		skew += b.between(-time.Second, time.Second)
	case schemas.SourceDriver:
		u := unit(b.cfg.Seed, 'd', dasher)
		skew = time.Duration((u*2 - 1) * float64(45*time.Second))
		if u < 0.04 || u > 0.96 { // a phone with a badly wrong clock
			skew *= 40
		}
		skew += b.between(-2*time.Second, 2*time.Second)
	case schemas.SourceAgent:
		skew = b.between(-time.Second, time.Second)
	default: // platform and estimator run on servers with synchronised clocks
		skew = b.between(-50*time.Millisecond, 50*time.Millisecond)
	}
	return at.Add(skew).Truncate(time.Millisecond)
}

// shuffle moves events of different sources past each other, each fewer than
// ReorderWindow positions, keeping every source's own events in source_seq order (a
// producer sends in order; the interleaving across producers is what varies). It
// reports whether the order changed.
func (b *builder) shuffle(events []schemas.Event) bool {
	n := len(events)
	b.reorder, b.keys = b.reorder[:0], b.keys[:0]
	for i := range n {
		b.reorder = append(b.reorder, i)
		b.keys = append(b.keys, float64(i)+b.r.Float64()*float64(b.cfg.ReorderWindow))
	}
	slices.SortStableFunc(b.reorder, func(x, y int) int {
		switch kx, ky := b.keys[x], b.keys[y]; {
		case kx < ky:
			return -1
		case kx > ky:
			return 1
		}
		return 0
	})
	// Give each source its own events back in order, in the slots it ended up in.
	var next [5][]int
	for i := range n {
		k := sourceIndex(events[i].Source)
		next[k] = append(next[k], i)
	}
	changed := false
	for p, i := range b.reorder {
		k := sourceIndex(events[i].Source)
		b.reorder[p], next[k] = next[k][0], next[k][1:]
		changed = changed || b.reorder[p] != p
	}
	if !changed { // the draw left it alone: swap the first pair of different sources
		for p := 0; p+1 < n; p++ {
			if events[p].Source != events[p+1].Source {
				b.reorder[p], b.reorder[p+1] = p+1, p
				changed = true
				break
			}
		}
	}
	if changed {
		orig := slices.Clone(events)
		for p, i := range b.reorder {
			events[p] = orig[i]
		}
	}
	return changed
}

// messages encodes the events and mixes in producer retries and invalid input.
func (b *builder) messages(id string, events []schemas.Event) []Message {
	type retry struct {
		after int
		m     Message
	}
	var retries []retry
	msgs := make([]Message, 0, len(events)+len(events)/8+1)
	bad := 0
	for _, e := range events {
		m := Message{Subject: schemas.Subject(e.Source, e.OrderID), MsgID: e.EventID, Body: mustJSON(e), Event: e}
		msgs = append(msgs, m)
		if b.chance(b.cfg.DuplicateRate) {
			d := m
			d.Duplicate = true
			retries = append(retries, retry{after: b.r.IntN(4), m: d})
		}
		if b.bad.Float64() < prob(b.cfg.InvalidRate) {
			bad++
			msgs = append(msgs, b.invalid(id+"x"+strconv.Itoa(bad), e))
		}
		kept := retries[:0]
		for _, r := range retries {
			if r.after == 0 {
				msgs = append(msgs, r.m)
				continue
			}
			r.after--
			kept = append(kept, r)
		}
		retries = kept
	}
	for _, r := range retries {
		msgs = append(msgs, r.m)
	}
	return msgs
}

func mustJSON(e schemas.Event) []byte {
	body, err := json.Marshal(e)
	if err != nil { // only strings, ints and times: cannot fail
		panic(fmt.Sprintf("simulate: encode event: %v", err))
	}
	return body
}

func sourceIndex(s schemas.Source) int {
	switch s {
	case schemas.SourcePlatform:
		return 0
	case schemas.SourceMerchant:
		return 1
	case schemas.SourceDriver:
		return 2
	case schemas.SourceEstimator:
		return 3
	}
	return 4
}

// pad formats n with leading zeros to width digits.
func pad(n, width int) string {
	s := strconv.Itoa(n)
	for len(s) < width {
		s = "0" + s
	}
	return s
}

// splitmix is SplitMix64: it decorrelates nearby seeds (order 1, order 2) before they seed PCG.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// unit is a stable uniform [0,1) per (seed, kind, index): a device's property, such
// as its clock offset, that must stay the same across all the orders it serves.
func unit(seed int64, kind byte, i int) float64 {
	h := splitmix(splitmix(uint64(seed)^uint64(kind)<<56) + uint64(i))
	return float64(h>>11) / (1 << 53)
}
