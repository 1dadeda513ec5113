package app

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/pipelines/topology"
)

// WaitDrained waits until the status pipeline has made every WAL event durable: no
// lane consumer has pending or unacknowledged events and every lane checkpoint has
// reached its partition's newest event.
func WaitDrained(ctx context.Context, js jetstream.JetStream, timeout time.Duration) error {
	s, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return err
	}
	parts, err := topology.PartitionsOf(s.CachedInfo().Config)
	if err != nil {
		return err
	}
	ckpts, err := js.KeyValue(ctx, topology.LanesBucket)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		behind, err := lanesBehind(ctx, s, ckpts, parts)
		if err != nil {
			return err
		}
		if behind == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("status pipeline still %d events behind after %s: is orderflow serve running?", behind, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// lanesBehind is a progress measure: events not yet handled plus WAL positions
// handled but not yet covered by a checkpoint.
func lanesBehind(ctx context.Context, s jetstream.Stream, ckpts jetstream.KeyValue, parts int) (uint64, error) {
	var behind uint64
	for p := 0; p < parts; p++ {
		c, err := s.Consumer(ctx, topology.LaneConsumer(p))
		if err != nil {
			return 0, err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return 0, err
		}
		behind += info.NumPending + uint64(info.NumAckPending)
		var pos uint64
		if e, err := ckpts.Get(ctx, topology.LaneConsumer(p)); err == nil {
			fmt.Sscanf(string(e.Value()), "%d", &pos)
		}
		// With nothing pending, the ack floor is the partition's newest event; the
		// checkpoint says its effect is durable too.
		if floor := info.AckFloor.Stream; pos < floor {
			behind += floor - pos
		}
	}
	return behind, nil
}
