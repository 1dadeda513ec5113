package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/snapshot"
	"github.com/orderflow/orderflow/internal/wal"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// LaneConfig tunes one lane.
type LaneConfig struct {
	// MaxDirty bounds the orders whose newest state is not yet durable; the lane
	// stops taking events beyond it (back-pressure instead of unbounded memory).
	MaxDirty int
	// CacheSize bounds the orders kept in memory; only clean orders are evicted.
	CacheSize int
	// CheckpointEvery is how often the lane records its durable position.
	CheckpointEvery time.Duration
	// RetryBackoff is the pause before retrying a failed JetStream call.
	RetryBackoff time.Duration
	// CoalesceWindow is how long a dirty order waits for more of its events before
	// its snapshot is written, while the lane is behind by more than BacklogAge (the
	// event being handled was stored that long ago) and deliveries keep coming.
	// Catching up on a backlog then writes each order once per window instead of once
	// per event; a caught-up lane writes at once, so live latency does not pay for it.
	// Age, not a count of pending messages, tells the two apart: a live burst briefly
	// queues hundreds of messages that are still milliseconds old. Age is this host's
	// clock against the WAL's stored time, so hosts must keep NTP time (skew well
	// under BacklogAge).
	CoalesceWindow time.Duration
	BacklogAge     time.Duration
}

// SetDefaults fills unset fields.
func (c *LaneConfig) SetDefaults() {
	if c.MaxDirty == 0 {
		c.MaxDirty = 2048
	}
	if c.CacheSize == 0 {
		c.CacheSize = 50_000
	}
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = 200 * time.Millisecond
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 100 * time.Millisecond
	}
	if c.CoalesceWindow == 0 {
		c.CoalesceWindow = 50 * time.Millisecond
	}
	if c.BacklogAge == 0 {
		c.BacklogAge = time.Second
	}
}

// Deps are the I/O a lane needs.
type Deps struct {
	JS          jetstream.JetStream
	Log         *wal.Log
	Snapshots   *snapshot.Store
	Checkpoints jetstream.KeyValue
	DLQ         *DLQ
	Milestones  *MilestonePublisher
	Metrics     *Metrics
	Logger      *slog.Logger
}

// entry is one order held by the lane.
type entry struct {
	id    string
	state *resolver.State
	rev   uint64 // KV revision of the last durable write, 0 = never written
	// dirtyFrom is the first WAL sequence whose effect is not yet durable, 0 = clean.
	dirtyFrom uint64
	dirtyAt   time.Time // WAL time of that event, for end-to-end latency
	// nextDirtyAt is the WAL time of the first event after the write in flight
	// captured the state: dirtyAt once that write lands.
	nextDirtyAt time.Time
	// dirtySince is when the entry became dirty, by this process's clock.
	dirtySince time.Time
	inflight   bool
	// outbox holds the milestones the order owes; gen counts changes to what a
	// snapshot stores, so a write knows whether it captured the latest.
	outbox     outbox.Outbox
	gen        uint64
	writtenGen uint64          // the gen the last durable write captured
	relaying   map[string]bool // kinds handed to the relay, not yet confirmed
}

// Lane is one ordered lane: it folds its partition's events, in WAL order, into order
// states and keeps their snapshots in KV current.
//
// Durability argument. The handler acks a WAL message as soon as its effect is in
// memory, so acks never wait for KV. What makes that safe is the lane checkpoint in
// KV order_lanes: the highest WAL sequence C such that every event of this partition
// at or below C has its effect durable (snapshot written, or DLQ stored). Whenever a
// lane starts, or sees that deliveries skipped past it (another instance held the
// lane meanwhile), it flushes, forgets its memory, and replays the partition from
// C+1 before handling the next message. Events already folded into a snapshot are
// skipped by the snapshot's wal_seq, so replay is idempotent. A crash therefore loses
// no effect: the WAL keeps the events, the checkpoint says where to resume.
type Lane struct {
	partition int
	cfg       LaneConfig
	d         Deps

	mu       sync.Mutex
	cond     *sync.Cond // signalled when dirty shrinks
	orders   map[string]*entry
	dirty    map[string]*entry
	lastSeq  uint64 // newest WAL sequence handled
	consSeq  uint64 // consumer delivery sequence of the last message handled
	needSync bool   // replay from the checkpoint before the next message
	kick     chan struct{}
	acks     chan pendingWrite
	// relayQueue holds milestones whose outbox entry is durable, for runRelay.
	relayQueue []milestone
	relayKick  chan struct{}
	ckptKick   chan struct{} // a checkpoint now, not at the next tick
	kickedAt   uint64        // the lastSeq ckptKick was last sent for
	lastCkpt   uint64
	lag        prometheus.Gauge // this lane's orderflow_lane_lag_events
	// lastHandled is when a delivery last arrived; an idle lane checks its tail.
	lastHandled time.Time
	// backlog is set while the lane handles old events (see BacklogAge); flushing
	// forces writes.
	backlog  bool
	flushing bool
	// lastFloor is the consumer's ack floor at the previous tail check.
	lastFloor uint64
	// runCtx lives as long as Run: replays use it, not a message's context, which
	// Watermill cancels after the ack wait even while a long replay is under way.
	runCtx context.Context
}

