package simulate

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/orderflow/orderflow/schemas"
)

// Message is one publish: what to send, and what the generator meant by it.
type Message struct {
	// Subject is orders.events.<source>.<order_id>.
	Subject string
	// MsgID goes in the Nats-Msg-Id header; it equals the event_id.
	MsgID string
	// Body is the JSON of Event (encoding/json), exactly what to publish. A duplicate
	// shares the original's slice: treat it as read-only.
	Body []byte
	// Event is the decoded form of Body; zero for invalid messages.
	Event schemas.Event
	// Duplicate marks a producer retry: same subject, MsgID and Body as an earlier message.
	Duplicate bool
	// Invalid names the kind of bad input (one of InvalidKinds), "" for a valid event.
	Invalid string
}

// Summary counts what a workload contains; Events and BySource count distinct valid
// events, without duplicates or invalid messages.
type Summary struct {
	Orders           int
	Messages         int
	Events           int
	Duplicates       int
	Invalid          int
	Cancellations    int // cancelled orders
	AgentCorrections int // agent events
	EstimatorEvents  int
	Reordered        int // orders whose events arrive out of lifecycle order on purpose
	ReadyMissing     int // orders whose merchant never sent ready_for_pickup
	ReadyLate        int // orders whose ready_for_pickup came after picked_up
	BySource         map[schemas.Source]int
}

// String is the one-paragraph summary the CLI prints.
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d orders, %d messages: %d events", s.Orders, s.Messages, s.Events)
	sep := " ("
	for _, src := range schemas.Sources {
		if n := s.BySource[src]; n > 0 {
			fmt.Fprintf(&b, "%s%s %d", sep, src, n)
			sep = ", "
		}
	}
	if sep == ", " {
		b.WriteString(")")
	}
	fmt.Fprintf(&b, ", %d duplicates, %d invalid\n", s.Duplicates, s.Invalid)
	fmt.Fprintf(&b, "contention: %d cancelled, %d agent corrections, %d estimator events, %d reordered orders, ready_for_pickup %d missing / %d late",
		s.Cancellations, s.AgentCorrections, s.EstimatorEvents, s.Reordered, s.ReadyMissing, s.ReadyLate)
	return b.String()
}

// Generator streams a workload message by message, holding only the orders in
// flight, so `orderflow bench` can publish millions of events in constant memory.
type Generator struct {
	cfg     Config
	b       *builder
	sched   *rand.Rand
	live    []*orderRun
	started int
	sum     Summary
}

// NewGenerator applies defaults to cfg, validates it and returns a generator.
func NewGenerator(cfg Config) (*Generator, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("simulate config: %w", err)
	}
	return &Generator{
		cfg:   cfg,
		b:     newBuilder(cfg),
		sched: rand.New(rand.NewPCG(splitmix(uint64(cfg.Seed)), 0x5c4ed01e)),
		live:  make([]*orderRun, 0, cfg.Interleave),
		sum:   Summary{BySource: make(map[schemas.Source]int, len(schemas.Sources))},
	}, nil
}

// Next returns the next message in publish order, and false when the workload is done.
// Live traffic interleaves orders: each message comes from a random one of the
// Interleave orders in flight, and a finished order makes room for the next.
func (g *Generator) Next() (Message, bool) {
	for len(g.live) < g.cfg.Interleave && g.started < g.cfg.Orders {
		run := g.b.build(g.started)
		g.started++
		g.count(run)
		g.live = append(g.live, run)
	}
	if len(g.live) == 0 {
		return Message{}, false
	}
	k := g.sched.IntN(len(g.live))
	run := g.live[k]
	m := run.msgs[run.pos]
	run.pos++
	if run.pos == len(run.msgs) {
		last := len(g.live) - 1
		g.live[k], g.live[last] = g.live[last], nil
		g.live = g.live[:last]
	}
	g.sum.Messages++
	switch {
	case m.Invalid != "":
		g.sum.Invalid++
	case m.Duplicate:
		g.sum.Duplicates++
	default:
		g.sum.Events++
		g.sum.BySource[m.Event.Source]++
		switch m.Event.Source {
		case schemas.SourceAgent:
			g.sum.AgentCorrections++
		case schemas.SourceEstimator:
			g.sum.EstimatorEvents++
		}
	}
	return m, true
}

// count records an order's per-order facts when it enters flight.
func (g *Generator) count(run *orderRun) {
	g.sum.Orders++
	if run.cancelled {
		g.sum.Cancellations++
	}
	if run.reordered {
		g.sum.Reordered++
	}
	switch run.ready {
	case readyMissing:
		g.sum.ReadyMissing++
	case readyLate:
		g.sum.ReadyLate++
	}
}

// Summary returns the counts so far: orders started and messages returned by Next.
func (g *Generator) Summary() Summary {
	s := g.sum
	s.BySource = make(map[schemas.Source]int, len(g.sum.BySource))
	for k, v := range g.sum.BySource {
		s.BySource[k] = v
	}
	return s
}

// Generate returns the whole workload in publish order; the same Config gives
// byte-identical output. It is NewGenerator and Next until done.
func Generate(cfg Config) ([]Message, Summary, error) {
	g, err := NewGenerator(cfg)
	if err != nil {
		return nil, Summary{}, err
	}
	msgs := make([]Message, 0, g.cfg.Orders*10)
	for {
		m, ok := g.Next()
		if !ok {
			return msgs, g.Summary(), nil
		}
		msgs = append(msgs, m)
	}
}

// PaceDelay is how long a publisher that has sent `sent` messages after `elapsed`
// should sleep to hold `rate` messages per second; 0 when behind or rate <= 0.
// Computing from the totals, not per message, keeps the long-run rate exact
// despite sleep overshoot.
func PaceDelay(sent int, rate float64, elapsed time.Duration) time.Duration {
	if rate <= 0 {
		return 0
	}
	return max(time.Duration(float64(sent)/rate*float64(time.Second))-elapsed, 0)
}
