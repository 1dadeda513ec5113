package lanecore

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"sort"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/schemas"
)

// The tests drive a Core the way the lane does, against an in-memory world: a WAL,
// a KV bucket with revisions, a DLQ and a milestone stream. Every result the lane
// can see (a write acknowledged, refused for its revision, or lost; a milestone
// published; a DLQ copy stored; a crash at any point) is chosen at random, and the
// world must end where the resolver says, whatever happened on the way.

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// poisonOrder's snapshot cannot be encoded while it is en_route: the encoder the
// tests pass stands for any state the store's format cannot hold.
const poisonOrder = "o-poison"

// stickyPoison is an order of the random workloads whose snapshot cannot hold an
// estimator event: each one is set aside.
const stickyPoison = "o-sticky"

var errPoison = errors.New("cannot encode this state")

// testEncode is a stand-in for the store's format: the resolver's snapshot and the
// outbox, as JSON. It cannot encode poisonOrder once it is en_route, nor
// stickyPoison once an estimator event is in it (a condition that, unlike a
// status, later events cannot undo, so which events are set aside does not depend
// on when the lane writes).
func testEncode(st *resolver.State, ob outbox.Outbox) ([]byte, error) {
	if st.OrderID() == poisonOrder && st.View().Status == schemas.StatusEnRoute {
		return nil, errPoison
	}
	if st.OrderID() == stickyPoison && st.View().Version[schemas.SourceEstimator] > 0 {
		return nil, errPoison
	}
	s, err := st.MarshalSnapshot()
	if err != nil {
		return nil, err
	}
	return json.Marshal(stored{State: s, Outbox: ob})
}

// fataler is what both *testing.T and *rapid.T offer.
type fataler interface {
	Fatalf(format string, args ...any)
}

type stored struct {
	State  json.RawMessage `json:"state"`
	Outbox outbox.Outbox   `json:"outbox"`
}

func testDecode(t fataler, data []byte) (*resolver.State, outbox.Outbox) {
	var s stored
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatalf("decode stored value: %v", err)
		return nil, outbox.Outbox{}
	}
	st, err := resolver.UnmarshalSnapshot(s.State)
	if err != nil {
		t.Fatalf("decode stored state: %v", err)
		return nil, outbox.Outbox{}
	}
	return st, s.Outbox
}

func testConfig() Config {
	return Config{MaxDirty: 4, CacheSize: 3, CoalesceWindow: 40 * time.Millisecond, BacklogAge: time.Second}
}

// walRecord makes a stored record of one event body; rejected bodies are kept as
// they are (the DLQ must take them).
func walRecord(seq uint64, src schemas.Source, orderID string, body string) fold.Record {
	return fold.Record{
		Seq:     seq,
		Subject: fmt.Sprintf("%s.0.%s.%s", schemas.WALPrefix, src, orderID),
		Data:    []byte(body),
		Time:    t0.Add(time.Duration(seq) * time.Millisecond),
	}
}

