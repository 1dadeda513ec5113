package handlers

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/lanecore"
	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
)

type pendingWrite struct {
	w      lanecore.Write
	future jetstream.PubAckFuture
}

// runWriter sends the snapshot writes the core says are due, as pipelined
// compare-and-set publishes, and hands rebuilds to runRebuilds. Several events of
// one order between two writes coalesce into one write.
func (l *Lane) runWriter(ctx context.Context) {
	tick := time.NewTicker(l.core.CoalesceTick())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		case <-tick.C:
		}
		l.sendWrites(ctx)
	}
}

// sendWrites sends what is due. The writer calls it on its kicks and ticks; a lane
// that keeps up calls it right after folding, which spares live events a goroutine
// hand-off on their way to KV. Concurrent calls are safe: the core hands each
// write out once.
func (l *Lane) sendWrites(ctx context.Context) {
	var writes []lanecore.Write
	var rebuilds []lanecore.Rebuild
	var ckptDue bool
	func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		now := time.Now()
		writes = l.core.Writes(now)
		rebuilds = l.core.Rebuilds()
		l.rebuildQ = append(l.rebuildQ, rebuilds...)
		ckptDue = l.core.CheckpointDue(now)
	}()
	if ckptDue {
		signal(l.ckptKick)
	}
	if len(rebuilds) > 0 {
		signal(l.rebuildKick)
	}
	for i, w := range writes {
		f, err := l.d.Snapshots.WriteAsync(w.OrderID, w.Data, w.Rev, w.Terminal)
		if err != nil {
			l.log.Warn("snapshot writes not sent, retrying", "order", w.OrderID, "writes", len(writes)-i, "err", err)
			l.retryLater(writes[i:])
			return
		}
		select {
		case l.acks <- pendingWrite{w, f}:
		case <-ctx.Done():
			// Stopping: the sent write's result is never read, nor are the rest sent.
			l.retryLater(writes[i:])
			return
		}
	}
}

// retryLater hands writes that did not go out back to the core after the retry
// backoff; until then their orders count as in flight, so nothing spins on them.
func (l *Lane) retryLater(writes []lanecore.Write) {
	time.AfterFunc(l.cfg.RetryBackoff, func() {
		l.mu.Lock()
		for _, w := range writes {
			l.core.WriteFailed(w, false)
		}
		l.mu.Unlock()
		signal(l.kick)
	})
}

// collectAcks settles write results in the order they were sent.
func (l *Lane) collectAcks(ctx context.Context) {
	for {
		var p pendingWrite
		select {
		case p = <-l.acks:
		case <-ctx.Done():
			return
		}
		select {
		case ack := <-p.future.Ok():
			l.written(p.w, ack.Sequence)
		case err := <-p.future.Err():
			l.writeFailed(p.w, err)
		case <-ctx.Done():
			return
		}
		signal(l.settled)
	}
}

func (l *Lane) written(w lanecore.Write, rev uint64) {
	l.mu.Lock()
	res := l.core.WriteOK(w, rev, time.Now())
	l.mu.Unlock()
	l.d.Metrics.SnapshotWrites.WithLabelValues("ok").Inc()
	if !res.DirtyAt.IsZero() {
		l.d.Metrics.EndToEndSeconds.Observe(time.Since(res.DirtyAt).Seconds())
	}
	if res.Again {
		signal(l.kick)
	}
	if len(res.Relay) == 0 {
		return
	}
	// The write made these milestones durable in the outbox: now they may go out.
	l.d.Failpoints.Hit(FailAfterSnapshotWrite)
	l.mu.Lock()
	for _, kind := range res.Relay {
		l.relayQueue = append(l.relayQueue, milestone{w.OrderID, kind})
	}
	l.mu.Unlock()
	signal(l.relayKick)
}

