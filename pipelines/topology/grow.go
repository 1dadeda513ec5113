package topology

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Growing the partition count in place (README, "Growing partitions later").
//
// ORDER_EVENTS keeps its name, its events and their sequences: only the subject
// transform changes, so events stored from then on land on the new partitions
// while the ones before keep the subjects they were stored with. Sequences not
// changing is what keeps every snapshot's wal_seq, every lane checkpoint's meaning,
// the ClickHouse rows (keyed by wal_seq) and the archive valid. What no lane may do
// is fold an order's old events on one lane while another folds its new ones, so
// the lanes are stopped, every event up to the switch is folded apart from them
// (internal/services/partitions), and the new lanes start after it.

// ErrLanesRunning means a lane consumer still has an instance pulling from it.
var ErrLanesRunning = errors.New("lanes are running")

// Repartition sets ORDER_EVENTS' partitioning to to partitions and leaves every
// other setting as it is. It returns the count the stream had.
func Repartition(ctx context.Context, js jetstream.JetStream, to int) (int, error) {
	s, err := js.Stream(ctx, EventsStream)
	if err != nil {
		return 0, fmt.Errorf("look up stream %s: %w", EventsStream, err)
	}
	cfg := s.CachedInfo().Config
	from, err := PartitionsOf(cfg)
	if err != nil {
		return 0, err
	}
	if from == to {
		return from, nil
	}
	want := Topology{Partitions: to}.EventsConfig().SubjectTransform
	cfg.SubjectTransform = &jetstream.SubjectTransformConfig{Source: cfg.SubjectTransform.Source, Destination: want.Destination}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return from, fmt.Errorf("repartition %s to %d: %w", EventsStream, to, err)
	}
	return from, nil
}

// LaneConsumersIdle fails with ErrLanesRunning while any lane consumer of the
// first n has a pull waiting or a pinned client: an instance holds that lane.
func LaneConsumersIdle(ctx context.Context, js jetstream.JetStream, n int) error {
	for p := range n {
		c, err := js.Consumer(ctx, EventsStream, LaneConsumer(p))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("look up lane %d: %w", p, err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			return fmt.Errorf("lane %d: %w", p, err)
		}
		if info.NumWaiting > 0 {
			return fmt.Errorf("%w: %s has %d pulls waiting: stop every orderflow serve first", ErrLanesRunning, LaneConsumer(p), info.NumWaiting)
		}
		for _, g := range info.PriorityGroups {
			if g.PinnedClientID != "" {
				return fmt.Errorf("%w: %s is pinned to a client (since %s): stop every orderflow serve and wait out --lane-failover",
					ErrLanesRunning, LaneConsumer(p), g.PinnedTS.Format("15:04:05"))
			}
		}
	}
	return nil
}

// StartLanesAt replaces the lane consumers of the first old partitions with
// t.Partitions lane consumers that start at WAL sequence seq, and sets each new
// lane's checkpoint to seq-1. The caller has made every event below seq durable
// (snapshot written, DLQ copy stored): that is what a checkpoint says.
func (t Topology) StartLanesAt(ctx context.Context, js jetstream.JetStream, old int, seq uint64) error {
	t.SetDefaults()
	s, err := js.Stream(ctx, EventsStream)
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", EventsStream, err)
	}
	for p := range max(old, t.Partitions) {
		if err := s.DeleteConsumer(ctx, LaneConsumer(p)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete %s: %w", LaneConsumer(p), err)
		}
	}
	kv, err := js.KeyValue(ctx, LanesBucket)
	if err != nil {
		return fmt.Errorf("open %s: %w", LanesBucket, err)
	}
	for p := range t.Partitions {
		// Checkpoint first: a lane starting on its new consumer must find it.
		if _, err := kv.Put(ctx, LaneConsumer(p), FormatCheckpoint(seq-1)); err != nil {
			return fmt.Errorf("checkpoint %s: %w", LaneConsumer(p), err)
		}
		cfg := t.LaneConsumerConfig(p)
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq
		if _, err := s.CreateConsumer(ctx, cfg); err != nil {
			return fmt.Errorf("create %s: %w", LaneConsumer(p), err)
		}
	}
	return nil
}