// genWAL draws a contending workload over a few orders: lifecycle steps from each
// source, retries, stale resends, agent overrides backwards and malformed records.
func genWAL(t *rapid.T) []fold.Record {
	// More orders than the test cache holds, so eviction runs.
	orders := []string{"o-1", "o-2", "o-3", "o-4", stickyPoison}
	type step struct {
		src    schemas.Source
		status schemas.Status
	}
	steps := []step{
		{schemas.SourcePlatform, schemas.StatusCreated},
		{schemas.SourceMerchant, schemas.StatusConfirmed},
		{schemas.SourceMerchant, schemas.StatusReadyForPickup},
		{schemas.SourceDriver, schemas.StatusPickedUp},
		{schemas.SourceDriver, schemas.StatusEnRoute},
		{schemas.SourceDriver, schemas.StatusArrived},
		{schemas.SourceDriver, schemas.StatusDelivered},
		{schemas.SourcePlatform, schemas.StatusCancelled},
		{schemas.SourceAgent, schemas.StatusEnRoute},
		{schemas.SourceAgent, schemas.StatusPickedUp},
		{schemas.SourceEstimator, schemas.StatusArrived},
	}
	seqs := map[string]uint64{}
	var sent []string // bodies already sent, for exact retries
	var recs []fold.Record
	n := rapid.IntRange(1, 40).Draw(t, "events")
	for i := 0; i < n; i++ {
		seq := uint64(len(recs) + 1)
		id := rapid.SampledFrom(orders).Draw(t, "order")
		switch kind := rapid.IntRange(0, 9).Draw(t, "kind"); {
		case kind == 0 && len(sent) > 0: // an exact retry of an earlier event
			prev := rapid.SampledFrom(sent).Draw(t, "retry")
			var ev struct {
				OrderID string         `json:"order_id"`
				Source  schemas.Source `json:"source"`
			}
			_ = json.Unmarshal([]byte(prev), &ev)
			recs = append(recs, walRecord(seq, ev.Source, ev.OrderID, prev))
			continue
		case kind == 1: // not JSON: the DLQ's
			recs = append(recs, walRecord(seq, schemas.SourceDriver, id, "{not json"))
			continue
		}
		s := rapid.SampledFrom(steps).Draw(t, "step")
		key := id + "/" + string(s.src)
		seqs[key]++
		srcSeq := seqs[key]
		if rapid.IntRange(0, 9).Draw(t, "stale") == 0 && srcSeq > 1 {
			srcSeq-- // an older clock value: stale
		}
		body := map[string]any{
			"schema_version": 1,
			"event_id":       fmt.Sprintf("%s-%s-%d-%d", id, s.src, srcSeq, seq),
			"order_id":       id,
			"source":         s.src,
			"source_seq":     srcSeq,
			"occurred_at":    t0.Add(time.Duration(seq) * time.Second).Format(time.RFC3339),
			"status":         s.status,
		}
		switch s.src {
		case schemas.SourcePlatform:
			if s.status == schemas.StatusCreated {
				body["customer_id"], body["restaurant_id"] = "c-1", "r-1"
			}
		case schemas.SourceAgent:
			body["reason"] = "customer called"
		case schemas.SourceDriver:
			body["dasher_id"] = "d-1"
		}
		b, _ := json.Marshal(body)
		sent = append(sent, string(b))
		recs = append(recs, walRecord(seq, s.src, id, string(b)))
	}
	return recs
}

// oracle is what the lane must reach: every accepted event folded in WAL order.
type oracle struct {
	states   map[string]*resolver.State
	outboxes map[string]outbox.Outbox
	asides   map[uint64]bool
}

func resolve(t fataler, recs []fold.Record) oracle {
	o := oracle{states: map[string]*resolver.State{}, outboxes: map[string]outbox.Outbox{}, asides: map[uint64]bool{}}
	for _, r := range recs {
		ev, rej := fold.Classify(r)
		if rej != nil {
			o.asides[r.Seq] = true
			continue
		}
		st, ok := o.states[ev.OrderID]
		if !ok {
			st = resolver.New(ev.OrderID)
			o.states[ev.OrderID] = st
		}
		before, _ := st.MarshalSnapshot()
		d, ok := fold.Apply(st, ev, r.Seq)
		if !ok {
			t.Fatalf("resolver panicked at %d", r.Seq)
		}
		ob := o.outboxes[ev.OrderID]
		if d.Changed {
			ob.Update(st.Milestones())
		}
		if _, err := testEncode(st, ob); err != nil {
			// Set aside: the order goes on as if the event never came.
			prev, err := resolver.UnmarshalSnapshot(before)
			if err != nil {
				t.Fatalf("restore %s: %v", ev.OrderID, err)
			}
			o.states[ev.OrderID] = prev
			o.asides[r.Seq] = true
			continue
		}
		o.outboxes[ev.OrderID] = ob
	}
	return o
}

type kvEntry struct {
	data []byte
	rev  uint64
}

// world is everything outside the core: what a crash leaves behind.
type world struct {
	t     *rapid.T
	wal   []fold.Record
	kv    map[string]kvEntry
	rev   uint64
	dlq   map[uint64]bool
	miles map[string]bool // order/kind in the milestone stream
	ckpt  uint64
	now   time.Time

	// The lane's process: lost in a crash.
	core     *Core
	next     int // index of the next WAL record to deliver
	inflight []Write
	relaying [][2]string
	asides   []uint64
	rebuilds []Rebuild
}

func newWorld(t *rapid.T, recs []fold.Record) *world {
	w := &world{t: t, wal: recs, kv: map[string]kvEntry{}, dlq: map[uint64]bool{}, miles: map[string]bool{}, now: t0}
	w.start()
	return w
}