func (l *Lane) writeFailed(w lanecore.Write, err error) {
	if !errors.Is(snapshot.Classify(err), snapshot.ErrConflict) {
		l.d.Metrics.SnapshotWrites.WithLabelValues("error").Inc()
		l.log.Warn("snapshot write failed, retrying", "order", w.OrderID, "err", err)
		l.retryLater([]lanecore.Write{w})
		return
	}
	l.mu.Lock()
	l.core.WriteFailed(w, true)
	l.mu.Unlock()
	{
		// Someone else wrote the key (another instance that held this lane, an
		// operator's replay, or the order existed before this lane assumed it new):
		// the writer hands the rebuild out.
		l.d.Metrics.SnapshotWrites.WithLabelValues("conflict").Inc()
		signal(l.kick)
	}
}

// runRebuilds rebuilds orders from what is durable: the snapshot in KV and the
// order's WAL events after it. It has its own goroutine, so the round trips never
// hold up writes, and the core holds the order's new events until it is done.
func (l *Lane) runRebuilds(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.rebuildKick:
		}
		l.mu.Lock()
		jobs := l.rebuildQ
		l.rebuildQ = nil
		l.mu.Unlock()
		for _, job := range jobs {
			if err := l.rebuild(ctx, job); err != nil {
				if ctx.Err() != nil {
					return
				}
				l.log.Warn("order rebuild failed, retrying", "order", job.OrderID, "err", err)
				id := job.OrderID
				time.AfterFunc(l.cfg.RetryBackoff, func() {
					l.mu.Lock()
					l.core.RebuildFailed(id)
					l.mu.Unlock()
					signal(l.kick)
				})
			}
		}
		signal(l.kick)
	}
}

func (l *Lane) rebuild(ctx context.Context, job lanecore.Rebuild) error {
	data, rev, err := l.d.Snapshots.GetRaw(ctx, job.OrderID)
	if err != nil {
		return err
	}
	var after uint64
	if data != nil {
		st, ob, err := snapshot.Decode(data)
		if err == nil {
			// A state this build can read but not write again (practically never)
			// is refolded from the start, like an unreadable one.
			_, err = snapshot.Encode(st, ob)
		}
		if err != nil {
			// The key holds something this build cannot read (corruption, a hand edit,
			// a newer format): refold the order from the WAL and overwrite it.
			l.log.Error("unreadable snapshot, refolding the order from the WAL", "order", job.OrderID, "err", err)
			l.d.Metrics.SnapshotWrites.WithLabelValues("unreadable").Inc()
			data = nil
		} else {
			after = st.WalSeq()
		}
	}
	var recs []fold.Record
	if err := l.d.Orders.ReadOrder(ctx, job.OrderID, after, job.UpTo, func(r fold.Record) error {
		recs = append(recs, r)
		return nil
	}); err != nil {
		return err
	}
	// A missing, deleted or expired key (a terminal snapshot past its TTL, an
	// archived order) folds the order's WAL from the start.
	base := func() (*resolver.State, outbox.Outbox) {
		if data == nil {
			return nil, outbox.Outbox{}
		}
		st, ob, _ := snapshot.Decode(data)
		return st, ob
	}
	l.mu.Lock()
	aside := l.core.Rebuilt(job.OrderID, base, rev, recs)
	l.mu.Unlock()
	// The core now owes these DLQ copies, and holds the checkpoint below them: store
	// them whatever it takes (only stopping ends the tries).
	for _, a := range aside {
		rec, ok := recordAt(recs, a.Seq)
		if !ok {
			if err := l.untilDone(ctx, "read an event to set aside", func() (err error) {
				rec, err = l.d.Lanes.ReadSeq(ctx, a.Seq)
				return err
			}); err != nil {
				return err
			}
		}
		l.log.Error("event set aside: the order cannot take it", "order", job.OrderID, "seq", a.Seq, "reason", a.Rejection.Reason)
		if err := l.setAside(ctx, rec, a.Rejection); err != nil {
			return err
		}
	}
	return nil
}

func recordAt(recs []fold.Record, seq uint64) (fold.Record, bool) {
	for _, r := range recs {
		if r.Seq == seq {
			return r, true
		}
	}
	return fold.Record{}, false
}
