package regions

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/internal/retry"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// ForwarderConsumer is the durable consumer of ORDER_MILESTONES_QUEUE that moves
// this region's milestones to the home's ledger.
const ForwarderConsumer = "to-milestones-home"

// forwardTimeout bounds one batch's wait for the home's acknowledgements: a cut link
// that drops packets instead of refusing must not hold the queue for long.
const forwardTimeout = 5 * time.Second

// Forward moves ORDER_MILESTONES_QUEUE, this region's milestones on their way to
// the milestones home (pipelines/topology milestones.go), into the home's ledger
// until ctx ends. Each milestone leaves the queue only once the home stored it or
// already had it ("subject full": another region, or an earlier try, was first), so
// a home that is away only delays them: they wait in the queue, which the lanes
// keep filling, and go as soon as the home answers again. Several instances of a
// region may run it: they share the consumer. A region without the queue (the
// home) checks now and then whether one appeared (after a promotion, the old
// queue drains into the new ledger here).
func Forward(ctx context.Context, nc *nats.Conn, log *slog.Logger) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(forwardTimeout))
	if err != nil {
		log.Error("milestone forwarder", "err", err)
		return
	}
	relay := handlers.NewMilestonePublisher(js, topology.MilestonesRelayPrefix)
	var cons jetstream.Consumer
	open := func(ctx context.Context, _ int) error {
		cons, err = js.CreateOrUpdateConsumer(ctx, topology.MilestonesQueueStream, jetstream.ConsumerConfig{
			Durable: ForwarderConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
			Description: "orderflow: forwards this region's milestones to the milestones home",
		})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			log.Warn("milestone forwarder: open the queue", "err", err)
		}
		return err
	}
	forward := func(ctx context.Context, _ int) error {
		err := forwardBatch(ctx, cons, relay)
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return retry.Permanent(err) // the queue or its consumer went away: open it again
		}
		if err != nil && ctx.Err() == nil {
			log.Debug("milestones wait for the milestones home", "err", err)
		}
		return err
	}
	for ctx.Err() == nil {
		if retry.Do(ctx, retry.Backoff{Initial: 5 * time.Second}, open) != nil {
			continue
		}
		// Batch after batch, backing off while the home does not answer, until the
		// queue or its consumer goes away (or ctx ends).
		for retry.Do(ctx, retry.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}, forward) == nil {
		}
	}
}

// forwardBatch forwards what the queue holds now (up to a batch); the first failure
// is returned, and the failed ones are delivered again.
func forwardBatch(ctx context.Context, cons jetstream.Consumer, relay *handlers.MilestonePublisher) error {
	batch, err := cons.Fetch(256, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		return err
	}
	var msgs []jetstream.Msg
	var futures []jetstream.PubAckFuture
	var firstErr error
	// Not a range over the channel: it is not closed when the connection closes
	// under it (serve's shutdown), and ctx must end the wait.
	ch := batch.Messages()
receive:
	for {
		var m jetstream.Msg
		select {
		case <-ctx.Done():
			return ctx.Err()
		case msg, ok := <-ch:
			if !ok {
				break receive
			}
			m = msg
		}
		kind, orderID, ok := strings.Cut(strings.TrimPrefix(m.Subject(), topology.MilestonesQueuePrefix+"."), ".")
		if !ok {
			_ = m.Term() // not a milestone: nothing to forward
			continue
		}
		f, err := relay.PublishAsync(orderID, kind)
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			_ = m.Nak()
			continue
		}
		msgs, futures = append(msgs, m), append(futures, f)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		firstErr = cmpErr(firstErr, err)
	}
	sctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	var stored []jetstream.Msg
	for i, m := range msgs {
		if err := relay.Settle(sctx, futures[i]); err != nil {
			firstErr = cmpErr(firstErr, err)
			_ = m.Nak()
			continue
		}
		stored = append(stored, m)
	}
	if len(stored) == 0 {
		return firstErr
	}
	// The queue must drop them before the next fetch, or a restart would forward
	// them again (harmless, but counted as waiting): one connection's acks are
	// applied in order, so waiting for the last one's confirmation waits for all.
	for _, m := range stored[:len(stored)-1] {
		if err := m.Ack(); err != nil {
			firstErr = cmpErr(firstErr, err)
		}
	}
	if err := stored[len(stored)-1].DoubleAck(ctx); err != nil {
		firstErr = cmpErr(firstErr, err)
	}
	return firstErr
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