// start is a process starting from the checkpoint.
func (w *world) start() {
	w.core = New(testConfig(), testEncode)
	w.core.Reset(w.ckpt)
	w.next = sort.Search(len(w.wal), func(i int) bool { return w.wal[i].Seq > w.ckpt })
	w.inflight, w.relaying, w.asides, w.rebuilds = nil, nil, nil, nil
}

func (w *world) deliver(n int) {
	for ; n > 0 && w.next < len(w.wal) && !w.core.Full(); n-- {
		r := w.wal[w.next]
		w.next++
		w.core.Delivered(w.now, r.Time)
		ev, rej := fold.Classify(r)
		f := w.core.Fold(Input{Seq: r.Seq, Time: r.Time, Event: ev, Rejected: rej}, w.now)
		if f.SetAside != nil {
			w.asides = append(w.asides, r.Seq)
		}
	}
}

func (w *world) takeWrites() {
	w.inflight = append(w.inflight, w.core.Writes(w.now)...)
	w.rebuilds = append(w.rebuilds, w.core.Rebuilds()...)
}

// settle gives one write its result: stored if the key is still at the revision
// it expects, refused otherwise; or lost on the way (an error).
func (w *world) settle(i int, lost bool) {
	wr := w.inflight[i]
	w.inflight = slices.Delete(w.inflight, i, i+1)
	if lost {
		w.core.WriteFailed(wr, false)
		return
	}
	if w.kv[wr.OrderID].rev != wr.Rev {
		w.core.WriteFailed(wr, true)
		return
	}
	w.rev++
	w.kv[wr.OrderID] = kvEntry{wr.Data, w.rev}
	res := w.core.WriteOK(wr, w.rev, w.now)
	for _, kind := range res.Relay {
		// Never handed out again while the relay still has it. (A crash, or an
		// order evicted and reloaded before its next write cleared the outbox,
		// hands it out again later: the milestone stream keeps one copy.)
		if slices.Contains(w.relaying, [2]string{wr.OrderID, kind}) {
			w.t.Fatalf("milestone %s of %s handed to the relay while it still has it", kind, wr.OrderID)
		}
		w.relaying = append(w.relaying, [2]string{wr.OrderID, kind})
	}
}

func (w *world) publish(i int) {
	m := w.relaying[i]
	w.relaying = slices.Delete(w.relaying, i, i+1)
	w.miles[m[0]+"/"+m[1]] = true
	w.core.Published(m[0], m[1])
}

func (w *world) storeAside(i int) {
	seq := w.asides[i]
	w.asides = slices.Delete(w.asides, i, i+1)
	w.dlq[seq] = true
	w.core.AsideStored(seq)
}

// rebuild reads the durable snapshot and the order's WAL records after it.
func (w *world) rebuild(i int) { w.rebuildFrom(w.t, i) }

func (w *world) rebuildFrom(t fataler, i int) {
	job := w.rebuilds[i]
	w.rebuilds = slices.Delete(w.rebuilds, i, i+1)
	e := w.kv[job.OrderID]
	var after uint64
	if e.data != nil {
		st, _ := testDecode(t, e.data)
		after = st.WalSeq()
	}
	var recs []fold.Record
	for _, r := range w.wal {
		ev, rej := fold.Classify(r)
		if r.Seq > after && r.Seq <= job.UpTo && rej == nil && ev.OrderID == job.OrderID {
			recs = append(recs, r)
		}
	}
	base := func() (*resolver.State, outbox.Outbox) {
		if e.data == nil {
			return nil, outbox.Outbox{}
		}
		return testDecode(t, e.data)
	}
	for _, a := range w.core.Rebuilt(job.OrderID, base, e.rev, recs) {
		w.asides = append(w.asides, a.Seq)
	}
}

func (w *world) checkpoint() {
	if pos, ok := w.core.DurablePosition(); ok && pos > w.ckpt {
		w.ckpt = pos
		w.core.Checkpointed(pos)
	}
}

// crash ends the process: writes, milestones and DLQ copies on their way may or
// may not have landed.
func (w *world) crash() {
	for _, wr := range w.inflight {
		if rapid.Bool().Draw(w.t, "write landed") && w.kv[wr.OrderID].rev == wr.Rev {
			w.rev++
			w.kv[wr.OrderID] = kvEntry{wr.Data, w.rev}
		}
	}
	for _, m := range w.relaying {
		if rapid.Bool().Draw(w.t, "milestone landed") {
			w.miles[m[0]+"/"+m[1]] = true
		}
	}
	for _, seq := range w.asides {
		if rapid.Bool().Draw(w.t, "dlq landed") {
			w.dlq[seq] = true
		}
	}
	w.start()
}

