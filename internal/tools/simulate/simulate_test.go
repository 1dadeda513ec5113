package simulate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/orderflow/schemas"
)

func generate(t testing.TB, cfg Config) ([]Message, Summary) {
	t.Helper()
	msgs, sum, err := Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return msgs, sum
}

// firstDiff returns the first index where two workloads differ in anything published, or -1.
func firstDiff(a, b []Message) int {
	for i := range min(len(a), len(b)) {
		if a[i].Subject != b[i].Subject || a[i].MsgID != b[i].MsgID || !bytes.Equal(a[i].Body, b[i].Body) ||
			a[i].Duplicate != b[i].Duplicate || a[i].Invalid != b[i].Invalid {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func TestDeterministic(t *testing.T) {
	cfg := Config{Seed: 7, Orders: 500, InvalidRate: 0.01}
	a, sa := generate(t, cfg)
	b, sb := generate(t, cfg)
	if i := firstDiff(a, b); i >= 0 {
		t.Fatalf("same seed differs at message %d", i)
	}
	if sa.String() != sb.String() {
		t.Fatalf("summaries differ:\n%s\n%s", sa, sb)
	}
	cfg.Seed = 8
	c, _ := generate(t, cfg)
	if firstDiff(a, c) < 0 {
		t.Fatal("different seeds gave identical workloads")
	}
	// Bodies must differ too, not only the seed-derived order ids.
	cfg.OrderIDPrefix = "s7-"
	d, _ := generate(t, cfg)
	if firstDiff(a, d) < 0 {
		t.Fatal("different seeds with the same prefix gave identical workloads")
	}
}

func TestStreamingMatchesGenerate(t *testing.T) {
	cfg := Config{Seed: 3, Orders: 300, InvalidRate: 0.02}
	all, sum := generate(t, cfg)
	g, err := NewGenerator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var streamed []Message
	for m, ok := g.Next(); ok; m, ok = g.Next() {
		streamed = append(streamed, m)
	}
	if i := firstDiff(all, streamed); i >= 0 {
		t.Fatalf("streaming differs from Generate at message %d", i)
	}
	if got := g.Summary().String(); got != sum.String() {
		t.Fatalf("summary %q, want %q", got, sum)
	}
	if _, ok := g.Next(); ok {
		t.Fatal("Next after the end returned a message")
	}
}

var orderIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// maySay is DESIGN §2 "who may say what" (agent: anything, with a reason).
var maySay = map[schemas.Source][]schemas.Status{
	schemas.SourcePlatform:  {schemas.StatusCreated, schemas.StatusCancelled},
	schemas.SourceMerchant:  {schemas.StatusConfirmed, schemas.StatusPreparing, schemas.StatusReadyForPickup, schemas.StatusCancelled},
	schemas.SourceDriver:    {schemas.StatusPickedUp, schemas.StatusEnRoute, schemas.StatusArrived, schemas.StatusDelivered},
	schemas.SourceEstimator: {"", schemas.StatusPreparing, schemas.StatusReadyForPickup, schemas.StatusPickedUp, schemas.StatusEnRoute, schemas.StatusArrived},
	schemas.SourceAgent:     schemas.Statuses,
}

// checkContract decodes a message as the pipeline would and returns every DESIGN §2 violation.
// It holds the generator to both the pipeline's decoder and encoding/json, plus the
// rules schemas.Decode leaves to the resolver (who may say what).
func checkContract(m Message) []string {
	var bad []string
	fail := func(f string, a ...any) { bad = append(bad, fmt.Sprintf(f, a...)) }
	if _, err := schemas.Decode(m.Subject, m.Body); err != nil {
		fail("schemas.Decode: %v", err)
	}
	var e schemas.Event
	if err := json.Unmarshal(m.Body, &e); err != nil {
		return append(bad, "json: "+err.Error())
	}
	parts := strings.Split(m.Subject, ".")
	if len(parts) != 4 || parts[0] != "orders" || parts[1] != "events" {
		fail("subject %q", m.Subject)
		return bad
	}
	if schemas.Source(parts[2]) != e.Source || !e.Source.Valid() {
		fail("source %q on subject %q", e.Source, m.Subject)
	}
	if parts[3] != e.OrderID || !orderIDRE.MatchString(e.OrderID) {
		fail("order_id %q on subject %q", e.OrderID, m.Subject)
	}
	if e.SchemaVersion != schemas.SchemaVersion {
		fail("schema_version %d", e.SchemaVersion)
	}
	if n := len(e.EventID); n < 1 || n > 64 || e.EventID != m.MsgID {
		fail("event_id %q, msg id %q", e.EventID, m.MsgID)
	}
	if e.SourceSeq < 1 {
		fail("source_seq %d", e.SourceSeq)
	}
	if e.OccurredAt.IsZero() {
		fail("no occurred_at")
	}
	if e.Status == "" && e.ETA == nil {
		fail("neither status nor eta")
	}
	if e.Status != "" && !e.Status.Valid() {
		fail("status %q", e.Status)
	}
	if !slices.Contains(maySay[e.Source], e.Status) {
		fail("%s may not say %q", e.Source, e.Status)
	}
	if e.Source == schemas.SourceAgent && e.Reason == "" {
		fail("agent event without reason")
	}
	if e.Status == schemas.StatusCreated && (e.CustomerID == "" || e.RestaurantID == "") {
		fail("created without customer and restaurant")
	}
	if e.Source == schemas.SourceDriver && e.DasherID == "" {
		fail("driver event without dasher_id")
	}
	if len(m.Body) > DefaultMaxBodyBytes {
		fail("body of %d bytes", len(m.Body))
	}
	return bad
}

func TestEveryValidMessageKeepsTheContract(t *testing.T) {
	msgs, sum := generate(t, Config{Seed: 11, Orders: 2000, InvalidRate: 0.02})
	kinds := map[string]int{}
	for i, m := range msgs {
		if m.Invalid != "" {
			kinds[m.Invalid]++
			if len(checkContract(m)) == 0 {
				t.Errorf("message %d marked %s passes the contract: %s", i, m.Invalid, m.Body)
			}
			if m.Invalid == InvalidOversize && len(m.Body) <= DefaultMaxBodyBytes {
				t.Errorf("oversize message %d has %d bytes", i, len(m.Body))
			}
			continue
		}
		if bad := checkContract(m); len(bad) > 0 {
			t.Errorf("message %d %s: %v", i, m.Body, bad)
		}
		// Body is exactly encoding/json of Event, and Event is what Body decodes to.
		if !bytes.Equal(mustJSON(m.Event), m.Body) {
			t.Errorf("message %d: Event does not encode to Body", i)
		}
		if s := string(m.Body); !regexp.MustCompile(`"occurred_at":"[0-9T:.-]+Z"`).MatchString(s) {
			t.Errorf("message %d: occurred_at not RFC 3339 UTC: %s", i, s)
		}
	}
	for _, k := range InvalidKinds {
		if kinds[k] == 0 {
			t.Errorf("no invalid message of kind %s", k)
		}
	}
	if sum.Invalid != kinds[InvalidMalformedJSON]+kinds[InvalidSchema]+kinds[InvalidSourceMismatch]+kinds[InvalidOversize] {
		t.Errorf("summary counts %d invalid, messages %v", sum.Invalid, kinds)
	}
}

func TestSourceSeqAndDuplicates(t *testing.T) {
	msgs, sum := generate(t, Config{Seed: 5, Orders: 3000, DuplicateRate: 0.1})
	type key struct {
		order  string
		source schemas.Source
	}
	last := map[key]uint64{}
	seen := map[string]Message{}
	dups := 0
	for i, m := range msgs {
		if m.Duplicate {
			dups++
			orig, ok := seen[m.MsgID]
			if !ok {
				t.Fatalf("message %d: duplicate %s before its original", i, m.MsgID)
			}
			if orig.Subject != m.Subject || !bytes.Equal(orig.Body, m.Body) {
				t.Fatalf("message %d: duplicate %s differs from its original", i, m.MsgID)
			}
			continue
		}
		if _, ok := seen[m.MsgID]; ok {
			t.Fatalf("message %d: event_id %s reused by a non-duplicate", i, m.MsgID)
		}
		seen[m.MsgID] = m
		k := key{m.Event.OrderID, m.Event.Source}
		// Each producer publishes its own events in order: 1, 2, 3… with no gaps.
		if want := last[k] + 1; m.Event.SourceSeq != want {
			t.Fatalf("message %d: %s/%s source_seq %d, want %d", i, k.order, k.source, m.Event.SourceSeq, want)
		}
		last[k] = m.Event.SourceSeq
	}
	if dups != sum.Duplicates || dups == 0 {
		t.Fatalf("%d duplicates, summary says %d", dups, sum.Duplicates)
	}
}

// orderStats are the contention facts observable from the messages alone.
type orderStats struct {
	cancelled, agent, estimator bool
	readyMissing, readyLate     bool
}

func observe(msgs []Message) map[string]*orderStats {
	orders := map[string]*orderStats{}
	pickedUp := map[string]bool{}
	ready := map[string]bool{}
	for _, m := range msgs {
		if m.Invalid != "" || m.Duplicate {
			continue
		}
		e := m.Event
		o := orders[e.OrderID]
		if o == nil {
			o = &orderStats{}
			orders[e.OrderID] = o
		}
		switch {
		case e.Status == schemas.StatusCancelled:
			o.cancelled = true
		case e.Source == schemas.SourceAgent:
			o.agent = true
		case e.Source == schemas.SourceEstimator:
			o.estimator = true
		case e.Status == schemas.StatusPickedUp:
			pickedUp[e.OrderID] = true
		case e.Status == schemas.StatusReadyForPickup:
			ready[e.OrderID] = true
			o.readyLate = pickedUp[e.OrderID]
		}
	}
	for id, o := range orders {
		o.readyMissing = !ready[id] && pickedUp[id] && !o.cancelled
	}
	return orders
}

func TestRatiosMatchConfig(t *testing.T) {
	const n = 10000
	msgs, sum := generate(t, Config{Seed: 1, Orders: n})
	orders := observe(msgs)
	if len(orders) != n || sum.Orders != n {
		t.Fatalf("%d orders seen, summary %d, want %d", len(orders), sum.Orders, n)
	}
	var cancelled, agent, estimator, missing, late int
	for _, o := range orders {
		cancelled += b2i(o.cancelled)
		agent += b2i(o.agent)
		estimator += b2i(o.estimator)
		missing += b2i(o.readyMissing)
		late += b2i(o.readyLate && !o.cancelled)
	}
	near := func(name string, got, want, tol float64) {
		t.Helper()
		if math.Abs(got-want) > tol {
			t.Errorf("%s: %.4f, want %.4f ± %.4f", name, got, want, tol)
		}
	}
	near("duplicates per event", float64(sum.Duplicates)/float64(sum.Events), DefaultDuplicateRate, 0.005)
	near("cancelled orders", float64(cancelled)/n, DefaultCancelRate, 0.01)
	near("agent-corrected orders", float64(agent)/n, DefaultAgentRate, 0.006)
	near("orders with estimator events", float64(estimator)/n, DefaultEstimatorRate, 0.02)
	near("reordered orders", float64(sum.Reordered)/n, DefaultReorderRate, 0.02)
	// Cancellation hides some merchant races, so observed rates sit a little low.
	near("ready missing", float64(missing)/n, DefaultMissingReadyRate/2, 0.008)
	// Reordering also lets ready_for_pickup overtake picked_up, so the late ones come from the summary.
	near("ready late", float64(sum.ReadyLate)/n, DefaultMissingReadyRate/2, 0.008)
	if late < sum.ReadyLate*8/10 {
		t.Errorf("only %d orders show ready_for_pickup after picked_up, summary says %d", late, sum.ReadyLate)
	}
	if cancelled != sum.Cancellations || sum.ReadyMissing+sum.ReadyLate == 0 {
		t.Errorf("summary %+v disagrees with %d cancelled orders", sum, cancelled)
	}
	for _, src := range schemas.Sources {
		if sum.BySource[src] == 0 {
			t.Errorf("no %s events", src)
		}
	}
	// Entities recur across orders.
	restaurants := map[string]int{}
	for _, m := range msgs {
		if m.Event.Status == schemas.StatusCreated {
			restaurants[m.Event.RestaurantID]++
		}
	}
	if len(restaurants) > DefaultRestaurants || len(restaurants) < DefaultRestaurants/2 {
		t.Errorf("%d distinct restaurants", len(restaurants))
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// rank is a status's place in the lifecycle.
func rank(s schemas.Status) int { return slices.Index(schemas.Statuses, s) }

func TestReorderIsBoundedAndAcrossSources(t *testing.T) {
	plain := Config{Seed: 9, Orders: 400, DuplicateRate: Off, CancelRate: Off, AgentRate: Off,
		EstimatorRate: Off, MissingReadyRate: Off, ReorderRate: Off}
	for _, tc := range []struct {
		name     string
		reorder  float64
		reorders bool
	}{{"off", Off, false}, {"always", 1, true}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := plain
			cfg.ReorderRate = tc.reorder
			msgs, sum := generate(t, cfg)
			byOrder := map[string][]int{}
			for _, m := range msgs {
				byOrder[m.Event.OrderID] = append(byOrder[m.Event.OrderID], rank(m.Event.Status))
			}
			for id, ranks := range byOrder {
				// Without contention every order is the eight lifecycle statuses, once each.
				if len(ranks) != 8 {
					t.Fatalf("%s: %d events", id, len(ranks))
				}
				inOrder := slices.IsSorted(ranks)
				if inOrder == tc.reorders {
					t.Fatalf("%s: ranks %v", id, ranks)
				}
				for pos, r := range ranks {
					if d := pos - r; d >= DefaultReorderWindow || -d >= DefaultReorderWindow {
						t.Fatalf("%s: %s moved %d positions: %v", id, schemas.Statuses[r], d, ranks)
					}
				}
			}
			if want := b2i(tc.reorders) * cfg.Orders; sum.Reordered != want {
				t.Fatalf("summary: %d reordered, want %d", sum.Reordered, want)
			}
		})
	}
}

func TestInterleave(t *testing.T) {
	switches := func(cfg Config) int {
		msgs, _ := generate(t, cfg)
		n := 0
		for i := 1; i < len(msgs); i++ {
			if msgs[i].Event.OrderID != msgs[i-1].Event.OrderID {
				n++
			}
		}
		return n
	}
	if n := switches(Config{Seed: 2, Orders: 50, Interleave: 1}); n != 49 {
		t.Errorf("interleave 1: %d order switches, want 49 (orders one by one)", n)
	}
	if n := switches(Config{Seed: 2, Orders: 50}); n < 200 {
		t.Errorf("default interleave: only %d order switches", n)
	}
}

// Adding invalid input must not change any valid order's own stream, so DLQ tests can
// compare outcomes with and without it.
func TestInvalidInputLeavesValidEventsAlone(t *testing.T) {
	perOrder := func(msgs []Message) map[string][]string {
		out := map[string][]string{}
		for _, m := range msgs {
			if m.Invalid == "" {
				out[m.Event.OrderID] = append(out[m.Event.OrderID], m.MsgID+string(m.Body))
			}
		}
		return out
	}
	clean, _ := generate(t, Config{Seed: 4, Orders: 300})
	noisy, sum := generate(t, Config{Seed: 4, Orders: 300, InvalidRate: 0.1})
	if sum.Invalid == 0 {
		t.Fatal("no invalid messages")
	}
	a, b := perOrder(clean), perOrder(noisy)
	if len(a) != len(b) {
		t.Fatalf("%d orders vs %d", len(a), len(b))
	}
	for id, evs := range a {
		if !slices.Equal(evs, b[id]) {
			t.Fatalf("order %s changed when invalid input was added", id)
		}
	}
	for _, m := range noisy {
		if m.Invalid != "" {
			if _, ok := a[strings.Split(m.Subject, ".")[3]]; ok {
				t.Fatalf("invalid message on a real order: %s", m.Subject)
			}
		}
	}
}

func TestAgentCorrectionsCarryObserved(t *testing.T) {
	msgs, _ := generate(t, Config{Seed: 6, Orders: 1000, AgentRate: 0.5, CancelRate: Off})
	n := 0
	for _, m := range msgs {
		if m.Event.Source != schemas.SourceAgent || m.Duplicate {
			continue
		}
		n++
		obs := m.Event.Observed
		if obs[schemas.SourcePlatform] != 1 || obs[schemas.SourceDriver] < 2 || m.Event.ActorID == "" {
			t.Fatalf("agent event %s: observed %v, actor %q", m.MsgID, obs, m.Event.ActorID)
		}
	}
	if n < 400 {
		t.Fatalf("only %d agent events", n)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero is the defaults", Config{}, true},
		{"everything off", Config{DuplicateRate: Off, ReorderRate: Off, CancelRate: Off, AgentRate: Off, EstimatorRate: Off, MissingReadyRate: Off}, true},
		{"rate above one", Config{DuplicateRate: 1.5}, false},
		{"NaN rate", Config{CancelRate: math.NaN()}, false},
		{"cancel plus agent above one", Config{CancelRate: 0.7, AgentRate: 0.7}, false},
		{"negative orders", Config{Orders: -1}, false},
		{"bad prefix", Config{OrderIDPrefix: "a.b"}, false},
		{"prefix too long", Config{OrderIDPrefix: strings.Repeat("p", 40)}, false},
		{"negative pool", Config{Dashers: -3}, false},
		{"body limit above NATS payload", Config{MaxBodyBytes: 2 << 20}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewGenerator(tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestPaceDelay(t *testing.T) {
	for _, tc := range []struct {
		sent    int
		rate    float64
		elapsed time.Duration
		want    time.Duration
	}{
		{1000, 1000, 500 * time.Millisecond, 500 * time.Millisecond},
		{1000, 1000, 2 * time.Second, 0},
		{10, 0, 0, 0},
	} {
		if got := PaceDelay(tc.sent, tc.rate, tc.elapsed); got != tc.want {
			t.Errorf("PaceDelay(%d, %v, %v) = %v, want %v", tc.sent, tc.rate, tc.elapsed, got, tc.want)
		}
	}
}

func BenchmarkGenerate(b *testing.B) {
	g, err := NewGenerator(Config{Seed: 1, Orders: math.MaxInt32 / 100})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if _, ok := g.Next(); !ok {
			b.Fatal("workload exhausted")
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