type pendingWrite struct {
	e       *entry
	upTo    uint64
	gen     uint64
	pending []string // outbox kinds the write made durable
	future  jetstream.PubAckFuture
}

// milestone is one outbox entry for the relay to publish.
type milestone struct {
	e    *entry
	kind string
}

// NewLane returns a lane for one partition. Run must be running for its writes to flow.
func NewLane(partition int, cfg LaneConfig, d Deps) *Lane {
	cfg.SetDefaults()
	l := &Lane{
		partition: partition,
		cfg:       cfg,
		d:         d,
		orders:    make(map[string]*entry),
		dirty:     make(map[string]*entry),
		needSync:  true,
		kick:      make(chan struct{}, 1),
		acks:      make(chan pendingWrite, cfg.MaxDirty),
		relayKick: make(chan struct{}, 1),
		ckptKick:  make(chan struct{}, 1),
	}
	l.cond = sync.NewCond(&l.mu)
	l.lag = d.Metrics.LaneLag.WithLabelValues(laneLabel(partition))
	return l
}

// Delivery is one WAL message as the consumer handed it over.
type Delivery struct {
	Record      wal.Record
	ConsumerSeq uint64
	Pending     uint64
}

// Handle folds one delivered message. It returns an error only when ctx ends; every
// other failure is retried here, because skipping an event would break the lane's
// order and nacking would let later events overtake it.
func (l *Lane) Handle(ctx context.Context, dl Delivery) error {
	start := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastHandled = start
	if l.runCtx != nil {
		ctx = l.runCtx
	}
	if l.needSync || dl.ConsumerSeq != l.consSeq+1 {
		if err := l.resync(ctx); err != nil {
			l.needSync = true
			return err
		}
	}
	l.consSeq = dl.ConsumerSeq
	l.backlog = start.Sub(dl.Record.Time) > l.cfg.BacklogAge
	if err := l.process(ctx, dl.Record); err != nil {
		l.needSync = true
		return err
	}
	l.lag.Set(float64(dl.Pending))
	l.d.Metrics.HandlerSeconds.Observe(time.Since(start).Seconds())
	if len(l.dirty) >= l.cfg.MaxDirty {
		stop := context.AfterFunc(ctx, func() {
			l.mu.Lock()
			l.cond.Broadcast()
			l.mu.Unlock()
		})
		for len(l.dirty) >= l.cfg.MaxDirty && ctx.Err() == nil {
			l.kickWriter()
			l.cond.Wait()
		}
		stop()
	}
	return ctx.Err()
}

// resync makes memory agree with KV: wait for pending writes, forget everything, and
// replay this partition from the durable checkpoint up to the newest message the
// consumer ever delivered, to anyone. Replaying that far, not just to the message
// that triggered the resync, matters: messages an earlier holder of the lane received
// but never acknowledged are redelivered later, out of WAL order, and must find
// themselves already handled; messages never delivered arrive in order. Called with
// mu held.
func (l *Lane) resync(ctx context.Context) error {
	if err := l.flushLocked(ctx); err != nil {
		return err
	}
	ckpt, err := l.readCheckpoint(ctx)
	if err != nil {
		return err
	}
	l.lastCkpt = ckpt
	delivered, err := l.deliveredUpTo(ctx)
	if err != nil {
		return err
	}
	if err := l.replay(ctx, ckpt, delivered); err != nil {
		return fmt.Errorf("lane %d replay: %w", l.partition, err)
	}
	if l.lastSeq > ckpt {
		l.d.Logger.Info("lane replayed from checkpoint", "lane", l.partition, "from", ckpt+1, "to", l.lastSeq)
	}
	l.needSync = false
	return nil
}