// quiesce runs the process with every result a success until nothing is owed.
func (w *world) quiesce() {
	w.core.SetFlushing(true)
	for round := 0; ; round++ {
		if round > 1000 {
			w.t.Fatalf("the lane does not settle: %d dirty, %d writes, %d rebuilds, %d asides", w.core.Dirty(), len(w.inflight), len(w.rebuilds), len(w.asides))
		}
		w.deliver(len(w.wal))
		w.takeWrites()
		for len(w.inflight) > 0 {
			w.settle(0, false)
		}
		for len(w.relaying) > 0 {
			w.publish(0)
		}
		for len(w.asides) > 0 {
			w.storeAside(0)
		}
		for len(w.rebuilds) > 0 {
			w.rebuild(0)
		}
		if w.next == len(w.wal) && w.core.Clean() && len(w.inflight)+len(w.rebuilds)+len(w.relaying)+len(w.asides) == 0 {
			break
		}
	}
	w.checkpoint()
	if last := w.wal[len(w.wal)-1].Seq; w.ckpt != last {
		w.t.Fatalf("a settled lane checkpoints %d, want the WAL's last event %d", w.ckpt, last)
	}
}

// check compares the world with the oracle: every order's durable snapshot holds
// every effect (the order's events after its wal_seq change nothing it stores), the
// milestones published are exactly those the resolver owes, each once, and the DLQ
// holds exactly the events the rules set aside.
func (w *world) check(o oracle) {
	for id, want := range o.states {
		e, ok := w.kv[id]
		if !ok {
			w.t.Fatalf("order %s has no snapshot", id)
		}
		st, ob := testDecode(w.t, e.data)
		for _, r := range w.wal {
			ev, rej := fold.Classify(r)
			if rej != nil || ev.OrderID != id || r.Seq <= st.WalSeq() || o.asides[r.Seq] {
				continue
			}
			if d := st.Apply(ev, r.Seq); d.Persist {
				w.t.Fatalf("order %s: event %d (%s %s) changes the snapshot but the durable one lacks it", id, r.Seq, ev.Source, ev.Status)
			}
		}
		got, _ := st.MarshalSnapshot()
		exp, _ := want.MarshalSnapshot()
		if string(got) != string(exp) {
			w.t.Fatalf("order %s:\n got %s\nwant %s", id, got, exp)
		}
		wantKinds := append(slices.Clone(o.outboxes[id].Emitted), o.outboxes[id].Pending...)
		var published []string
		for k := range w.miles {
			if oid, kind, _ := cut(k); oid == id {
				published = append(published, kind)
			}
		}
		slices.Sort(wantKinds)
		slices.Sort(published)
		if !slices.Equal(wantKinds, published) {
			w.t.Fatalf("order %s: milestones published %v, want %v", id, published, wantKinds)
		}
		for _, kind := range ob.Emitted {
			if !w.miles[id+"/"+kind] {
				w.t.Fatalf("order %s: outbox says %s was emitted, the stream lacks it", id, kind)
			}
		}
	}
	if got, want := slices.Sorted(maps.Keys(w.dlq)), slices.Sorted(maps.Keys(o.asides)); !slices.Equal(got, want) {
		w.t.Fatalf("DLQ holds %v, want %v", got, want)
	}
}

