package testenv

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// WALEvents reads every event from src stored in the WAL so far, in WAL order.
func (e *NATSEnv) WALEvents(t testing.TB, src schemas.Source) []schemas.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.JS.OrderedConsumer(ctx, topology.EventsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{topology.WALPrefix + ".*." + string(src) + ".*"},
	})
	if err != nil {
		t.Fatalf("testenv: read the WAL: %v", err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("testenv: read the WAL: %v", err)
	}
	var out []schemas.Event
	for n := info.NumPending; n > 0; n-- {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("testenv: read the WAL: %v", err)
		}
		var ev schemas.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatalf("testenv: WAL event at %s: %v", m.Subject(), err)
		}
		out = append(out, ev)
	}
	return out
}

// WALLastSeq is the sequence of the newest event stored in the WAL (0: none).
func WALLastSeq(t testing.TB, js jetstream.JetStream) uint64 {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return info.State.LastSeq
}

// SnapshotsMatchWAL fails the test unless every snapshot in KV equals the resolver
// folded over the WAL, and returns the snapshots.
func SnapshotsMatchWAL(t testing.TB, js jetstream.JetStream) map[string]*resolver.State {
	t.Helper()
	ctx := context.Background()
	fromWAL, err := verify.FromWAL(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	got, err := verify.Snapshots(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.Diff(fromWAL, got); len(diffs) > 0 {
		t.Fatalf("%d snapshots differ from the resolver over the WAL, first: %v", len(diffs), diffs[0])
	}
	return got
}
