package handlers

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/lanecore"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/retry"
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
	// newest event delivered was stored that long ago) and deliveries keep coming.
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

// Delivery is one WAL message as the lane's consumer handed it over.
type Delivery struct {
	Record      fold.Record
	ConsumerSeq uint64
	Pending     uint64
}

// Lane is one ordered lane: it folds its partition's events, in WAL order, into order
// states and keeps their snapshots in KV current. The bookkeeping is lanecore.Core;
// this type carries out its I/O: deliveries in (lane.go), snapshot writes and
// rebuilds (writer.go), milestones (relay.go), checkpoints and recovery
// (recovery.go).
//
// Durability argument. The handler acks WAL messages as soon as their effect is in
// memory, so acks never wait for KV. What makes that safe is the lane checkpoint in
// KV order_lanes: the highest WAL sequence C such that every event of this partition
// at or below C has its effect durable (snapshot written, or DLQ stored). Whenever a
// lane starts, or sees that deliveries skipped past it (another instance held the
// lane meanwhile), it flushes, forgets its memory, and replays the partition from
// C+1 before handling the next message. Events already folded into a snapshot are
// skipped by the snapshot's wal_seq, so replay is idempotent. A crash therefore loses
// no effect: the WAL keeps the events, the checkpoint says where to resume.
//
// Locks. delivery serialises the delivery path (HandleBatch, resync, tail recovery)
// and may be held across I/O. mu guards the core and is never held across I/O, so
// writes, acks, rebuilds and milestones flow while a replay reads the WAL.
type Lane struct {
	partition int
	cfg       LaneConfig
	d         Deps
	log       *slog.Logger
	lag       prometheus.Gauge
	events    decisionCounters

	delivery    chan struct{} // a lock that waits with a context: held on the delivery path
	consSeq     uint64        // consumer sequence of the last delivery handled
	lastHandled time.Time     // when a delivery last arrived; an idle lane checks its tail
	lastFloor   uint64        // the consumer's ack floor at the previous tail check

	mu         sync.Mutex
	core       *lanecore.Core
	relayQueue []milestone
	rebuildQ   []lanecore.Rebuild

	kick        chan struct{} // the writer: writes or rebuilds may be due
	rebuildKick chan struct{}
	relayKick   chan struct{}
	ckptKick    chan struct{} // a checkpoint now, not at the next tick
	settled     chan struct{} // something the delivery path may wait for settled
	acks        chan pendingWrite
}

// NewLane returns a lane for one partition. Run must be running for its writes to flow.
func NewLane(partition int, cfg LaneConfig, d Deps) *Lane {
	cfg.SetDefaults()
	core := lanecore.New(lanecore.Config{
		MaxDirty: cfg.MaxDirty, CacheSize: cfg.CacheSize,
		CoalesceWindow: cfg.CoalesceWindow, BacklogAge: cfg.BacklogAge,
	}, snapshot.Encode)
	return &Lane{
		partition:   partition,
		cfg:         cfg,
		d:           d,
		log:         d.Logger.With("lane", partition),
		lag:         d.Metrics.LaneLag.WithLabelValues(laneLabel(partition)),
		events:      newDecisionCounters(d.Metrics.Events),
		core:        core,
		kick:        make(chan struct{}, 1),
		rebuildKick: make(chan struct{}, 1),
		relayKick:   make(chan struct{}, 1),
		ckptKick:    make(chan struct{}, 1),
		settled:     make(chan struct{}, 1),
		acks:        make(chan pendingWrite, cfg.MaxDirty),
		delivery:    make(chan struct{}, 1),
	}
}

// HandleBatch folds one pulled batch of deliveries, in order. It returns an error
// only when ctx ends; every other failure is retried here, because skipping an
// event would break the lane's order and nacking would let later events overtake
// it. When it returns nil, every event's effect is in memory and the batch may be
// acked. ctx should outlive a delivery's own deadline (a resync may replay a long
// stretch of the WAL) and end when the process must stop.
func (l *Lane) HandleBatch(ctx context.Context, batch []Delivery) (err error) {
	if len(batch) == 0 {
		return nil
	}
	// Decoding is pure and the costliest step: do it before taking any lock.
	ins := make([]lanecore.Input, len(batch))
	recs := make([]fold.Record, len(batch))
	for i := range batch {
		recs[i] = batch[i].Record
		ins[i] = input(recs[i])
	}
	if err := l.lockDelivery(ctx); err != nil {
		return err
	}
	defer l.unlockDelivery()
	defer func() {
		// A panic (recovered by the router, which nacks the batch) may leave memory
		// half-changed: the next delivery resyncs from the checkpoint.
		if r := recover(); r != nil {
			l.unsync()
			panic(r)
		}
	}()
	l.lastHandled = time.Now()
	for start := 0; start < len(batch); {
		l.mu.Lock()
		synced := l.core.Synced()
		l.mu.Unlock()
		// A consumer sequence that skips means another instance held the lane (or
		// messages were redelivered): memory no longer matches KV.
		if !synced || batch[start].ConsumerSeq != l.consSeq+1 {
			if err := l.resync(ctx, batch[start]); err != nil {
				l.unsync()
				return err
			}
		}
		end := start + 1
		for end < len(batch) && batch[end].ConsumerSeq == batch[end-1].ConsumerSeq+1 {
			end++
		}
		l.consSeq = batch[end-1].ConsumerSeq
		if err := l.fold(ctx, ins[start:end], recs[start:end]); err != nil {
			l.unsync()
			return err
		}
		start = end
	}
	l.lag.Set(float64(batch[len(batch)-1].Pending))
	return l.waitRoom(ctx)
}

