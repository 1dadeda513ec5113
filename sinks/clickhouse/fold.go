package clickhouse

import (
	"context"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/schemas"
)

// Milestones tracked per order, first time reached ever (as ORDER_MILESTONES).
const (
	msPickedUp = iota
	msDelivered
	msCancelled
	numMilestones
)

func milestoneIndex(s schemas.Status) int {
	switch s {
	case schemas.StatusPickedUp:
		return msPickedUp
	case schemas.StatusDelivered:
		return msDelivered
	case schemas.StatusCancelled:
		return msCancelled
	}
	return -1
}

// entry is one order as the sink knows it: its resolver state plus what the
// resolver does not keep and the tables need. Everything in it is a function of the
// order's WAL events up to st.WalSeq(), so a rebuild from the WAL gives the same.
type entry struct {
	id   string
	st   *resolver.State
	view resolver.View // st.View() after the last event that changed the answer
	// createdAt and lastAt are the WAL times of the first and newest event folded in.
	createdAt, lastAt time.Time
	events            uint32
	reached           uint8 // bit per milestone ever reached
	reachedAt         [numMilestones]time.Time
	// gen is the batch generation that last touched the entry, startIDs its entity
	// ids when that batch first touched it: a changed id needs a tombstone.
	gen      uint64
	startIDs [numKinds]string
}

func newEntry(id string) *entry {
	st := resolver.New(id)
	return &entry{id: id, st: st, view: st.View()}
}

// apply folds one valid event. ok is false when the resolver panicked; the state
// may then be damaged and the caller rebuilds it.
func (e *entry) apply(rec wal.Record, ev *schemas.Event) (d resolver.Decision, o outcome, ok bool) {
	if d, ok = fold.Apply(e.st, ev, rec.Seq); !ok {
		return d, o, false
	}
	return d, e.note(rec, ev, d), true
}

// note records what the tables need of an event fold applied to e.st with
// decision d, beyond the resolver's state: times, counts, transitions and the
// milestones reached.
func (e *entry) note(rec wal.Record, ev *schemas.Event, d resolver.Decision) (o outcome) {
	before := e.view
	if e.events == 0 {
		e.createdAt = rec.Time
	}
	e.events++
	e.lastAt = rec.Time
	if d.Changed {
		e.view = e.st.View()
	}
	o = outcome{changed: d.Changed, status: e.view.Status, predicted: e.view.Predicted}
	if d.Changed && e.view.Status != "" && !e.view.Predicted && (e.view.Status != before.Status || before.Predicted) {
		o.transition = e.view.Status
	}
	// Only a merged claim moves the authoritative status, and every merge sets Persist.
	if d.Persist {
		for _, m := range e.st.Milestones() {
			if i := milestoneIndex(m); i >= 0 && e.reached&(1<<i) == 0 {
				e.reached |= 1 << i
				e.reachedAt[i] = ev.OccurredAt.UTC()
				o.milestones = append(o.milestones, string(m))
			}
		}
	}
	return o
}

// OrderLog reads one order's events in WAL order, after < seq <= upto (upto 0:
// to the end). *wal.Log is the default; see Sink.WithHistory.
type OrderLog interface {
	ReadOrder(ctx context.Context, orderID string, after, upto uint64, fn func(wal.Record) error) error
}

// folder folds WAL records, fed in WAL order, into rows. It owns the bounded cache
// of order states. Not safe for concurrent use: the sink's reader owns it.
type folder struct {
	log       OrderLog
	cacheSize int
	parallel  int // concurrent WAL reads in prefetch
	backoff   time.Duration
	logger    *slog.Logger

	orders     map[string]*entry
	prefetched map[string]prefetched
	// fromStart: every event of the WAL since its first stored one went through this
	// folder since the last reset, so an order neither cached nor evicted has no
	// earlier event and needs no WAL read.
	fromStart bool
	evicted   bloom
	gen       uint64
	touched   []*entry
	// lookups counts WAL reads of whole orders (Stats.Lookups).
	lookups *atomic.Uint64
}