func flagSet(name string) (set bool) {
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func cut(k string) (string, string, bool) {
	for i := range k {
		if k[i] == '/' {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
}

// TestCrashAnywhereLosesNothing: under any interleaving of deliveries, write
// results, milestone and DLQ acks, rebuilds, checkpoints and crashes, the lane ends
// with every effect durable, every milestone published exactly once and every bad
// event in the DLQ. A checkpoint that passed a non-durable effect fails it: the
// crash after it would lose that effect.
//
// It runs 1,000 cases by default (-rapid.checks overrides): a rare interleaving
// needs many.
func TestCrashAnywhereLosesNothing(t *testing.T) {
	if f := flag.Lookup("rapid.checks"); f != nil && !flagSet("rapid.checks") {
		_ = f.Value.Set("1000")
		defer func() { _ = f.Value.Set(f.DefValue) }()
	}
	rapid.Check(t, func(t *rapid.T) {
		recs := genWAL(t)
		w := newWorld(t, recs)
		steps := rapid.IntRange(0, 200).Draw(t, "steps")
		for i := 0; i < steps; i++ {
			w.now = w.now.Add(time.Duration(rapid.IntRange(0, 30).Draw(t, "ms")) * time.Millisecond)
			switch rapid.IntRange(0, 9).Draw(t, "action") {
			case 0, 1:
				w.deliver(rapid.IntRange(1, 6).Draw(t, "n"))
			case 2:
				w.takeWrites()
			case 3:
				if len(w.inflight) > 0 {
					w.settle(rapid.IntRange(0, len(w.inflight)-1).Draw(t, "write"), rapid.IntRange(0, 4).Draw(t, "lost") == 0)
				}
			case 4:
				if len(w.relaying) > 0 {
					w.publish(rapid.IntRange(0, len(w.relaying)-1).Draw(t, "milestone"))
				}
			case 5:
				if len(w.asides) > 0 {
					w.storeAside(rapid.IntRange(0, len(w.asides)-1).Draw(t, "aside"))
				}
			case 6:
				if len(w.rebuilds) > 0 {
					w.rebuild(rapid.IntRange(0, len(w.rebuilds)-1).Draw(t, "rebuild"))
				}
			case 7, 8:
				w.checkpoint()
			case 9:
				w.crash()
			}
		}
		w.quiesce()
		w.check(resolve(t, recs))
	})
}

// TestUnencodableSnapshotSetsTheEventAside: an event after which the order's
// snapshot cannot be encoded goes to the DLQ with a reason, the order goes on
// without it, and the checkpoint moves past it. (Before, such an order stayed dirty
// forever and pinned the lane's checkpoint.)
func TestUnencodableSnapshotSetsTheEventAside(t *testing.T) {
	ev := func(seq uint64, src schemas.Source, srcSeq int, status schemas.Status) fold.Record {
		body := fmt.Sprintf(`{"schema_version":1,"event_id":"e%d","order_id":%q,"source":%q,"source_seq":%d,"occurred_at":"2026-11-30T12:00:0%dZ","status":%q%s}`,
			seq, poisonOrder, src, srcSeq, seq, status, map[bool]string{true: `,"customer_id":"c","restaurant_id":"r"`}[status == schemas.StatusCreated])
		return walRecord(seq, src, poisonOrder, body)
	}
	recs := []fold.Record{
		ev(1, schemas.SourcePlatform, 1, schemas.StatusCreated),
		ev(2, schemas.SourceDriver, 1, schemas.StatusEnRoute), // unencodable state
		ev(3, schemas.SourceDriver, 2, schemas.StatusArrived),
	}
	w := &world{kv: map[string]kvEntry{}, dlq: map[uint64]bool{}, miles: map[string]bool{}, now: t0, wal: recs}
	w.core = New(testConfig(), testEncode)
	w.core.Reset(0)
	w.core.SetFlushing(true)
	settleAll := func() {
		for round := 0; round < 10; round++ {
			w.takeWrites()
			for len(w.inflight) > 0 {
				w.settle(0, false)
			}
			for len(w.relaying) > 0 {
				w.publish(0)
			}
			for len(w.asides) > 0 {
				w.storeAside(0)
			}
			for len(w.rebuilds) > 0 {
				w.rebuildFrom(t, 0)
			}
		}
	}
	w.deliver(2)
	settleAll()
	if !w.core.Clean() {
		t.Fatalf("the order stays dirty: %d dirty", w.core.Dirty())
	}
	if !w.dlq[2] || len(w.dlq) != 1 {
		t.Fatalf("DLQ holds %v, want event 2 only", w.dlq)
	}
	if pos, _ := w.core.DurablePosition(); pos != 2 {
		t.Fatalf("checkpoint %d, want 2", pos)
	}
	w.deliver(1)
	settleAll()
	st, _ := testDecode(t, w.kv[poisonOrder].data)
	if v := st.View(); v.Status != schemas.StatusArrived || !w.core.Clean() {
		t.Fatalf("after the set-aside event the order goes on: status %s, clean %v", v.Status, w.core.Clean())
	}
}