// replay forgets the lane's memory and folds its partition's WAL from ckpt+1 up to
// upto. It holds mu throughout, so the writer sends what the replay left dirty once
// it is done, each order once. The caller has flushed. Called with mu held.
func (l *Lane) replay(ctx context.Context, ckpt, upto uint64) error {
	clear(l.orders)
	l.lastSeq = ckpt
	return wal.ReadRange(ctx, l.d.JS, topology.LaneSubject(l.partition), ckpt+1, upto, func(r wal.Record) error {
		return l.process(ctx, r)
	})
}

// setAside stores rec in the DLQ, retrying until it is durable there.
func (l *Lane) setAside(ctx context.Context, rec wal.Record, rej fold.Rejection) error {
	if err := retry(ctx, l.cfg.RetryBackoff, func() error { return l.d.DLQ.Send(ctx, rec, rej) }); err != nil {
		return err
	}
	l.d.Metrics.DLQ.WithLabelValues(rej.Reason).Inc()
	return nil
}

// consumerInfo asks JetStream for the lane consumer's positions.
func (l *Lane) consumerInfo(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	c, err := l.d.JS.Consumer(ctx, topology.EventsStream, topology.LaneConsumer(l.partition))
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// deliveredUpTo is the highest WAL sequence the lane's consumer has delivered.
func (l *Lane) deliveredUpTo(ctx context.Context) (uint64, error) {
	var n uint64
	err := retry(ctx, l.cfg.RetryBackoff, func() error {
		info, err := l.consumerInfo(ctx)
		if err != nil {
			return err
		}
		n = info.Delivered.Stream
		return nil
	})
	return n, err
}

// process folds one record. Called with mu held.
func (l *Lane) process(ctx context.Context, rec wal.Record) error {
	if rec.Seq <= l.lastSeq {
		return nil // already handled: a redelivery or a replay overlap
	}
	ev, rej := fold.Classify(rec)
	if rej != nil {
		if err := l.setAside(ctx, rec, *rej); err != nil {
			return err
		}
		l.lastSeq = rec.Seq
		return nil
	}
	e := l.load(ev.OrderID)
	if rec.Seq > e.state.WalSeq() {
		d, ok := fold.Apply(e.state, ev, rec.Seq)
		if !ok {
			// The resolver is fuzzed never to panic; if it does, keep the lane going and
			// set the event aside rather than wedge every order behind it.
			l.rebuild(ctx, e, rec.Seq-1)
			if err := l.setAside(ctx, rec, fold.Rejection{Reason: fold.ReasonHandlerPanic, Detail: "resolver panicked on this event"}); err != nil {
				return err
			}
		} else {
			l.d.Metrics.Events.WithLabelValues(string(ev.Source), string(d.Outcome)).Inc()
			owes := d.Changed && e.outbox.Update(e.state.Milestones())
			if d.Persist || owes {
				e.gen++
				l.markDirty(e, rec)
			}
		}
	}
	l.lastSeq = rec.Seq
	return nil
}

func (l *Lane) markDirty(e *entry, rec wal.Record) {
	switch {
	case e.dirtyFrom == 0:
		e.dirtyFrom = rec.Seq
		e.dirtyAt = rec.Time
		e.dirtySince = time.Now()
		l.dirty[e.id] = e
	case e.inflight && e.nextDirtyAt.IsZero():
		e.nextDirtyAt = rec.Time
	}
	if !l.coalescing() {
		l.kickWriter()
	}
}

// coalescing reports whether dirty orders wait for more events before a write:
// while the lane works through a backlog and deliveries keep coming. A lane that has
// gone quiet, at the end of a backlog, or that is held back at MaxDirty, writes what
// it holds at once. Called with mu held.
func (l *Lane) coalescing() bool {
	return !l.flushing && l.backlog && len(l.dirty) < l.cfg.MaxDirty && !l.quiet(time.Now())
}

// quiet reports whether no delivery started for a coalescing tick. Called with mu held.
func (l *Lane) quiet(now time.Time) bool {
	return now.Sub(l.lastHandled) >= l.coalesceTick()
}

// coalesceTick is how often the writer looks for orders whose window has passed.
func (l *Lane) coalesceTick() time.Duration { return l.cfg.CoalesceWindow / 4 }

// load returns the order's entry from memory, or a new one. An order not in memory
// is assumed new, without reading KV: most are, and the assumption is checked where
// it matters, by the snapshot write's compare-and-set (expected revision 0). If the
// key exists (the order was written before a restart, by another instance, or
// evicted from memory), that write conflicts and the lane rebuilds the order from
// its snapshot and the WAL (failed, rebuild), outbox included, before writing again.
// Until then nothing of the assumed state leaves the lane: milestones go out only
// after a write succeeds. Called with mu held.
func (l *Lane) load(id string) *entry {
	if e, ok := l.orders[id]; ok {
		return e
	}
	l.evict()
	e := &entry{id: id, state: resolver.New(id)}
	l.orders[id] = e
	return e
}

// catchUp folds the order's WAL events after the state's wal_seq up to upto,
// recording the milestones they owe.
func (l *Lane) catchUp(ctx context.Context, e *entry, upto uint64) error {
	if upto <= e.state.WalSeq() {
		return nil
	}
	return l.d.Log.ReadOrder(ctx, e.id, e.state.WalSeq(), upto, func(r wal.Record) error {
		if ev, rej := fold.Classify(r); rej == nil {
			if d, ok := fold.Apply(e.state, ev, r.Seq); ok && d.Changed {
				e.outbox.Update(e.state.Milestones())
			}
		}
		return nil
	})
}

// rebuild replaces the entry's state and outbox with what is durable plus the WAL
// up to upto.
func (l *Lane) rebuild(ctx context.Context, e *entry, upto uint64) {
	_ = retry(ctx, l.cfg.RetryBackoff, func() error {
		st, ob, rev, err := l.d.Snapshots.Get(ctx, e.id)
		if err != nil && rev == 0 {
			return err
		}
		if err != nil {
			// The key holds something this build cannot read (corruption, a hand edit,
			// a newer format): refold the order from the WAL and overwrite it.
			l.d.Logger.Error("unreadable snapshot, refolding the order from the WAL", "order", e.id, "err", err)
			l.d.Metrics.SnapshotWrites.WithLabelValues("unreadable").Inc()
			st, ob = nil, outbox.Outbox{}
		}
		if st == nil {
			// Never written, or deleted or expired (a terminal snapshot past its TTL,
			// an archived order): fold the order's WAL from the start.
			st = resolver.New(e.id)
		}
		e.state, e.outbox, e.rev = st, ob, rev
		return l.catchUp(ctx, e, upto)
	})
	if e.state == nil {
		e.state = resolver.New(e.id)
	}
	e.gen++
}

// evict drops clean orders when the cache is full. Called with mu held.
func (l *Lane) evict() {
	if len(l.orders) < l.cfg.CacheSize {
		return
	}
	n := len(l.orders) / 4
	for id, e := range l.orders {
		if n == 0 {
			return
		}
		if e.dirtyFrom == 0 && !e.inflight && e.outbox.Empty() {
			delete(l.orders, id)
			n--
		}
	}
}

func (l *Lane) kickWriter() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Run writes dirty snapshots and checkpoints until ctx ends.
func (l *Lane) Run(ctx context.Context) {
	l.mu.Lock()
	l.runCtx = ctx
	l.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(4)
	go func() {
		defer wg.Done()
		l.runRelay(ctx)
	}()
	go func() {
		defer wg.Done()
		// Its own goroutine: a checkpoint is a synchronous KV write, and the writer
		// below must never wait for one.
		tick := time.NewTicker(l.cfg.CheckpointEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				l.writeCheckpoint(ctx)
			case <-l.ckptKick:
				l.writeCheckpoint(ctx)
			}
		}
	}()
	go func() {
		defer wg.Done()
		l.collectAcks(ctx)
	}()
	go func() {
		defer wg.Done()
		l.watchTail(ctx)
	}()
	coalesce := time.NewTicker(l.coalesceTick())
	defer coalesce.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			l.mu.Lock()
			l.cond.Broadcast()
			l.mu.Unlock()
			return
		case <-l.kick:
			l.writeDirty(ctx)
		case <-coalesce.C:
			l.writeDirty(ctx)
		}
	}
}

