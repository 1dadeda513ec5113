// Package lanecore is the bookkeeping of one status lane, with no I/O: which orders
// the lane holds, which of them have effects not yet durable, which writes, rebuilds,
// milestone publishes and DLQ copies are owed, and the durable position that becomes
// the lane's checkpoint. The lane (package handlers) is the thin I/O shell around it:
// it feeds deliveries in, carries out what the core asks for, and reports results
// back. Every method is plain computation, so the rules are tested directly, under
// random interleavings of deliveries and results (core_test.go).
//
// The invariant it keeps: DurablePosition never passes a WAL event whose effect is
// not durable, that is, neither written in the order's snapshot nor stored in the
// DLQ. A lane that restarts from that position loses nothing.
//
// Core is not safe for concurrent use: the lane serialises calls with its own lock,
// and never holds that lock during I/O.
package lanecore

import (
	"errors"
	"slices"
	"time"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/schemas"
)

// Config tunes the core. See handlers.LaneConfig for what each field means.
type Config struct {
	MaxDirty       int
	CacheSize      int
	CoalesceWindow time.Duration
	BacklogAge     time.Duration
}

// Encoder turns a state and its outbox into the snapshot's stored bytes. It is a
// parameter so that the core stays free of the store's format, and so tests can
// make an order unencodable.
type Encoder func(*resolver.State, outbox.Outbox) ([]byte, error)

// ReasonUnencodable is the DLQ reason of an event after which the order's snapshot
// could not be encoded: it is set aside, so the order and the lane move on.
const ReasonUnencodable = "snapshot_unencodable"

// Input is one WAL record as the lane folds it, classified (fold.Classify).
type Input struct {
	Seq      uint64
	Time     time.Time // when the WAL stored it
	Event    *schemas.Event
	Rejected *fold.Rejection // set instead of Event for a record the DLQ takes
}

// Folded is what Fold did with an input.
type Folded struct {
	// Decision is the resolver's, when the event was folded now (Outcome empty when
	// it was not: already handled, held for a rebuild, or set aside).
	Decision resolver.Decision
	// SetAside, when set, must be stored in the DLQ; AsideStored confirms it.
	SetAside *fold.Rejection
}

// Write is one snapshot compare-and-set the lane must send.
type Write struct {
	OrderID  string
	Data     []byte
	Rev      uint64 // the revision the key must still have (0: never written)
	Terminal bool   // delivered or cancelled: the store gives it a TTL
	upTo     uint64
	gen      uint64
	pending  []string
}

// Written is what a successful write settles.
type Written struct {
	// Relay lists the milestones the write made durable in the outbox: publish each,
	// then call Published.
	Relay []string
	// DirtyAt is the WAL time of the oldest event the write made durable (zero if
	// unknown), for the end-to-end latency metric.
	DirtyAt time.Time
	// Again reports that the order changed while the write was in flight: its next
	// write is due.
	Again bool
}

// Rebuild asks the lane to read the order's durable snapshot and its WAL events
// after the snapshot's wal_seq up to UpTo, and hand them to Rebuilt.
type Rebuild struct {
	OrderID string
	UpTo    uint64
}

// Aside is an event Rebuilt set aside: store it in the DLQ, then call AsideStored.
type Aside struct {
	Seq       uint64
	Rejection fold.Rejection
}

// entry is one order held by the lane.
type entry struct {
	id    string
	state *resolver.State
	rev   uint64 // revision of the last durable write, 0 = never written
	// dirtyFrom is the first WAL sequence whose effect is not yet durable, 0 = clean.
	dirtyFrom uint64
	dirtyAt   time.Time // WAL time of that event, for end-to-end latency
	// nextDirtyAt is the WAL time of the first event after the write in flight
	// captured the state: dirtyAt once that write lands.
	nextDirtyAt time.Time
	dirtySince  time.Time // when the entry became dirty, by the lane's clock
	inflight    bool
	// outbox holds the milestones the order owes; gen counts changes to what a
	// snapshot stores, so a write knows whether it captured the latest.
	outbox     outbox.Outbox
	gen        uint64
	writtenGen uint64
	relaying   map[string]bool // kinds handed to the relay, not yet confirmed
	// rebuild is set while the order must be rebuilt from what is durable: its
	// events are held, not folded, until Rebuilt.
	rebuild      bool
	rebuildTaken bool // the lane is doing it
	// queued and rebuildQueued say the entry is in Core.due or Core.rebuilds.
	queued, rebuildQueued bool
	rebuildUpTo           uint64 // the WAL position the rebuild reads to
	held                  []Input
	// skip are the events of this order set aside after classification (the
	// resolver panicked on them, or they made the snapshot unencodable): a rebuild
	// must not fold them again.
	skip map[uint64]bool
	// owed counts this order's events set aside whose DLQ copy is not yet stored:
	// its snapshot is not written until they are.
	owed int
}

