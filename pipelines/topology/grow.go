package topology

import (
	"context"
	"encoding/json"
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
//
// From before the lane consumers are removed until the new ones exist, key
// GrowthKey in KV order_lanes says a growth is under way, and Provision (so serve)
// refuses to start: a lane started on a half-grown WAL would fold an order's events
// after the switch (new partition) while its events before it (old partition) are
// not folded yet, and the earlier ones would then be skipped as already applied.

// ErrLanesRunning means a lane consumer still has an instance pulling from it.
var ErrLanesRunning = errors.New("lanes are running")

// ErrGrowing means a partition growth started and has not finished.
var ErrGrowing = errors.New("a partition growth is under way")

// GrowthKey is the key in KV order_lanes (next to the lane checkpoints, lane-<n>)
// that holds the Growth under way.
const GrowthKey = "growth"

// Growth is what a partition growth under way wrote down before it changed
// anything, so that a run that stopped can be finished by the next one.
type Growth struct {
	From int `json:"from"`
	To   int `json:"to"`
	// Checkpoints are the old lanes' checkpoints (a lane with a consumer and no
	// checkpoint: 0), read before their consumers were removed: once they are
	// gone, nothing else says which lanes ran.
	Checkpoints map[int]uint64 `json:"checkpoints"`
	// Switch is the WAL sequence the stream was repartitioned at (0 until then).
	Switch uint64 `json:"switch_seq,omitempty"`
}

// GrowthUnderWay returns the growth KV order_lanes records, or nil when none is
// under way (or the bucket does not exist yet).
func GrowthUnderWay(ctx context.Context, js jetstream.JetStream) (*Growth, error) {
	kv, err := js.KeyValue(ctx, LanesBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", LanesBucket, err)
	}
	kve, err := kv.Get(ctx, GrowthKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", LanesBucket, GrowthKey, err)
	}
	var g Growth
	if err := json.Unmarshal(kve.Value(), &g); err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", LanesBucket, GrowthKey, err)
	}
	return &g, nil
}

// RecordGrowth writes g as the growth under way. With create it fails with
// ErrGrowing when one is already recorded (another run got there first).
func RecordGrowth(ctx context.Context, js jetstream.JetStream, g Growth, create bool) error {
	kv, err := js.KeyValue(ctx, LanesBucket)
	if err != nil {
		return fmt.Errorf("open %s: %w", LanesBucket, err)
	}
	v, err := json.Marshal(g)
	if err != nil {
		return err
	}
	if create {
		_, err = kv.Create(ctx, GrowthKey, v)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%w: another orderflow partitions grow started it", ErrGrowing)
		}
	} else {
		_, err = kv.Put(ctx, GrowthKey, v)
	}
	if err != nil {
		return fmt.Errorf("record the growth in %s: %w", LanesBucket, err)
	}
	return nil
}

// EndGrowth removes the record of the growth under way: serve may start again.
func EndGrowth(ctx context.Context, js jetstream.JetStream) error {
	kv, err := js.KeyValue(ctx, LanesBucket)
	if err != nil {
		return fmt.Errorf("open %s: %w", LanesBucket, err)
	}
	if err := kv.Delete(ctx, GrowthKey); err != nil {
		return fmt.Errorf("end the growth in %s: %w", LanesBucket, err)
	}
	return nil
}

// refuseDuringGrowth fails with ErrGrowing while a growth is recorded.
func refuseDuringGrowth(ctx context.Context, js jetstream.JetStream) error {
	g, err := GrowthUnderWay(ctx, js)
	if err != nil {
		return err
	}
	if g != nil {
		return fmt.Errorf("%w: %s is being grown from %d to %d partitions and the growth has not finished "+
			"(its lanes are stopped until it does): run `orderflow partitions grow --to %d` to finish it, then start serve with --partitions %d",
			ErrGrowing, EventsStream, g.From, g.To, g.To, g.To)
	}
	return nil
}

// DeleteLaneConsumers removes the lane consumers of the first n partitions. An
// instance pulling from one loses it: nothing is delivered from it any more.
func DeleteLaneConsumers(ctx context.Context, js jetstream.JetStream, n int) error {
	s, err := js.Stream(ctx, EventsStream)
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", EventsStream, err)
	}
	for p := range n {
		if err := s.DeleteConsumer(ctx, LaneConsumer(p)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete %s: %w", LaneConsumer(p), err)
		}
	}
	return nil
}

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
	if err := DeleteLaneConsumers(ctx, js, max(old, t.Partitions)); err != nil {
		return err
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