// watchTail runs recoverTail whenever the lane is idle. It has its own goroutine
// because recovery waits for snapshot writes, which Run sends.
func (l *Lane) watchTail(ctx context.Context) {
	tick := time.NewTicker(tailIdle)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := l.recoverTail(ctx); err != nil && ctx.Err() == nil {
				l.d.Logger.Warn("lane tail recovery", "lane", l.partition, "err", err)
			}
		}
	}
}

// tailIdle is how long a lane waits without deliveries before checking its tail.
const tailIdle = 2 * time.Second

// recoverTail covers the one case resync cannot: an instance died after its events
// were acknowledged but before their effects were durable, and no new event arrives
// to trigger a resync on whichever instance holds the lane now. When the lane has
// been idle, it compares the consumer's ack floor with the checkpoint and replays the
// gap itself. Any instance may do this: writes are compare-and-set, so a concurrent
// owner and this replay converge on the same snapshots.
func (l *Lane) recoverTail(ctx context.Context) error {
	l.mu.Lock()
	idle := time.Since(l.lastHandled) >= tailIdle
	l.mu.Unlock()
	if !idle {
		return nil
	}
	info, err := l.consumerInfo(ctx)
	if err != nil {
		return err
	}
	floor := info.AckFloor.Stream
	l.mu.Lock()
	defer l.mu.Unlock()
	stalled := floor == l.lastFloor
	l.lastFloor = floor
	if !l.needSync && l.lastSeq >= floor {
		return nil // this instance holds the lane and has handled everything acked
	}
	if !stalled {
		return nil // someone is making progress on the lane: let its checkpoint catch up
	}
	ckpt, err := l.readCheckpoint(ctx)
	if err != nil || ckpt >= floor {
		return err
	}
	l.d.Logger.Info("lane recovering its tail", "lane", l.partition, "from", ckpt+1, "to", floor)
	if err := l.flushLocked(ctx); err != nil {
		return err
	}
	if err := l.replay(ctx, ckpt, floor); err != nil {
		return err
	}
	if err := l.flushLocked(ctx); err != nil {
		return err
	}
	if _, err := l.d.Checkpoints.Put(ctx, l.checkpointKey(), topology.FormatCheckpoint(floor)); err != nil {
		return err
	}
	l.lastCkpt = max(l.lastCkpt, floor)
	// Deliveries, when they come, start from a fresh resync.
	l.needSync = true
	return nil
}

