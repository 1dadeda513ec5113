package pipelines

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/pipelines/topology"
)

// WaitDrained waits until the status pipeline has made durable every WAL event
// stored before the call: each lane's checkpoint has reached the newest event its
// partition held then. Events published without waiting for JetStream's ack may
// not be stored yet; wait for the ack (or for the stream to hold them) first. It
// watches the checkpoints rather than polling, so it returns as soon as the last
// one is written and costs the server nothing while it waits.
func WaitDrained(ctx context.Context, js jetstream.JetStream, timeout time.Duration) error {
	s, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return err
	}
	parts, err := topology.PartitionsOf(s.CachedInfo().Config)
	if err != nil {
		return err
	}
	target := make(map[string]uint64, parts)
	for p := 0; p < parts; p++ {
		m, err := s.GetLastMsgForSubject(ctx, topology.LaneSubject(p))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			continue // an empty partition has nothing to wait for
		case err != nil:
			return err
		}
		target[topology.LaneConsumer(p)] = m.Sequence
	}
	ckpts, err := js.KeyValue(ctx, topology.LanesBucket)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	w, err := ckpts.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	reached := map[string]uint64{}
	// lanesBehind counts the lanes whose checkpoint is short of its target.
	lanesBehind := func() (n int) {
		for lane, t := range target {
			if reached[lane] < t {
				n++
			}
		}
		return n
	}
	for lanesBehind() > 0 {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("the watch of the lane checkpoints ended")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue // the end of the initial values, or a deleted key
			}
			// A checkpoint only moves forward; a lower value is a stale write (an
			// instance that lost the lane), not lost progress.
			if pos, err := topology.ParseCheckpoint(e.Value()); err == nil {
				reached[e.Key()] = max(reached[e.Key()], pos)
			}
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("%d of %d lanes have not checkpointed the WAL's newest events within %s: is orderflow serve running?", lanesBehind(), len(target), timeout)
			}
			return ctx.Err()
		}
	}
	return nil
}
