package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/retry"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// The I/O a lane needs, declared here where it is used; the composition root wires
// the JetStream implementations (LaneLog, snapshot.Store, DLQ, MilestonePublisher).

// OrderLog reads one order's WAL events, after < seq <= upto.
type OrderLog interface {
	ReadOrder(ctx context.Context, orderID string, after, upto uint64, fn func(fold.Record) error) error
}

// LaneLog reads a lane's partition of the WAL and keeps its positions.
type LaneLog interface {
	// ReadLane calls fn for the partition's records with from <= seq <= upto.
	ReadLane(ctx context.Context, partition int, from, upto uint64, fn func(fold.Record) error) error
	// ReadSeq returns the WAL record at seq, headers included.
	ReadSeq(ctx context.Context, seq uint64) (fold.Record, error)
	// Positions are where the lane consumer stands.
	Positions(ctx context.Context, partition int) (Positions, error)
	// Checkpoint reads the lane's checkpoint (0 when there is none).
	Checkpoint(ctx context.Context, partition int) (uint64, error)
	// SaveCheckpoint records it.
	SaveCheckpoint(ctx context.Context, partition int, pos uint64) error
}

// SnapshotStore reads and compare-and-sets snapshots.
type SnapshotStore interface {
	// GetRaw returns the stored value (nil when missing, deleted or expired) and the
	// revision a write must expect.
	GetRaw(ctx context.Context, orderID string) ([]byte, uint64, error)
	WriteAsync(orderID string, data []byte, rev uint64, terminal bool) (jetstream.PubAckFuture, error)
}

// DeadLetters stores a record the lane cannot fold, with the reason.
type DeadLetters interface {
	Send(ctx context.Context, rec fold.Record, rej fold.Rejection) error
}

// MilestoneSink publishes milestones, pipelined: PublishAsync, then Settle.
type MilestoneSink interface {
	PublishAsync(orderID, kind string) (jetstream.PubAckFuture, error)
	Settle(ctx context.Context, f jetstream.PubAckFuture) error
}

// Deps are the I/O a lane needs.
type Deps struct {
	Orders     OrderLog
	Lanes      LaneLog
	Snapshots  SnapshotStore
	DLQ        DeadLetters
	Milestones MilestoneSink
	Metrics    *Metrics
	Logger     *slog.Logger
	// Failpoints crash the process at named points in fault tests; nil in production.
	Failpoints Failpoints
}

// JetStreamLanes is LaneLog over ORDER_EVENTS, the lane consumers and KV order_lanes.
type JetStreamLanes struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	ckpts  jetstream.KeyValue
}

// NewJetStreamLanes binds to the WAL stream and the checkpoint bucket.
func NewJetStreamLanes(ctx context.Context, js jetstream.JetStream) (*JetStreamLanes, error) {
	s, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return nil, fmt.Errorf("open WAL stream: %w", err)
	}
	kv, err := js.KeyValue(ctx, topology.LanesBucket)
	if err != nil {
		return nil, fmt.Errorf("open lane checkpoints: %w", err)
	}
	return &JetStreamLanes{js: js, stream: s, ckpts: kv}, nil
}

// ReadLane implements LaneLog.
func (j *JetStreamLanes) ReadLane(ctx context.Context, partition int, from, upto uint64, fn func(fold.Record) error) error {
	return wal.ReadRange(ctx, j.js, topology.LaneSubject(partition), from, upto, fn)
}

// ReadSeq implements LaneLog.
func (j *JetStreamLanes) ReadSeq(ctx context.Context, seq uint64) (fold.Record, error) {
	m, err := j.stream.GetMsg(ctx, seq)
	if err != nil {
		return fold.Record{}, fmt.Errorf("read WAL %d: %w", seq, err)
	}
	return fold.Record{Seq: m.Sequence, Subject: m.Subject, Data: m.Data, Header: m.Header, Time: m.Time}, nil
}

// Positions is where a lane consumer stands.
type Positions struct {
	// Delivered is the highest WAL sequence it delivered, to anyone.
	Delivered uint64
	// AckFloor is the WAL sequence at or below which everything is acked, and
	// AckFloorDelivery the consumer (delivery) sequence that acked it.
	AckFloor, AckFloorDelivery uint64
}

// Positions implements LaneLog.
func (j *JetStreamLanes) Positions(ctx context.Context, partition int) (Positions, error) {
	c, err := j.js.Consumer(ctx, topology.EventsStream, topology.LaneConsumer(partition))
	if err != nil {
		return Positions{}, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return Positions{}, err
	}
	return Positions{Delivered: info.Delivered.Stream, AckFloor: info.AckFloor.Stream, AckFloorDelivery: info.AckFloor.Consumer}, nil
}

// Checkpoint implements LaneLog.
func (j *JetStreamLanes) Checkpoint(ctx context.Context, partition int) (uint64, error) {
	kve, err := j.ckpts.Get(ctx, topology.LaneConsumer(partition))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return topology.ParseCheckpoint(kve.Value())
}

// SaveCheckpoint implements LaneLog. A checkpoint only ever rises: the write is a
// compare-and-set on the value read, so an instance that lost the lane and still
// writes an older position cannot take it back.
func (j *JetStreamLanes) SaveCheckpoint(ctx context.Context, partition int, pos uint64) error {
	key := topology.LaneConsumer(partition)
	return retry.Do(ctx, retry.CompareAndSet, func(ctx context.Context, _ int) error {
		kve, err := j.ckpts.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = j.ckpts.Create(ctx, key, topology.FormatCheckpoint(pos))
			return err
		case err != nil:
			return err
		}
		if have, perr := topology.ParseCheckpoint(kve.Value()); perr == nil && have >= pos {
			return nil
		}
		_, err = j.ckpts.Update(ctx, key, topology.FormatCheckpoint(pos), kve.Revision())
		return err
	})
}