func input(rec fold.Record) lanecore.Input {
	ev, rej := fold.Classify(rec)
	return lanecore.Input{Seq: rec.Seq, Time: rec.Time, Event: ev, Rejected: rej}
}

// fold hands classified records to the core, then stores what it set aside in the
// DLQ. Called on the delivery path.
func (l *Lane) fold(ctx context.Context, ins []lanecore.Input, recs []fold.Record) error {
	var aside []int
	var rejs []fold.Rejection
	coalescing := func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		now := time.Now()
		l.core.Delivered(now, recs[len(recs)-1].Time)
		for i := range ins {
			f := l.core.Fold(ins[i], now)
			if f.Decision.Outcome != "" {
				l.events.inc(ins[i].Event.Source, f.Decision.Outcome)
			}
			if f.SetAside != nil {
				aside = append(aside, i)
				rejs = append(rejs, *f.SetAside)
			}
		}
		return l.core.Coalescing(now)
	}()
	if !coalescing {
		l.sendWrites(ctx)
	}
	for k, i := range aside {
		if err := l.setAside(ctx, recs[i], rejs[k]); err != nil {
			return err
		}
	}
	return nil
}

// setAside stores rec in the DLQ, retrying until it is durable there, and tells the
// core, which holds the checkpoint below it until then.
func (l *Lane) setAside(ctx context.Context, rec fold.Record, rej fold.Rejection) error {
	if err := l.untilDone(ctx, "store in the DLQ", func() error { return l.d.DLQ.Send(ctx, rec, rej) }); err != nil {
		return err
	}
	l.d.Metrics.DLQ.WithLabelValues(rej.Reason).Inc()
	l.mu.Lock()
	l.core.AsideStored(rec.Seq)
	l.mu.Unlock()
	signal(l.settled)
	return nil
}

// waitRoom holds the delivery path while MaxDirty orders wait for their writes.
func (l *Lane) waitRoom(ctx context.Context) error {
	return l.waitFor(ctx, func() bool { return !l.core.Full() })
}

// waitFor waits until cond, evaluated under mu, holds, kicking the writer.
func (l *Lane) waitFor(ctx context.Context, cond func() bool) error {
	tick := time.NewTicker(l.core.CoalesceTick())
	defer tick.Stop()
	for {
		l.mu.Lock()
		ok := cond()
		l.mu.Unlock()
		if ok {
			return nil
		}
		signal(l.kick)
		select {
		case <-l.settled:
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// flush waits until every handled event's effect is durable: every order written
// and, unless only the writes matter (a resync, which replays the events a DLQ copy
// is still owed for), every DLQ copy stored. Called on the delivery path.
func (l *Lane) flush(ctx context.Context, writesOnly bool) error {
	l.mu.Lock()
	l.core.SetFlushing(true)
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.core.SetFlushing(false)
		l.mu.Unlock()
	}()
	if writesOnly {
		return l.waitFor(ctx, func() bool { return l.core.Dirty() == 0 })
	}
	return l.waitFor(ctx, l.core.Clean)
}

// Flush waits until every handled event's effect is durable and records the
// checkpoint, or ctx ends.
func (l *Lane) Flush(ctx context.Context) error {
	if err := l.lockDelivery(ctx); err != nil {
		return err
	}
	defer l.unlockDelivery()
	if err := l.flush(ctx, false); err != nil {
		return err
	}
	l.writeCheckpoint(ctx)
	return nil
}

func (l *Lane) lockDelivery(ctx context.Context) error {
	select {
	case l.delivery <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *Lane) tryLockDelivery() bool {
	select {
	case l.delivery <- struct{}{}:
		return true
	default:
		return false
	}
}

func (l *Lane) unlockDelivery() { <-l.delivery }

func (l *Lane) unsync() {
	l.mu.Lock()
	l.core.Unsync()
	l.mu.Unlock()
}

// Run writes snapshots, publishes milestones, records checkpoints and recovers
// the tail until ctx ends.
func (l *Lane) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){l.runWriter, l.collectAcks, l.runRebuilds, l.runRelay, l.runCheckpoints, l.watchTail} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx)
		}()
	}
	wg.Wait()
}

// signal wakes the goroutine waiting on ch, if any, without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// untilDone calls fn until it succeeds or ctx ends, logging every tenth failure so
// a stalled lane is visible: a lane cannot skip what fn does.
func (l *Lane) untilDone(ctx context.Context, what string, fn func() error) error {
	return retry.Do(ctx, retry.Backoff{Initial: l.cfg.RetryBackoff, Max: 10 * l.cfg.RetryBackoff}, func(ctx context.Context, attempt int) error {
		err := fn()
		if err != nil && attempt%10 == 0 {
			l.log.Warn("retrying", "what", what, "attempt", attempt+1, "err", err)
		}
		return err
	})
}