// Core is one lane's bookkeeping.
type Core struct {
	cfg    Config
	encode Encoder

	orders map[string]*entry
	dirty  map[string]*entry
	// due holds dirty orders that may need a write, roughly in the order they became
	// dirty, and rebuilds those waiting for one: Writes and Rebuilds look only at
	// them, not at every dirty order (a map that grew during a backlog stays big).
	due      []*entry
	rebuilds []*entry
	aside    map[uint64]*entry // WAL sequences owed to the DLQ, not yet stored there, and their order (nil for a record no order takes)
	lastSeq  uint64            // newest WAL sequence handled
	// synced is false until Reset: memory agrees with KV only from a checkpoint on.
	synced   bool
	lastCkpt uint64
	kickedAt uint64 // the lastSeq a prompt checkpoint was last asked for

	lastDelivery time.Time
	backlog      bool
	flushing     bool
}

// New returns an empty core that needs a Reset before it folds anything.
func New(cfg Config, encode Encoder) *Core {
	return &Core{
		cfg:    cfg,
		encode: encode,
		orders: make(map[string]*entry),
		dirty:  make(map[string]*entry),
		aside:  make(map[uint64]*entry),
	}
}

// Synced reports whether memory agrees with KV from the last checkpoint on.
func (c *Core) Synced() bool { return c.synced }

// Unsync records that memory may no longer agree with KV (a delivery skipped past
// the lane, a failed replay): the lane must resync before the next delivery, and no
// checkpoint is taken until then.
func (c *Core) Unsync() { c.synced = false }

// Reset forgets every order and starts from checkpoint ckpt: the next events folded
// are those after it. The lane calls it only when no order is dirty, so no write is
// in flight.
func (c *Core) Reset(ckpt uint64) {
	clear(c.orders)
	clear(c.dirty)
	// DLQ copies still owed are for events after the checkpoint (it waits for them),
	// which the replay that follows a Reset folds, and sets aside, again.
	clear(c.aside)
	c.due, c.rebuilds = nil, nil
	c.lastSeq = ckpt
	c.lastCkpt = max(c.lastCkpt, ckpt)
	c.synced = true
}

// LastSeq is the newest WAL sequence handled.
func (c *Core) LastSeq() uint64 { return c.lastSeq }

// Clean reports that every handled event's effect is durable and nothing is owed.
func (c *Core) Clean() bool { return len(c.dirty) == 0 && len(c.aside) == 0 }

// Full reports that the lane holds MaxDirty orders with effects not yet durable: it
// must stop taking events until writes land (back-pressure, not unbounded memory).
func (c *Core) Full() bool { return len(c.dirty) >= c.cfg.MaxDirty }

// Dirty is the number of orders whose newest state is not yet durable.
func (c *Core) Dirty() int { return len(c.dirty) }

// SetFlushing makes every dirty order due at once, coalescing or not.
func (c *Core) SetFlushing(on bool) { c.flushing = on }

// Delivered records that a delivery arrived at now, its newest event stored at
// storedAt: a lane handling events stored more than BacklogAge ago is catching up.
func (c *Core) Delivered(now, storedAt time.Time) {
	c.lastDelivery = now
	c.backlog = now.Sub(storedAt) > c.cfg.BacklogAge
}

// Coalescing reports whether dirty orders wait for more of their events before a
// write: while the lane works through a backlog and deliveries keep coming. A lane
// that has gone quiet, is flushing, or is held back at MaxDirty writes at once.
func (c *Core) Coalescing(now time.Time) bool {
	return !c.flushing && c.backlog && !c.Full() && !c.Quiet(now)
}

// Quiet reports whether no delivery arrived for a coalescing tick.
func (c *Core) Quiet(now time.Time) bool { return now.Sub(c.lastDelivery) >= c.CoalesceTick() }

// CoalesceTick is how often the lane asks for due writes while coalescing.
func (c *Core) CoalesceTick() time.Duration { return c.cfg.CoalesceWindow / 4 }

