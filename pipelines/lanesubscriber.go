package pipelines

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// laneSubscriber is a Watermill subscriber whose every message carries one pulled
// batch of a lane's deliveries, in order, as typed values in the message's context.
// One handler call per batch instead of per event is what lets a lane keep up with
// raw consume: Watermill's per-message hand-off (a goroutine, a channel round trip,
// an ack wait) is paid once per batch. A batch is whatever the consumer has
// buffered when the lane is ready, up to maxBatch, so a live lane gets batches of
// one and waits for nothing.
//
// When Watermill acks the message, every event of the batch is acked to JetStream
// (with one ack on an AckAll consumer); a nack naks them all, and JetStream redelivers them (the lane handles a
// redelivery as a skipped consumer sequence).
type laneSubscriber struct {
	js       jetstream.JetStream
	opts     []jetstream.PullConsumeOpt
	maxBatch int

	mu       sync.Mutex
	consumes []jetstream.ConsumeContext
	closing  chan struct{}
	closed   bool
	loops    sync.WaitGroup
}

func newLaneSubscriber(js jetstream.JetStream, maxBatch int, opts ...jetstream.PullConsumeOpt) *laneSubscriber {
	return &laneSubscriber{js: js, opts: opts, maxBatch: maxBatch, closing: make(chan struct{})}
}

type batchKey struct{}

// batchOf returns the deliveries a lane message carries.
func batchOf(m *message.Message) []handlers.Delivery {
	b, _ := m.Context().Value(batchKey{}).([]handlers.Delivery)
	return b
}

// Subscribe binds to topic, the durable lane consumer that topology.Provision
// created; it never creates or deletes it: the durable consumer is the lane's
// position.
func (s *laneSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	c, err := s.js.Consumer(ctx, topology.EventsStream, topic)
	if err != nil {
		return nil, fmt.Errorf("lane consumer %s (run provisioning first): %w", topic, err)
	}
	ackAll := c.CachedInfo().Config.AckPolicy == jetstream.AckAllPolicy
	in := make(chan jetstream.Msg, 2*s.maxBatch)
	cc, err := c.Consume(func(m jetstream.Msg) {
		select {
		case in <- m:
		case <-s.closing:
		}
	}, s.opts...)
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", topic, err)
	}
	s.mu.Lock()
	s.consumes = append(s.consumes, cc)
	s.mu.Unlock()
	out := make(chan *message.Message)
	s.loops.Add(1)
	go func() {
		defer s.loops.Done()
		defer close(out)
		s.batches(ctx, cc, ackAll, in, out)
	}()
	return out, nil
}

// batches turns buffered deliveries into one message per batch and settles each
// batch's acks before taking the next, so a lane never has two batches in hand.
func (s *laneSubscriber) batches(ctx context.Context, cc jetstream.ConsumeContext, ackAll bool, in <-chan jetstream.Msg, out chan<- *message.Message) {
	batch := make([]jetstream.Msg, 0, s.maxBatch)
	for {
		batch = batch[:0]
		select {
		case m := <-in:
			batch = append(batch, m)
		case <-cc.Closed():
			// Stopped: finish what the drain handed over, then end.
			select {
			case m := <-in:
				batch = append(batch, m)
			default:
				return
			}
		case <-s.closing:
			return
		case <-ctx.Done():
			return
		}
	fill:
		for len(batch) < s.maxBatch {
			select {
			case m := <-in:
				batch = append(batch, m)
			default:
				break fill
			}
		}
		dls := make([]handlers.Delivery, 0, len(batch))
		for _, m := range batch {
			if dl, ok := deliveryOf(m); ok {
				dls = append(dls, dl)
			}
		}
		if len(dls) == 0 {
			continue
		}
		wm := message.NewMessage(strconv.FormatUint(dls[0].Record.Seq, 10), nil)
		wm.SetContext(context.WithValue(ctx, batchKey{}, dls))
		select {
		case out <- wm:
		case <-s.closing:
			return
		}
		select {
		case <-wm.Acked():
			// Fire and forget: the lane checkpoint, not the ack, makes effects durable.
			if ackAll {
				// The newest event acks all below it; a redelivery at the end of a
				// batch may be older than what came before it.
				_ = batch[newest(dls, batch)].Ack()
				break
			}
			for _, m := range batch {
				_ = m.Ack()
			}
		case <-wm.Nacked():
			for _, m := range batch {
				_ = m.Nak()
			}
		case <-s.closing:
			return
		case <-ctx.Done():
			return // stopping: the batch in hand is redelivered
		}
	}
}

// newest is the index in batch of the message with the highest WAL sequence. dls
// and batch are index-aligned unless a message had no metadata (then the last).
func newest(dls []handlers.Delivery, batch []jetstream.Msg) int {
	if len(dls) != len(batch) {
		return len(batch) - 1
	}
	best := 0
	for i, dl := range dls {
		if dl.Record.Seq > dls[best].Record.Seq {
			best = i
		}
	}
	return best
}

// deliveryOf reads what a lane needs from a JetStream delivery. A message without
// JetStream metadata is not a stored WAL event; it cannot happen on a pull
// consumer, and is left out.
func deliveryOf(m jetstream.Msg) (handlers.Delivery, bool) {
	meta, err := m.Metadata()
	if err != nil {
		return handlers.Delivery{}, false
	}
	rec := fold.Record{Seq: meta.Sequence.Stream, Subject: m.Subject(), Data: m.Data(), Time: meta.Timestamp}
	// Headers travel only when the lane must reject the event for them (a repeated
	// or reserved header); the DLQ reads the stored headers back from the WAL, so the
	// common path copies none. The pinned consumer appends its own Nats-Pin-Id: drop
	// that one value so the lane sees what was stored, as every other reader does.
	h := wal.StoredHeaders(m.Headers())
	for k, vs := range h {
		if len(vs) > 1 || fold.ReservedHeader(k) {
			rec.Header = h
			break
		}
	}
	return handlers.Delivery{Record: rec, ConsumerSeq: meta.Sequence.Consumer, Pending: meta.NumPending}, true
}

// stopConsuming stops pulling; the deliveries already received are still handed
// over, and the batch loops end once they are settled.
func (s *laneSubscriber) stopConsuming() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cc := range s.consumes {
		cc.Drain()
	}
}

// Close stops everything at once; a batch in hand is left unacked and JetStream
// redelivers it.
func (s *laneSubscriber) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
		for _, cc := range s.consumes {
			cc.Stop()
		}
	}
	s.mu.Unlock()
	s.loops.Wait()
	return nil
}
