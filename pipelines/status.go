// Package pipelines wires handlers onto lanes: one file per pipeline. The status
// pipeline runs one Watermill handler per partition of ORDER_EVENTS.
package pipelines

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/internal/wal"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// Metadata keys the lane unmarshaler sets on each Watermill message.
const (
	mdSubject     = "wal_subject"
	mdSeq         = "wal_seq"
	mdConsumerSeq = "consumer_seq"
	mdStoredAt    = "stored_at"
	mdPending     = "pending"
	mdHeaders     = "headers"
)

// StatusPipeline is the status pipeline: WAL lanes -> decode -> dedupe -> resolve -> KV.
type StatusPipeline struct {
	router *LaneRouter
	lanes  []*handlers.Lane
}

// NewStatusPipeline puts a handlers.Lane behind each lane's durable consumer. nc must
// be a connection of its own (see NewLaneRouter), and the lanes' writes (through
// deps) must go over another, which still flows after nc is drained.
func NewStatusPipeline(nc *nats.Conn, topo topology.Topology, cfg handlers.LaneConfig, deps handlers.Deps) (*StatusPipeline, error) {
	topo.SetDefaults()
	p := &StatusPipeline{}
	for i := 0; i < topo.Partitions; i++ {
		p.lanes = append(p.lanes, handlers.NewLane(i, cfg, deps))
	}
	router, err := NewLaneRouter(nc, topo, deps.Logger, topology.LaneConsumer, func(ctx context.Context, lane int, dl handlers.Delivery) error {
		return p.lanes[lane].Handle(ctx, dl)
	})
	if err != nil {
		return nil, fmt.Errorf("status pipeline: %w", err)
	}
	p.router = router
	return p, nil
}

// Run processes lanes until ctx ends, then flushes what it holds.
func (p *StatusPipeline) Run(ctx context.Context) error {
	laneCtx, stopLanes := context.WithCancel(context.Background())
	defer stopLanes()
	var wg sync.WaitGroup
	for _, l := range p.lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Run(laneCtx)
		}()
	}
	err := p.router.Run(ctx)
	// The router stopped taking events; make what it handled durable before leaving.
	flushCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, l := range p.lanes {
		if ferr := l.Flush(flushCtx); ferr != nil {
			err = errors.Join(err, fmt.Errorf("flush lane: %w", ferr))
		}
	}
	stopLanes()
	wg.Wait()
	return err
}

// Running is closed once every lane handler subscribed.
func (p *StatusPipeline) Running() chan struct{} { return p.router.Running() }

// existingLaneConsumer binds to a lane's durable consumer, which topology.Provision
// created. It never deletes it: the durable consumer is the lane's position.
func existingLaneConsumer(ctx context.Context, js jetstream.JetStream, topic string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
	c, err := js.Consumer(ctx, topology.EventsStream, topic)
	if err != nil {
		return nil, nil, fmt.Errorf("lane consumer %s (run provisioning first): %w", topic, err)
	}
	return c, nil, nil
}

// laneUnmarshaler carries what a lane needs in Watermill metadata. Unlike the
// default one it never fails: a message it cannot describe still reaches the lane,
// which sets it aside in the DLQ, so no header can stall or crash a consumer.
type laneUnmarshaler struct{}

func (laneUnmarshaler) Unmarshal(m jetstream.Msg) (*message.Message, error) {
	md := message.Metadata{mdSubject: m.Subject()}
	if meta, err := m.Metadata(); err == nil {
		md[mdSeq] = strconv.FormatUint(meta.Sequence.Stream, 10)
		md[mdConsumerSeq] = strconv.FormatUint(meta.Sequence.Consumer, 10)
		md[mdStoredAt] = strconv.FormatInt(meta.Timestamp.UnixNano(), 10)
		md[mdPending] = strconv.FormatUint(meta.NumPending, 10)
	}
	// Headers travel only when the lane must reject the event for them (a repeated
	// or reserved header); the DLQ reads the stored headers back from the WAL, so the
	// common path copies none. The pinned consumer appends its own Nats-Pin-Id: drop
	// that one value so the lane sees what was stored, as every other reader does.
	h := wal.StoredHeaders(m.Headers())
	for k, vs := range h {
		if len(vs) > 1 || fold.ReservedHeader(k) {
			md[mdHeaders] = encodeHeaders(h)
			break
		}
	}
	wm := message.NewMessage(md[mdSeq], m.Data())
	wm.Metadata = md
	return wm, nil
}

// encodeHeaders flattens headers into one metadata value, keeping repeated keys.
func encodeHeaders(h nats.Header) string {
	var b strings.Builder
	for k, vs := range h {
		for _, v := range vs {
			b.WriteString(strconv.Quote(k))
			b.WriteByte(':')
			b.WriteString(strconv.Quote(v))
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func decodeHeaders(s string) nats.Header {
	if s == "" {
		return nil
	}
	h := nats.Header{}
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		k, rest, err := unquotePrefix(line)
		if err != nil || !strings.HasPrefix(rest, ":") {
			continue
		}
		v, _, err := unquotePrefix(rest[1:])
		if err != nil {
			continue
		}
		h[k] = append(h[k], v)
	}
	return h
}

func unquotePrefix(s string) (string, string, error) {
	q, err := strconv.QuotedPrefix(s)
	if err != nil {
		return "", s, err
	}
	v, err := strconv.Unquote(q)
	return v, s[len(q):], err
}

func deliveryOf(m *message.Message) (handlers.Delivery, error) {
	seq, err := strconv.ParseUint(m.Metadata.Get(mdSeq), 10, 64)
	if err != nil {
		return handlers.Delivery{}, fmt.Errorf("message without JetStream metadata: %w", err)
	}
	cseq, _ := strconv.ParseUint(m.Metadata.Get(mdConsumerSeq), 10, 64)
	pending, _ := strconv.ParseUint(m.Metadata.Get(mdPending), 10, 64)
	at, _ := strconv.ParseInt(m.Metadata.Get(mdStoredAt), 10, 64)
	return handlers.Delivery{
		Record: wal.Record{
			Seq:     seq,
			Subject: m.Metadata.Get(mdSubject),
			Data:    m.Payload,
			Header:  decodeHeaders(m.Metadata.Get(mdHeaders)),
			Time:    time.Unix(0, at),
		},
		ConsumerSeq: cseq,
		Pending:     pending,
	}, nil
}