// Fold folds one input. Inputs at or below LastSeq were handled already (a
// redelivery, a replay overlap) and change nothing.
func (c *Core) Fold(in Input, now time.Time) Folded {
	if in.Seq <= c.lastSeq {
		return Folded{}
	}
	c.lastSeq = in.Seq
	if in.Rejected != nil {
		c.aside[in.Seq] = nil // a record no order takes: nothing waits for it but the checkpoint
		return Folded{SetAside: in.Rejected}
	}
	e := c.load(in.Event.OrderID)
	if e.rebuild {
		e.held = append(e.held, in)
		return Folded{}
	}
	if in.Seq <= e.state.WalSeq() {
		return Folded{}
	}
	d, ok := fold.Apply(e.state, in.Event, in.Seq)
	if !ok {
		// The state may be half-changed: rebuild it from what is durable, without
		// this event, which goes to the DLQ.
		c.owe(e, in.Seq)
		e.skip[in.Seq] = true
		c.markDirty(e, in, now)
		c.startRebuild(e, in.Seq)
		return Folded{SetAside: &fold.Rejection{Reason: fold.ReasonHandlerPanic, Detail: "resolver panicked on this event"}}
	}
	if owes := d.Changed && e.outbox.Update(e.state.Milestones()); d.Persist || owes {
		e.gen++
		c.markDirty(e, in, now)
		c.enqueue(e)
	}
	return Folded{Decision: d}
}

// AsideStored records that the DLQ holds the event at seq.
func (c *Core) AsideStored(seq uint64) {
	e, ok := c.aside[seq]
	if !ok {
		return
	}
	delete(c.aside, seq)
	if e != nil {
		if e.owed--; e.owed == 0 {
			c.enqueue(e)
		}
	}
}

// owe records that the DLQ must hold the event at seq of order e before e's next
// snapshot is written: a snapshot past an event tells a replay it was handled, so
// a crash after the write and before the DLQ copy would lose the copy for good.
func (c *Core) owe(e *entry, seq uint64) {
	if _, ok := c.aside[seq]; !ok {
		c.aside[seq] = e
		e.owed++
	}
}

func (c *Core) markDirty(e *entry, in Input, now time.Time) {
	switch {
	case e.dirtyFrom == 0:
		e.dirtyFrom = in.Seq
		e.dirtyAt = in.Time
		e.dirtySince = now
		c.dirty[e.id] = e
	case e.inflight && e.nextDirtyAt.IsZero():
		e.nextDirtyAt = in.Time
	}
}

// load returns the order's entry, or a new one. An order not held is assumed new,
// without reading KV: most are, and the snapshot write's compare-and-set (expected
// revision 0) checks the assumption. If the key exists (written before a restart,
// by another instance, or evicted), that write conflicts and the order is rebuilt
// from its snapshot and the WAL. Until then nothing of the assumed state leaves the
// lane: milestones go out only after a write succeeds.
func (c *Core) load(id string) *entry {
	if e, ok := c.orders[id]; ok {
		return e
	}
	c.evict()
	e := &entry{id: id, state: resolver.New(id), skip: map[uint64]bool{}}
	c.orders[id] = e
	return e
}

// evict drops a quarter of the clean orders when the cache is full.
func (c *Core) evict() {
	if len(c.orders) < c.cfg.CacheSize {
		return
	}
	n := len(c.orders) / 4
	for id, e := range c.orders {
		if n == 0 {
			return
		}
		if e.dirtyFrom == 0 && !e.inflight && e.outbox.Empty() && !e.rebuild {
			delete(c.orders, id)
			n--
		}
	}
}

func (c *Core) startRebuild(e *entry, upTo uint64) {
	e.rebuild, e.rebuildTaken = true, false
	e.rebuildUpTo = max(upTo, e.rebuildUpTo)
	if !e.rebuildQueued {
		e.rebuildQueued = true
		c.rebuilds = append(c.rebuilds, e)
	}
}

// enqueue makes a dirty order a candidate for the next Writes.
func (c *Core) enqueue(e *entry) {
	if !e.queued {
		e.queued = true
		c.due = append(c.due, e)
	}
}