type prefetched struct {
	seq uint64 // the event it was rebuilt for: valid for that event only
	e   *entry
}

func newFolder(log OrderLog, cacheSize, lookups int, backoff time.Duration, logger *slog.Logger, counter *atomic.Uint64) *folder {
	f := &folder{log: log, cacheSize: cacheSize, parallel: lookups, backoff: backoff, logger: logger, lookups: counter}
	f.reset(false)
	return f
}

// reset forgets every order: after it, states are rebuilt from the WAL on demand.
func (f *folder) reset(fromStart bool) {
	f.orders = make(map[string]*entry)
	f.prefetched = make(map[string]prefetched)
	f.evicted.clear()
	f.fromStart = fromStart
	f.touched = nil
	f.gen++
}

// fold adds the rows of one WAL record to b. It fails only when ctx ends (WAL reads
// are retried: skipping an order's history would record wrong decisions).
func (f *folder) fold(ctx context.Context, rec wal.Record, ev *schemas.Event, rej *fold.Rejection, b *batch) error {
	if rej != nil {
		b.events.addRejected(rec, rej)
		return nil
	}
	e, err := f.get(ctx, ev.OrderID, rec.Seq)
	if err != nil {
		return err
	}
	if e.gen != f.gen {
		e.gen = f.gen
		e.startIDs = entityIDs(&e.view)
		f.touched = append(f.touched, e)
	}
	d, o, ok := e.apply(rec, ev)
	if !ok {
		// The resolver is fuzzed never to panic; if it does, record the event as the
		// lanes do (set aside) and rebuild the order without it.
		if err := f.rebuildInto(ctx, e, rec.Seq-1); err != nil {
			return err
		}
		d = resolver.Decision{Outcome: resolver.Rejected, Reason: fold.ReasonHandlerPanic}
		o = outcome{status: e.view.Status, predicted: e.view.Predicted}
	}
	b.events.addEvent(rec, ev, d, o)
	return nil
}

// get returns the order's state holding exactly its events before seq.
func (f *folder) get(ctx context.Context, id string, seq uint64) (*entry, error) {
	if e := f.orders[id]; e != nil {
		if e.st.WalSeq() < seq {
			return e, nil
		}
		// It has seen this event or a later one: records came out of order. Never
		// the case when fed in WAL order, but a wrong decision must not follow.
		f.logger.Warn("clickhouse sink: order state ahead of the WAL position, rebuilding", "order", id, "state_seq", e.st.WalSeq(), "seq", seq)
		return e, f.rebuildInto(ctx, e, seq-1)
	}
	if p, ok := f.prefetched[id]; ok {
		delete(f.prefetched, id)
		if p.seq == seq {
			f.put(p.e)
			return p.e, nil
		}
	}
	e := newEntry(id)
	if f.needsLookup(id) {
		if err := f.rebuildInto(ctx, e, seq-1); err != nil {
			return nil, err
		}
	}
	f.put(e)
	return e, nil
}

func (f *folder) needsLookup(id string) bool { return !f.fromStart || f.evicted.has(id) }