// writeDirty sends one pipelined CAS write per dirty order that has none in flight.
// Several events of one order between two writes coalesce into one write.
func (l *Lane) writeDirty(ctx context.Context) {
	type job struct {
		e        *entry
		data     []byte
		rev      uint64
		upTo     uint64
		gen      uint64
		pending  []string
		terminal bool
	}
	var jobs []job
	l.mu.Lock()
	coalescing := l.coalescing()
	now := time.Now()
	// A quiet lane that has made everything durable records it now rather than at
	// the next checkpoint tick, so a restart or a drain wait sees it at once. Once
	// per position: if that write fails, the tick retries it.
	if len(l.dirty) == 0 && !l.needSync && l.lastSeq > l.lastCkpt && l.lastSeq != l.kickedAt && l.quiet(now) {
		l.kickedAt = l.lastSeq
		select {
		case l.ckptKick <- struct{}{}:
		default:
		}
	}
	for _, e := range l.dirty {
		if e.inflight || e.gen == e.writtenGen || (coalescing && now.Sub(e.dirtySince) < l.cfg.CoalesceWindow) {
			continue // nothing new to write, or waiting for more of its events
		}
		data, err := snapshot.Encode(e.state, e.outbox)
		if err != nil {
			l.d.Logger.Error("encode snapshot", "order", e.id, "err", err)
			continue
		}
		e.inflight = true
		st := e.state.View().Status
		jobs = append(jobs, job{e, data, e.rev, e.state.WalSeq(), e.gen, slices.Clone(e.outbox.Pending),
			st == schemas.StatusDelivered || st == schemas.StatusCancelled})
	}
	l.mu.Unlock()
	for i, j := range jobs {
		f, err := l.d.Snapshots.WriteAsync(j.e.id, j.data, j.rev, j.terminal)
		if err != nil {
			l.d.Logger.Warn("snapshot write not sent", "order", j.e.id, "err", err)
			l.mu.Lock()
			for _, rest := range jobs[i:] {
				rest.e.inflight = false
			}
			l.mu.Unlock()
			time.AfterFunc(l.cfg.RetryBackoff, l.kickWriter)
			return
		}
		select {
		case l.acks <- pendingWrite{e: j.e, upTo: j.upTo, gen: j.gen, pending: j.pending, future: f}:
		case <-ctx.Done():
			return
		}
	}
}