// Writes returns the snapshot writes due now, each order at most one in flight.
// While coalescing, an order waits CoalesceWindow after it became dirty, so several
// of its events make one write. An order whose snapshot cannot be encoded is
// rebuilt instead, so the events that made it unencodable go to the DLQ.
func (c *Core) Writes(now time.Time) []Write {
	coalescing := c.Coalescing(now)
	var out []Write
	for len(c.due) > 0 {
		e := c.due[0]
		if coalescing && now.Sub(e.dirtySince) < c.cfg.CoalesceWindow {
			break // waiting for more of its events, and so is everything behind it
		}
		c.due[0] = nil
		c.due = c.due[1:]
		e.queued = false
		if e.inflight || e.rebuild || e.owed > 0 || e.gen == e.writtenGen || c.orders[e.id] != e {
			// Written, rebuilt or set aside first: their results queue the order
			// again if it still needs a write. An order forgotten by a Reset needs none.
			continue
		}
		data, err := c.encode(e.state, e.outbox)
		if err != nil {
			c.startRebuild(e, c.lastSeq)
			continue
		}
		e.inflight = true
		out = append(out, Write{
			OrderID: e.id, Data: data, Rev: e.rev, Terminal: e.state.Terminal(),
			upTo: e.state.WalSeq(), gen: e.gen, pending: slices.Clone(e.outbox.Pending),
		})
	}
	return out
}

// WriteOK settles a write the store acknowledged at revision rev.
func (c *Core) WriteOK(w Write, rev uint64, now time.Time) Written {
	e := c.orders[w.OrderID]
	if e == nil {
		return Written{}
	}
	e.inflight = false
	e.rev = rev
	e.writtenGen = w.gen
	out := Written{DirtyAt: e.dirtyAt}
	for _, kind := range w.pending {
		if e.relaying[kind] {
			continue
		}
		if e.relaying == nil {
			e.relaying = map[string]bool{}
		}
		e.relaying[kind] = true
		out.Relay = append(out.Relay, kind)
	}
	if e.gen == w.gen {
		c.cleanIfDone(e)
		return out
	}
	out.Again = true
	c.enqueue(e)
	// Changes arrived while the write was in flight: they are the next write. While
	// milestones are outstanding, dirtyFrom keeps the checkpoint below the event that
	// recorded them, so a crash before they are published replays it.
	if e.outbox.Empty() {
		e.dirtyFrom = w.upTo + 1
	}
	if !e.nextDirtyAt.IsZero() {
		e.dirtyAt, e.nextDirtyAt = e.nextDirtyAt, time.Time{}
	}
	e.dirtySince = now
	return out
}

// WriteFailed settles a write that did not land. A conflict means someone else
// wrote the key (another instance that held the lane, a replay, or the order
// existed before the lane assumed it new): the order is rebuilt from what is
// durable. Any other error leaves it dirty for the next Writes.
func (c *Core) WriteFailed(w Write, conflict bool) {
	e := c.orders[w.OrderID]
	if e == nil {
		return
	}
	e.inflight = false
	e.nextDirtyAt = time.Time{} // the next write covers everything since dirtyAt
	if conflict {
		c.startRebuild(e, c.lastSeq)
		return
	}
	c.enqueue(e)
}

// Rebuilds returns the rebuilds the lane should start now, each once until it
// reports back. An order with a write in flight waits for its result first.
func (c *Core) Rebuilds() []Rebuild {
	var out []Rebuild
	waiting := c.rebuilds[:0]
	for _, e := range c.rebuilds {
		switch {
		case !e.rebuild || e.rebuildTaken || c.orders[e.id] != e:
			e.rebuildQueued = false
		case e.inflight:
			waiting = append(waiting, e)
		default:
			e.rebuildQueued, e.rebuildTaken = false, true
			out = append(out, Rebuild{OrderID: e.id, UpTo: e.rebuildUpTo})
		}
	}
	clear(c.rebuilds[len(waiting):])
	c.rebuilds = waiting
	return out
}

// RebuildFailed hands a rebuild back, to be asked for again.
func (c *Core) RebuildFailed(id string) {
	if e := c.orders[id]; e != nil && e.rebuild {
		e.rebuildTaken = false
		if !e.rebuildQueued {
			e.rebuildQueued = true
			c.rebuilds = append(c.rebuilds, e)
		}
	}
}