// rebuildInto replaces e's state with the fold of the order's WAL events up to upto,
// keeping its batch bookkeeping. WAL errors are retried until ctx ends.
func (f *folder) rebuildInto(ctx context.Context, e *entry, upto uint64) error {
	backoff := f.backoff
	for {
		fresh, err := f.readOrder(ctx, e.id, upto)
		if err == nil {
			fresh.gen, fresh.startIDs = e.gen, e.startIDs
			*e = *fresh
			return nil
		}
		f.logger.Warn("clickhouse sink: read order from the WAL", "order", e.id, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// readOrder folds the order's WAL events up to upto into a new entry. An event the
// resolver panics on is left out, as the lanes leave it out.
func (f *folder) readOrder(ctx context.Context, id string, upto uint64) (*entry, error) {
	var e *entry
	err := fold.Rebuild(func(skip map[uint64]bool) error {
		e = newEntry(id)
		f.lookups.Add(1)
		if upto == 0 {
			return nil
		}
		c := fold.Into(e.st, skip)
		c.Then = func(_ *resolver.State, rec wal.Record, ev *schemas.Event, d resolver.Decision) error {
			e.note(rec, ev, d)
			return nil
		}
		return f.log.ReadOrder(ctx, id, 0, upto, c.Record)
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

// put caches e, evicting when the cache is full.
func (f *folder) put(e *entry) {
	f.orders[e.id] = e
	if len(f.orders) > f.cacheSize {
		f.evict()
	}
}

// evict drops a quarter of the cache, terminal orders first (they rarely see
// another event). Orders touched by the open batch stay: its rows come from them.
func (f *folder) evict() {
	want := max(1, f.cacheSize/4)
	for pass := 0; pass < 2 && want > 0; pass++ {
		for id, e := range f.orders {
			if want == 0 {
				break
			}
			if e.gen == f.gen || pass == 0 && !e.st.Terminal() {
				continue
			}
			delete(f.orders, id)
			f.evicted.add(id)
			want--
		}
	}
}

// lookup is an event whose order may need rebuilding from the WAL.
type lookup struct {
	id  string
	seq uint64
}

// prefetch rebuilds, concurrently, the orders of upcoming events that the cache
// lacks, each as of just before its first upcoming event. fold uses a prefetched
// state only for exactly that event; anything else rebuilds again, so a wrong
// guess costs time, never correctness.
func (f *folder) prefetch(ctx context.Context, upcoming []lookup) {
	var todo []lookup
	seen := map[string]bool{}
	for _, l := range upcoming {
		if seen[l.id] {
			continue
		}
		seen[l.id] = true
		if _, ok := f.orders[l.id]; ok || !f.needsLookup(l.id) {
			continue
		}
		if _, ok := f.prefetched[l.id]; ok {
			continue
		}
		todo = append(todo, l)
	}
	if len(todo) == 0 {
		return
	}
	results := make([]*entry, len(todo))
	sem := make(chan struct{}, f.parallel)
	var wg sync.WaitGroup
	for i, l := range todo {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			// readOrder touches only f.log and f.lookups, both safe to share.
			if e, err := f.readOrder(ctx, l.id, l.seq-1); err == nil {
				results[i] = e
			}
		}()
	}
	wg.Wait()
	for i, l := range todo {
		if results[i] != nil {
			f.prefetched[l.id] = prefetched{seq: l.seq, e: results[i]}
		}
	}
}

// seal moves the touched orders' current state into b and opens the next batch
// generation.
func (f *folder) seal(b *batch) {
	b.orders.grow(len(f.touched))
	for k := range numKinds {
		b.index[k].grow(len(f.touched))
	}
	for _, e := range f.touched {
		if e.view.Status == "" {
			continue // not an order yet: nothing was written for it
		}
		b.orders.add(e, -1, "", true)
		ids := entityIDs(&e.view)
		for k := range numKinds {
			if ids[k] != "" {
				b.index[k].add(e, k, ids[k], true)
			}
			if old := e.startIDs[k]; old != "" && old != ids[k] {
				b.index[k].add(e, k, old, false)
			}
		}
	}
	f.touched = f.touched[:0]
	f.gen++
}

// bloom remembers evicted order ids approximately: a false positive costs one WAL
// read, never a wrong answer.
type bloom struct {
	bits []uint64
}

const bloomBits = 1 << 21

func (b *bloom) clear() { b.bits = nil }

func (b *bloom) hashes(s string) (uint32, uint32) {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	v := h.Sum64()
	return uint32(v) % bloomBits, uint32(v>>32) % bloomBits
}

func (b *bloom) add(s string) {
	if b.bits == nil {
		b.bits = make([]uint64, bloomBits/64)
	}
	x, y := b.hashes(s)
	b.bits[x/64] |= 1 << (x % 64)
	b.bits[y/64] |= 1 << (y % 64)
}

func (b *bloom) has(s string) bool {
	if b.bits == nil {
		return false
	}
	x, y := b.hashes(s)
	return b.bits[x/64]&(1<<(x%64)) != 0 && b.bits[y/64]&(1<<(y%64)) != 0
}