// collectAcks settles write results in the order they were sent.
func (l *Lane) collectAcks(ctx context.Context) {
	for {
		var w pendingWrite
		select {
		case w = <-l.acks:
		case <-ctx.Done():
			return
		}
		select {
		case ack := <-w.future.Ok():
			l.settle(w, ack.Sequence)
		case err := <-w.future.Err():
			l.failed(ctx, w, err)
		case <-ctx.Done():
			return
		}
	}
}

func (l *Lane) settle(w pendingWrite, rev uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := w.e
	e.inflight = false
	e.rev = rev
	e.writtenGen = w.gen
	l.d.Metrics.SnapshotWrites.WithLabelValues("ok").Inc()
	if !e.dirtyAt.IsZero() {
		l.d.Metrics.EndToEndSeconds.Observe(time.Since(e.dirtyAt).Seconds())
	}
	// The write made these milestones durable in the outbox: now they may go out.
	if len(w.pending) > 0 {
		failpoint(FailAfterSnapshotWrite)
		l.relay(e, w.pending)
	}
	switch {
	case e.gen == w.gen:
		l.cleanIfDone(e)
	default:
		// Changes arrived while the write was in flight: they are the next write.
		// While milestones are outstanding, dirtyFrom keeps holding the checkpoint
		// below the event that recorded them.
		if e.outbox.Empty() {
			e.dirtyFrom = w.upTo + 1
		}
		if !e.nextDirtyAt.IsZero() {
			e.dirtyAt, e.nextDirtyAt = e.nextDirtyAt, time.Time{}
		}
		e.dirtySince = time.Now()
		l.kickWriter()
	}
}

// relay hands durable pending milestones to the relay, each once. Called with mu held.
func (l *Lane) relay(e *entry, kinds []string) {
	for _, kind := range kinds {
		if e.relaying[kind] {
			continue
		}
		if e.relaying == nil {
			e.relaying = map[string]bool{}
		}
		e.relaying[kind] = true
		l.relayQueue = append(l.relayQueue, milestone{e, kind})
		select {
		case l.relayKick <- struct{}{}:
		default:
		}
	}
}

// cleanIfDone marks the entry clean once its state is durable and every milestone
// it owes is published. Called with mu held.
func (l *Lane) cleanIfDone(e *entry) {
	if e.dirtyFrom == 0 || e.inflight || e.gen != e.writtenGen || !e.outbox.Empty() {
		return
	}
	e.dirtyFrom = 0
	e.dirtyAt, e.nextDirtyAt = time.Time{}, time.Time{}
	delete(l.dirty, e.id)
	l.cond.Broadcast()
}

// runRelay publishes milestones whose outbox entry is durable, then marks them
// published so the next snapshot write clears them. A crash anywhere in between
// leaves them in the outbox; the lane publishes them again after its resync, and
// the milestone stream's one-message-per-subject rule makes the retry a no-op.
func (l *Lane) runRelay(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.relayKick:
		}
		l.mu.Lock()
		queue := l.relayQueue
		l.relayQueue = nil
		l.mu.Unlock()
		// Pipelined: send them all, then settle each; a failed one goes back in the
		// queue for the next round.
		futures := make([]jetstream.PubAckFuture, len(queue))
		for i, m := range queue {
			futures[i], _ = l.d.Milestones.PublishAsync(m.e.id, m.kind)
		}
		var failed []milestone
		for i, m := range queue {
			if err := l.d.Milestones.Settle(ctx, futures[i]); err != nil {
				if ctx.Err() != nil {
					return
				}
				l.d.Logger.Warn("milestone not published, retrying", "order", m.e.id, "milestone", m.kind, "err", err)
				failed = append(failed, m)
				continue
			}
			failpoint(FailAfterMilestonePublish)
			// The snapshot in KV still lists the milestone as pending; the order's
			// next write clears it. No write just for that: a crash before then
			// republishes it, which the milestone stream ignores.
			l.mu.Lock()
			m.e.outbox.Published(m.kind)
			delete(m.e.relaying, m.kind)
			l.cleanIfDone(m.e)
			l.mu.Unlock()
		}
		if len(failed) > 0 {
			l.mu.Lock()
			l.relayQueue = append(failed, l.relayQueue...)
			l.mu.Unlock()
			time.AfterFunc(l.cfg.RetryBackoff, func() {
				select {
				case l.relayKick <- struct{}{}:
				default:
				}
			})
		}
	}
}