// Rebuilt replaces the order's state with base (its durable snapshot: nil when the
// key is missing, deleted, expired, unreadable or cannot be written again; recs
// then start at the order's first event), its outbox and revision, folds
// recs (the order's WAL records after base's wal_seq, up to the rebuild's UpTo),
// then the events held meanwhile. Events that panic the resolver or make the
// snapshot unencodable are set aside: the caller stores each in the DLQ and calls
// AsideStored.
func (c *Core) Rebuilt(id string, base func() (*resolver.State, outbox.Outbox), rev uint64, recs []fold.Record) []Aside {
	e := c.orders[id]
	if e == nil || !e.rebuild {
		return nil
	}
	held := make([]Input, 0, len(recs)+len(e.held))
	for _, r := range recs {
		if ev, rej := fold.Classify(r); rej == nil { // a rejected one went to the DLQ when delivered
			held = append(held, Input{Seq: r.Seq, Time: r.Time, Event: ev})
		}
	}
	held = append(held, e.held...)
	var aside []Aside
	for {
		st, ob := base()
		if st == nil {
			st = resolver.New(id)
		}
		bad := c.refold(e, st, &ob, held)
		if bad == nil {
			e.state, e.outbox = st, ob
			break
		}
		e.skip[bad.Seq] = true
		c.owe(e, bad.Seq)
		aside = append(aside, *bad)
	}
	e.rev = rev
	e.rebuild, e.rebuildTaken, e.rebuildUpTo, e.held = false, false, 0, nil
	// e is still dirty (a rebuild starts only for a dirty order) and gen moved, so
	// the rebuilt state is the next write.
	e.gen++
	c.enqueue(e)
	return aside
}

// errUnencodable stops a refold at an event after which the snapshot cannot be
// encoded.
type errUnencodable struct{ err error }

func (e errUnencodable) Error() string { return e.err.Error() }

// refold folds ins into st and ob, leaving out what was set aside before. It
// returns the first event that panics the resolver or leaves the snapshot
// unencodable; st is then damaged and the caller starts over without it.
func (c *Core) refold(e *entry, st *resolver.State, ob *outbox.Outbox, ins []Input) *Aside {
	cu := fold.Into(st, e.skip)
	cu.Then = func(st *resolver.State, _ fold.Record, _ *schemas.Event, d resolver.Decision) error {
		if d.Changed {
			ob.Update(st.Milestones())
		}
		if d.Persist {
			if _, err := c.encode(st, *ob); err != nil {
				return errUnencodable{err}
			}
		}
		return nil
	}
	for _, in := range ins {
		var u errUnencodable
		switch err := cu.Event(fold.Record{Seq: in.Seq, Time: in.Time}, in.Event); {
		case err == nil:
		case errors.As(err, &u):
			return &Aside{Seq: in.Seq, Rejection: fold.Rejection{Reason: ReasonUnencodable, Detail: "the order's snapshot cannot be encoded after this event: " + u.Error()}}
		default: // *fold.PanicError
			return &Aside{Seq: in.Seq, Rejection: fold.Rejection{Reason: fold.ReasonHandlerPanic, Detail: "resolver panicked on this event"}}
		}
	}
	return nil
}

// Published records that a relayed milestone is in the milestone stream. The
// snapshot in KV still lists it as pending; the order's next write clears it. No
// write just for that: a crash before then republishes it, which the milestone
// stream ignores.
func (c *Core) Published(id, kind string) {
	e := c.orders[id]
	if e == nil {
		return
	}
	e.outbox.Published(kind)
	delete(e.relaying, kind)
	c.cleanIfDone(e)
}

// cleanIfDone marks the entry clean once its state is durable and every milestone
// it owes is published.
func (c *Core) cleanIfDone(e *entry) {
	if e.dirtyFrom == 0 || e.inflight || e.rebuild || e.gen != e.writtenGen || !e.outbox.Empty() {
		return
	}
	e.dirtyFrom = 0
	e.dirtyAt, e.nextDirtyAt = time.Time{}, time.Time{}
	delete(c.dirty, e.id)
}

// DurablePosition is the lane checkpoint: the highest WAL sequence at or below which
// every event's effect is durable. ok is false while the core is not synced.
func (c *Core) DurablePosition() (pos uint64, ok bool) {
	if !c.synced {
		return 0, false
	}
	pos = c.lastSeq
	for _, e := range c.dirty {
		pos = min(pos, e.dirtyFrom-1)
	}
	for seq := range c.aside {
		pos = min(pos, seq-1)
	}
	return pos, true
}

// Checkpointed records that the lane stored pos as its checkpoint.
func (c *Core) Checkpointed(pos uint64) { c.lastCkpt = max(c.lastCkpt, pos) }

// LastCheckpoint is the highest checkpoint recorded.
func (c *Core) LastCheckpoint() uint64 { return c.lastCkpt }

// CheckpointDue reports that a quiet, clean lane has handled events past its last
// checkpoint: it should record that now rather than at the next tick, so a restart
// or a drain wait sees it at once. Once per position: a failed write is retried by
// the tick.
func (c *Core) CheckpointDue(now time.Time) bool {
	if !c.synced || !c.Clean() || c.lastSeq <= c.lastCkpt || c.lastSeq == c.kickedAt || !c.Quiet(now) {
		return false
	}
	c.kickedAt = c.lastSeq
	return true
}
