package clickhouse

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/pipelines/topology"
)

// ErrIncompatibleConsumer: a consumer of the sink's name exists that the sink cannot
// use as it is (another ack policy or filter); the error says what to do.
var ErrIncompatibleConsumer = errors.New("incompatible sink consumer")

// ConsumerConfig is the sink's durable consumer: the whole WAL in stream order, one
// ack per batch (AckAll: acking the newest message of a batch acks the batch), and
// one pinned instance at a time.
func ConsumerConfig(cfg Config) jetstream.ConsumerConfig {
	cfg.SetDefaults()
	return jetstream.ConsumerConfig{
		Durable:        cfg.Consumer,
		Description:    "orderflow ClickHouse sink",
		FilterSubject:  topology.WALPrefix + ".>",
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckAllPolicy,
		AckWait:        cfg.AckWait,
		MaxDeliver:     -1,
		MaxAckPending:  cfg.MaxAckPending,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{ConsumerGroup},
		PinnedTTL:      cfg.PinnedTTL,
	}
}

// EnsureConsumer creates the sink's durable consumer on ORDER_EVENTS, or brings an
// existing one to the wanted limits. It keeps an existing consumer's start position
// (a replay may have reset it) and refuses to change its ack policy.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	want := ConsumerConfig(cfg)
	s, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return fmt.Errorf("sink consumer: stream %s: %w", topology.EventsStream, err)
	}
	c, err := s.Consumer(ctx, want.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		if _, err := s.CreateConsumer(ctx, want); err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
			return fmt.Errorf("create sink consumer %s: %w", want.Durable, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("look up sink consumer %s: %w", want.Durable, err)
	}
	have := c.CachedInfo().Config
	if have.AckPolicy != want.AckPolicy || have.FilterSubject != want.FilterSubject {
		return fmt.Errorf("%w: %s has ack policy %s and filter %q, wanted %s and %q: delete it to rebuild ClickHouse from the WAL",
			ErrIncompatibleConsumer, want.Durable, have.AckPolicy, have.FilterSubject, want.AckPolicy, want.FilterSubject)
	}
	// Start from what is there and set only what the sink owns: the start position
	// (a replay may have reset it) and anything an operator or a tool set stay.
	upd := have
	upd.Description, upd.AckWait, upd.MaxDeliver, upd.MaxAckPending = want.Description, want.AckWait, want.MaxDeliver, want.MaxAckPending
	upd.PriorityPolicy, upd.PriorityGroups, upd.PinnedTTL = want.PriorityPolicy, want.PriorityGroups, want.PinnedTTL
	if _, err := s.UpdateConsumer(ctx, upd); err != nil {
		return fmt.Errorf("update sink consumer %s: %w", want.Durable, err)
	}
	return nil
}

// ResetConsumer makes the sink re-read the WAL from fromSeq (1: everything) by
// recreating its consumer there. Rows are idempotent, so a replay never double
// counts. The sink notices the new consumer and rebuilds its state.
func ResetConsumer(ctx context.Context, js jetstream.JetStream, cfg Config, fromSeq uint64) error {
	want := ConsumerConfig(cfg)
	s, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return fmt.Errorf("reset sink consumer: %w", err)
	}
	if err := s.DeleteConsumer(ctx, want.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("reset sink consumer %s: %w", want.Durable, err)
	}
	if fromSeq > 1 {
		want.DeliverPolicy, want.OptStartSeq = jetstream.DeliverByStartSequencePolicy, fromSeq
	}
	if _, err := s.CreateConsumer(ctx, want); err != nil {
		return fmt.Errorf("reset sink consumer %s: %w", want.Durable, err)
	}
	return nil
}
