package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// WAL starts JetStream (NATS) with the orderflow topology provisioned: the WAL,
// the DLQ, the milestone stream and the snapshot bucket.
func WAL(t testing.TB, partitions int) *NATSEnv {
	t.Helper()
	e := NATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := topology.Provision(ctx, e.JS, topology.Topology{Partitions: partitions}); err != nil {
		t.Fatalf("testenv: provision the topology: %v", err)
	}
	return e
}

// EventsEpoch is when the events Event builds occurred (plus one minute per
// source_seq): fixed, so answers built from them are stable.
var EventsEpoch = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// Event is a valid event of order id from src with the given source_seq and
// status: event id <id>-<src>-<seq>, the entity ids a created event carries, the
// dasher a driver names, the reason an agent gives.
func Event(id string, src schemas.Source, seq uint64, status schemas.Status) schemas.Event {
	ev := schemas.Event{SchemaVersion: schemas.SchemaVersion, EventID: fmt.Sprintf("%s-%s-%d", id, src, seq),
		OrderID: id, Source: src, SourceSeq: seq, OccurredAt: EventsEpoch.Add(time.Duration(seq) * time.Minute), Status: status}
	switch {
	case status == schemas.StatusCreated:
		ev.CustomerID, ev.RestaurantID = "c-"+id, "r-"+id
	case src == schemas.SourceDriver:
		ev.DasherID = "d-" + id
	case src == schemas.SourceAgent:
		ev.Reason = "support correction"
	}
	return ev
}

// Publish publishes ev as its producer would (its event id as Nats-Msg-Id) and
// returns its WAL sequence.
func (e *NATSEnv) Publish(t testing.TB, ev schemas.Event) uint64 {
	t.Helper()
	return e.PublishRaw(t, schemas.Subject(ev.Source, ev.OrderID), ev.EventID, EventJSON(t, ev))
}

// EventJSON is ev's body as a producer sends it.
func EventJSON(t testing.TB, ev schemas.Event) []byte {
	t.Helper()
	body, err := json.Marshal(ev)
	if err != nil {
		t.Fatalf("testenv: encode event: %v", err)
	}
	return body
}

// PublishRaw publishes body to subject, with msgID as Nats-Msg-Id unless empty,
// and returns its WAL sequence: for bodies no producer should send.
func (e *NATSEnv) PublishRaw(t testing.TB, subject, msgID string, body []byte) uint64 {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = body
	if msgID != "" {
		m.Header.Set(nats.MsgIdHdr, msgID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := e.JS.PublishMsg(ctx, m)
	if err != nil {
		t.Fatalf("testenv: publish to %s: %v", subject, err)
	}
	if ack.Duplicate {
		t.Fatalf("testenv: publish to %s: dropped as a duplicate of message id %s", subject, msgID)
	}
	return ack.Sequence
}

// ExplicitAckLane replaces lane's consumer with one acked per event, as lanes were
// provisioned before they acked a batch at once (AckAll): how an older deployment
// has it.
func (e *NATSEnv) ExplicitAckLane(t testing.TB, topo topology.Topology, lane int) {
	t.Helper()
	ctx := context.Background()
	old := topo.LaneConsumerConfig(lane)
	old.AckPolicy = jetstream.AckExplicitPolicy
	if err := e.JS.DeleteConsumer(ctx, topology.EventsStream, old.Durable); err != nil {
		t.Fatalf("testenv: delete lane %d consumer: %v", lane, err)
	}
	if _, err := e.JS.CreateConsumer(ctx, topology.EventsStream, old); err != nil {
		t.Fatalf("testenv: recreate lane %d consumer: %v", lane, err)
	}
}
