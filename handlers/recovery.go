package handlers

import (
	"context"
	"fmt"
	"time"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/lanecore"
)

// replayChunk is how many WAL records a replay folds per core call: big enough to
// amortise the lock, small enough that writes flow while it reads.
const replayChunk = 512

// resync makes memory agree with KV: wait for pending writes, forget everything, and
// replay this partition from the durable checkpoint up to the newest message the
// consumer ever delivered, to anyone. Replaying that far, not just to the message
// that triggered the resync, matters: messages an earlier holder of the lane received
// but never acknowledged are redelivered later, out of WAL order, and must find
// themselves already handled; messages never delivered arrive in order.
//
// Unless nobody holds such messages: when next, the delivery in hand, is the first
// after the consumer's ack floor, everything delivered since is in this lane's own
// hands and arrives in order, so the replay stops at the ack floor (what was acked
// but may not be durable yet). A lane starting on a backlog then reads nothing
// twice. Called on the delivery path.
func (l *Lane) resync(ctx context.Context, next Delivery) error {
	if err := l.flush(ctx, true); err != nil {
		return err
	}
	var ckpt uint64
	var pos Positions
	err := l.untilDone(ctx, "read the lane positions", func() (err error) {
		if ckpt, err = l.d.Lanes.Checkpoint(ctx, l.partition); err != nil {
			return err
		}
		pos, err = l.d.Lanes.Positions(ctx, l.partition)
		return err
	})
	if err != nil {
		return err
	}
	upto := pos.Delivered
	if next.ConsumerSeq == pos.AckFloorDelivery+1 && next.Record.Seq > pos.AckFloor {
		upto = pos.AckFloor
	}
	if err := l.replay(ctx, ckpt, upto); err != nil {
		return fmt.Errorf("lane %d replay: %w", l.partition, err)
	}
	return nil
}

// replay forgets the lane's memory and folds its partition's WAL from ckpt+1 up to
// upto, in chunks; the writer sends what each chunk leaves dirty meanwhile. The
// caller has flushed. Called on the delivery path.
func (l *Lane) replay(ctx context.Context, ckpt, upto uint64) error {
	l.mu.Lock()
	l.core.Reset(ckpt)
	l.mu.Unlock()
	var ins []lanecore.Input
	var recs []fold.Record
	foldChunk := func() error {
		if len(recs) == 0 {
			return nil
		}
		if err := l.fold(ctx, ins, recs); err != nil {
			return err
		}
		ins, recs = ins[:0], recs[:0]
		return l.waitRoom(ctx)
	}
	err := l.d.Lanes.ReadLane(ctx, l.partition, ckpt+1, upto, func(r fold.Record) error {
		ins = append(ins, input(r))
		recs = append(recs, r)
		if len(recs) < replayChunk {
			return nil
		}
		return foldChunk()
	})
	if err == nil {
		err = foldChunk()
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	last := l.core.LastSeq()
	l.mu.Unlock()
	if last > ckpt {
		l.log.Info("lane replayed from checkpoint", "from", ckpt+1, "to", last)
	}
	return nil
}

// runCheckpoints records the durable position every CheckpointEvery, and at once
// when a quiet lane asks. Its own goroutine: a checkpoint is a synchronous KV
// write, and the writer must never wait for one.
func (l *Lane) runCheckpoints(ctx context.Context) {
	tick := time.NewTicker(l.cfg.CheckpointEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-l.ckptKick:
		}
		l.writeCheckpoint(ctx)
	}
}

func (l *Lane) writeCheckpoint(ctx context.Context) {
	l.mu.Lock()
	pos, ok := l.core.DurablePosition()
	ok = ok && pos > l.core.LastCheckpoint()
	l.mu.Unlock()
	if !ok {
		return
	}
	if err := l.d.Lanes.SaveCheckpoint(ctx, l.partition, pos); err != nil {
		l.log.Warn("lane checkpoint not written", "err", err)
		return
	}
	l.mu.Lock()
	l.core.Checkpointed(pos)
	l.mu.Unlock()
}

// tailIdle is how long a lane waits without deliveries before checking its tail.
const tailIdle = 2 * time.Second

// watchTail runs recoverTail whenever the lane is idle.
func (l *Lane) watchTail(ctx context.Context) {
	tick := time.NewTicker(tailIdle)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := l.recoverTail(ctx); err != nil && ctx.Err() == nil {
				l.log.Warn("lane tail recovery", "err", err)
			}
		}
	}
}

// recoverTail covers the one case resync cannot: an instance died after its events
// were acknowledged but before their effects were durable, and no new event arrives
// to trigger a resync on whichever instance holds the lane now. When the lane has
// been idle, it compares the consumer's ack floor with the checkpoint and replays the
// gap itself. Any instance may do this: writes are compare-and-set, so a concurrent
// owner and this replay converge on the same snapshots.
func (l *Lane) recoverTail(ctx context.Context) error {
	if !l.tryLockDelivery() {
		return nil // a delivery is being handled: not idle
	}
	defer l.unlockDelivery()
	if time.Since(l.lastHandled) < tailIdle {
		return nil
	}
	pos, err := l.d.Lanes.Positions(ctx, l.partition)
	if err != nil {
		return err
	}
	floor := pos.AckFloor
	stalled := floor == l.lastFloor
	l.lastFloor = floor
	l.mu.Lock()
	synced, last := l.core.Synced(), l.core.LastSeq()
	l.mu.Unlock()
	if synced && last >= floor {
		return nil // this instance holds the lane and has handled everything acked
	}
	if !stalled {
		return nil // someone is making progress on the lane: let its checkpoint catch up
	}
	ckpt, err := l.d.Lanes.Checkpoint(ctx, l.partition)
	if err != nil || ckpt >= floor {
		return err
	}
	l.log.Info("lane recovering its tail", "from", ckpt+1, "to", floor)
	if err := l.flush(ctx, true); err != nil {
		return err
	}
	if err := l.replay(ctx, ckpt, floor); err != nil {
		l.unsync()
		return err
	}
	if err := l.flush(ctx, false); err != nil {
		l.unsync()
		return err
	}
	if err := l.d.Lanes.SaveCheckpoint(ctx, l.partition, floor); err != nil {
		l.unsync()
		return err
	}
	l.mu.Lock()
	l.core.Checkpointed(floor)
	// Deliveries, when they come, start from a fresh resync.
	l.core.Unsync()
	l.mu.Unlock()
	return nil
}