func (l *Lane) failed(ctx context.Context, w pendingWrite, err error) {
	err = snapshot.Classify(err)
	l.mu.Lock()
	defer l.mu.Unlock()
	w.e.inflight = false
	w.e.nextDirtyAt = time.Time{} // the next write covers everything since dirtyAt
	if errors.Is(err, snapshot.ErrConflict) {
		// Someone else wrote the key (another instance that held this lane, or an
		// operator's replay): rebuild from what is durable plus the WAL, then write again.
		l.d.Metrics.SnapshotWrites.WithLabelValues("conflict").Inc()
		l.rebuild(ctx, w.e, l.lastSeq)
		l.kickWriter()
		return
	}
	l.d.Metrics.SnapshotWrites.WithLabelValues("error").Inc()
	l.d.Logger.Warn("snapshot write failed, retrying", "order", w.e.id, "err", err)
	time.AfterFunc(l.cfg.RetryBackoff, l.kickWriter)
}

// durablePosition is the lane checkpoint: below the oldest non-durable event. Called with mu held.
func (l *Lane) durablePosition() uint64 {
	pos := l.lastSeq
	for _, e := range l.dirty {
		if e.dirtyFrom-1 < pos {
			pos = e.dirtyFrom - 1
		}
	}
	return pos
}

func (l *Lane) checkpointKey() string { return topology.LaneConsumer(l.partition) }

func (l *Lane) readCheckpoint(ctx context.Context) (uint64, error) {
	var pos uint64
	err := retry(ctx, l.cfg.RetryBackoff, func() error {
		kve, err := l.d.Checkpoints.Get(ctx, l.checkpointKey())
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			pos = 0
			return nil
		}
		if err != nil {
			return err
		}
		pos, err = topology.ParseCheckpoint(kve.Value())
		return err
	})
	return pos, err
}

func (l *Lane) writeCheckpoint(ctx context.Context) {
	l.mu.Lock()
	if l.needSync {
		l.mu.Unlock()
		return
	}
	pos := l.durablePosition()
	if pos <= l.lastCkpt {
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	if _, err := l.d.Checkpoints.Put(ctx, l.checkpointKey(), topology.FormatCheckpoint(pos)); err != nil {
		l.d.Logger.Warn("lane checkpoint not written", "lane", l.partition, "err", err)
		return
	}
	l.mu.Lock()
	if pos > l.lastCkpt {
		l.lastCkpt = pos
	}
	l.mu.Unlock()
}

// Flush waits until every handled event's effect is durable and records the checkpoint.
func (l *Lane) Flush(ctx context.Context) error {
	l.mu.Lock()
	err := l.flushLocked(ctx)
	l.mu.Unlock()
	if err != nil {
		return err
	}
	l.writeCheckpoint(ctx)
	return nil
}

func (l *Lane) flushLocked(ctx context.Context) error {
	if len(l.dirty) == 0 {
		return nil
	}
	stop := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	defer stop()
	l.flushing = true
	defer func() { l.flushing = false }()
	for len(l.dirty) > 0 {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		l.kickWriter()
		l.cond.Wait()
	}
	return nil
}

// retry calls fn until it succeeds or ctx ends, logging every tenth failure so a
// stalled lane is visible.
func retry(ctx context.Context, backoff time.Duration, fn func() error) error {
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt%10 == 0 {
			slog.Warn("retrying", "attempt", attempt+1, "err", err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
