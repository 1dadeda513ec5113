// Package wal reads the write-ahead log, stream ORDER_EVENTS: one order's events
// (for reads that catch up after a snapshot, timelines and conflict repair) and whole
// lane ranges (for lane recovery and replay). It only reads; JetStream is the log.
package wal

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// Record is one stored WAL message; the fold package owns its meaning.
type Record = fold.Record

// pinIDHeader is the header a pinned consumer appends to every delivery.
const pinIDHeader = "Nats-Pin-Id"

// StoredHeaders returns a pinned consumer's delivery headers as the WAL stored
// them: without the last Nats-Pin-Id value, which the consumer added. Every reader
// then classifies the same headers (a producer's own Nats-* headers are rejected).
// It edits h in place: the map belongs to the delivery.
func StoredHeaders(h nats.Header) nats.Header {
	switch pins := h[pinIDHeader]; len(pins) {
	case 0:
	case 1:
		delete(h, pinIDHeader)
	default:
		h[pinIDHeader] = pins[:len(pins)-1]
	}
	return h
}

// Log reads ORDER_EVENTS.
type Log struct {
	stream     jetstream.Stream
	partitions int
}

// Open binds to ORDER_EVENTS and learns its partition count from the stream's subject
// transform, so readers compute the same partition as the server.
func Open(ctx context.Context, js jetstream.JetStream) (*Log, error) {
	s, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return nil, fmt.Errorf("open WAL stream %s: %w", topology.EventsStream, err)
	}
	n, err := topology.PartitionsOf(s.CachedInfo().Config)
	if err != nil {
		return nil, err
	}
	return &Log{stream: s, partitions: n}, nil
}

// Partitions is the number of lanes of the WAL.
func (l *Log) Partitions() int { return l.partitions }

// Partition is the lane of an order: the server's partition() mapping, FNV-1a 32 of
// the order id modulo the partition count.
func Partition(orderID string, partitions int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(orderID))
	return int(h.Sum32() % uint32(partitions))
}

// OrderFilter is the subject filter of every WAL event of one order. Its partition
// token is a wildcard: after `orderflow partitions grow` an order's events before
// the switch keep their old partition and the later ones have the new one.
func (l *Log) OrderFilter(orderID string) string {
	return topology.OrderWALFilter(orderID)
}

// LastSeq is the WAL sequence of the order's newest event, 0 when it has none.
func (l *Log) LastSeq(ctx context.Context, orderID string) (uint64, error) {
	m, err := l.stream.GetLastMsgForSubject(ctx, l.OrderFilter(orderID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last WAL event of %s: %w", orderID, err)
	}
	return m.Sequence, nil
}

// FirstSeq is the WAL sequence of the order's oldest stored event, 0 when it has none.
func (l *Log) FirstSeq(ctx context.Context, orderID string) (uint64, error) {
	m, err := l.stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(l.OrderFilter(orderID)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("first WAL event of %s: %w", orderID, err)
	}
	return m.Sequence, nil
}

// ReadOrder calls fn for each event of the order with after < seq <= upto, in WAL
// order (upto 0 means to the end). One direct get per event: orders have few events,
// and this needs no consumer state on the server.
func (l *Log) ReadOrder(ctx context.Context, orderID string, after, upto uint64, fn func(Record) error) error {
	filter := l.OrderFilter(orderID)
	for seq := after + 1; upto == 0 || seq <= upto; {
		m, err := l.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read WAL of %s at %d: %w", orderID, seq, err)
		}
		if upto != 0 && m.Sequence > upto {
			return nil
		}
		if err := fn(Record{Seq: m.Sequence, Subject: m.Subject, Data: m.Data, Header: m.Header, Time: m.Time}); err != nil {
			return err
		}
		seq = m.Sequence + 1
	}
	return nil
}

// errRangeDone ends a range read whose remaining messages are gone.
var errRangeDone = errors.New("no more messages in range")

// nextOrDone waits for the next message, but not forever: the pending count a
// message carries can include messages purged since (the archive purges completed
// orders), so after a quiet second it asks the consumer whether anything is left.
func nextOrDone(ctx context.Context, it jetstream.MessagesContext, c jetstream.Consumer, lastSeen uint64) (jetstream.Msg, error) {
	for {
		wait, cancel := context.WithTimeout(ctx, time.Second)
		m, err := it.Next(jetstream.NextContext(wait))
		cancel()
		if err == nil || ctx.Err() != nil {
			return m, err
		}
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		info, ierr := c.Info(ctx)
		if ierr != nil {
			return nil, ierr
		}
		// Done only when nothing is pending and nothing delivered is still on its way.
		if info.NumPending == 0 && info.Delivered.Stream <= lastSeen {
			return nil, errRangeDone
		}
	}
}

// ReadRange calls fn for every message matching filter with from <= seq <= upto, in
// WAL order, through an ordered consumer (fast for long ranges; no state left behind).
func ReadRange(ctx context.Context, js jetstream.JetStream, filter string, from, upto uint64, fn func(Record) error) error {
	if upto < from {
		return nil
	}
	c, err := js.OrderedConsumer(ctx, topology.EventsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		return fmt.Errorf("read WAL %s from %d: %w", filter, from, err)
	}
	// The consumer knows how many messages match from the start; stop when none are
	// left at or below upto instead of waiting for a fetch to time out.
	info, err := c.Info(ctx)
	if err != nil {
		return fmt.Errorf("read WAL %s: %w", filter, err)
	}
	if info.NumPending == 0 {
		return nil
	}
	it, err := c.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		return fmt.Errorf("read WAL %s: %w", filter, err)
	}
	defer it.Stop()
	var lastSeen uint64
	for {
		m, err := nextOrDone(ctx, it, c, lastSeen)
		if errors.Is(err, errRangeDone) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read WAL %s: %w", filter, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("read WAL %s: %w", filter, err)
		}
		lastSeen = md.Sequence.Stream
		if md.Sequence.Stream > upto {
			return nil
		}
		if err := fn(Record{Seq: md.Sequence.Stream, Subject: m.Subject(), Data: m.Data(), Header: m.Headers(), Time: md.Timestamp}); err != nil {
			return err
		}
		if md.Sequence.Stream == upto || md.NumPending == 0 {
			return nil
		}
	}
}

// SeqAtTime returns the sequence of the first WAL message stored at or after t, or
// the sequence the next one will get when there is none.
func SeqAtTime(ctx context.Context, js jetstream.JetStream, t time.Time) (uint64, error) {
	c, err := js.OrderedConsumer(ctx, topology.EventsStream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &t,
	})
	if err != nil {
		return 0, fmt.Errorf("find the first WAL event after %s: %w", t, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	if info.NumPending == 0 {
		// The consumer's own start, not a second look at the stream: an event stored
		// in between must not be skipped.
		return info.Delivered.Stream + 1, nil
	}
	m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		return 0, fmt.Errorf("find the first WAL event after %s: %w", t, err)
	}
	md, err := m.Metadata()
	if err != nil {
		return 0, err
	}
	return md.Sequence.Stream, nil
}
