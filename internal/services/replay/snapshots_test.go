package replay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/services/replay"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// walEnv is a provisioned topology with no pipeline running: the WAL fills, KV
// stays as the test leaves it, so replay is the only writer.
type walEnv struct {
	*testenv.NATSEnv
	t   *testing.T
	ctx context.Context
}

func newWALEnv(t *testing.T) *walEnv {
	t.Helper()
	env := testenv.NATS(t)
	ctx := context.Background()
	if _, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	return &walEnv{NATSEnv: env, t: t, ctx: ctx}
}

// publish stores one event of order id from src with its source_seq and status.
func (e *walEnv) publish(id string, src schemas.Source, seq int, status string) uint64 {
	e.t.Helper()
	ev := map[string]any{
		"schema_version": 1, "event_id": fmt.Sprintf("%s-%s-%d", id, src, seq), "order_id": id, "source": src,
		"source_seq": seq, "occurred_at": "2026-11-28T12:00:00Z", "status": status,
	}
	switch status {
	case "created":
		ev["customer_id"], ev["restaurant_id"] = "c-1", "r-1"
	case "picked_up":
		ev["dasher_id"] = "d-1"
	}
	body, err := json.Marshal(ev)
	if err != nil {
		e.t.Fatal(err)
	}
	ack, err := e.JS.Publish(e.ctx, schemas.Subject(src, id), body, jetstream.WithMsgID(ev["event_id"].(string)))
	if err != nil {
		e.t.Fatal(err)
	}
	return ack.Sequence
}

// deliver stores a whole delivered order; open stores one still being prepared.
func (e *walEnv) deliver(id string) {
	e.publish(id, schemas.SourcePlatform, 1, "created")
	e.publish(id, schemas.SourceMerchant, 1, "confirmed")
	e.publish(id, schemas.SourceDriver, 1, "picked_up")
	e.publish(id, schemas.SourceDriver, 2, "delivered")
}

func (e *walEnv) open(id string) {
	e.publish(id, schemas.SourcePlatform, 1, "created")
	e.publish(id, schemas.SourceMerchant, 1, "preparing")
}

// stored is the KV message holding the order's snapshot.
func (e *walEnv) stored(id string) *jetstream.RawStreamMsg {
	e.t.Helper()
	s, err := e.JS.Stream(e.ctx, "KV_"+topology.StatusBucket)
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(e.ctx, snapshot.Key(id))
	if err != nil {
		e.t.Fatalf("snapshot of %s: %v", id, err)
	}
	return m
}

func (e *walEnv) replay(o replay.Options) replay.Report {
	e.t.Helper()
	rep, err := replay.Snapshots(e.ctx, e.JS, o)
	if err != nil {
		e.t.Fatalf("replay %+v: %v", o, err)
	}
	return rep
}

// TestReplayedTerminalSnapshotsExpireLikeTheLanes: replay writes the snapshot of a
// delivered order with the lane's terminal TTL (the topology default when none is
// given), and an open order's without one. Before, replay opened the store with TTL
// 0 and its terminal snapshots stayed in KV forever.
func TestReplayedTerminalSnapshotsExpireLikeTheLanes(t *testing.T) {
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		want string
	}{
		{"lane default", 0, (24 * time.Hour).String()},
		{"--terminal-ttl 90m", 90 * time.Minute, (90 * time.Minute).String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newWALEnv(t)
			e.deliver("o-done")
			e.open("o-open")
			rep := e.replay(replay.Options{FromSeq: 1, TerminalTTL: tc.ttl})
			if rep.Orders != 2 || rep.Differ != 2 || rep.Written != 2 {
				t.Fatalf("replay into empty KV: %+v, want 2 orders, 2 differ, 2 written", rep)
			}
			if got := e.stored("o-done").Header.Get(jetstream.MsgTTLHeader); got != tc.want {
				t.Fatalf("delivered order's snapshot has TTL %q, want %q (the lane's)", got, tc.want)
			}
			if got := e.stored("o-open").Header.Get(jetstream.MsgTTLHeader); got != "" {
				t.Fatalf("open order's snapshot has TTL %q, want none", got)
			}
		})
	}
}

// TestReplayRewritesOnlyWhatDiffers covers a dry run (reports, writes nothing), a
// real run (writes what differs, publishes the milestones owed, records them in the
// outbox), a second run (nothing left to do) and a run limited to one order.
func TestReplayRewritesOnlyWhatDiffers(t *testing.T) {
	e := newWALEnv(t)
	e.deliver("o-1")
	e.open("o-2")
	e.open("o-3")

	dry := e.replay(replay.Options{FromSeq: 1, DryRun: true})
	if dry.Orders != 3 || dry.Differ != 3 || dry.Written != 0 || dry.Events != 8 || len(dry.Sample) != 3 {
		t.Fatalf("dry run: %+v, want 3 orders, 3 differ, 0 written, 8 events, 3 samples", dry)
	}
	kv, err := e.JS.KeyValue(e.ctx, topology.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(e.ctx, "o-1"); err == nil {
		t.Fatal("a dry run wrote a snapshot")
	}

	if rep := e.replay(replay.Options{FromSeq: 1}); rep.Written != 3 || rep.Differ != 3 {
		t.Fatalf("replay: %+v, want 3 written", rep)
	}
	data := e.stored("o-1").Data
	st, ob, err := snapshot.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if v := st.View(); v.Status != schemas.StatusDelivered || v.WalSeq != 4 {
		t.Fatalf("o-1 replayed to %+v, want delivered at WAL sequence 4", v)
	}
	if len(ob.Pending) != 0 || len(ob.Emitted) != 2 {
		t.Fatalf("o-1's outbox %+v, want picked_up and delivered emitted, nothing pending", ob)
	}
	milestones, err := e.JS.Stream(e.ctx, topology.MilestonesStream)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range ob.Emitted {
		if _, err := milestones.GetLastMsgForSubject(e.ctx, outbox.Subject("o-1", kind)); err != nil {
			t.Fatalf("milestone %s of o-1 not published: %v", kind, err)
		}
	}

	if rep := e.replay(replay.Options{FromSeq: 1}); rep.Differ != 0 || rep.Written != 0 || rep.Orders != 3 {
		t.Fatalf("second replay: %+v, want nothing to do", rep)
	}

	// One order, with its snapshot gone: only it is looked at and rewritten.
	if err := kv.Delete(e.ctx, "o-2"); err != nil {
		t.Fatal(err)
	}
	rep := e.replay(replay.Options{FromSeq: 1, OrderID: "o-2"})
	if rep.Orders != 1 || rep.Written != 1 || rep.Events != 2 {
		t.Fatalf("replay of o-2: %+v, want 1 order, 1 written, its 2 events", rep)
	}
}

// TestReplayRepairsAnUndecodableSnapshot: a value that does not decode is replaced.
func TestReplayRepairsAnUndecodableSnapshot(t *testing.T) {
	e := newWALEnv(t)
	e.open("o-1")
	kv, err := e.JS.KeyValue(e.ctx, topology.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(e.ctx, "o-1", []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	if rep := e.replay(replay.Options{FromSeq: 1}); rep.Written != 1 {
		t.Fatalf("replay over garbage: %+v, want 1 written", rep)
	}
	if _, _, err := snapshot.Decode(e.stored("o-1").Data); err != nil {
		t.Fatalf("snapshot after replay: %v", err)
	}
}

// TestReplayFromALaterPointTakesOnlyTheOrdersSinceThen: FromSeq and FromTime pick
// the orders with an event at or after the start, each rebuilt from its whole history.
func TestReplayFromALaterPointTakesOnlyTheOrdersSinceThen(t *testing.T) {
	e := newWALEnv(t)
	e.open("o-early")
	e.open("o-late")
	time.Sleep(20 * time.Millisecond) // WAL times are the server's clock: leave a gap
	since := time.Now()
	time.Sleep(20 * time.Millisecond)
	seq := e.publish("o-late", schemas.SourceDriver, 1, "picked_up")

	for _, o := range []replay.Options{{FromSeq: seq}, {FromTime: since}} {
		start, err := replay.StartSeq(e.ctx, e.JS, o)
		if err != nil || start != seq {
			t.Fatalf("StartSeq(%+v) = %d, %v; want %d", o, start, err, seq)
		}
		o.DryRun = true
		if rep := e.replay(o); rep.Orders != 1 || rep.Events != 5 || rep.FromSeq != seq {
			t.Fatalf("replay from %+v: %+v, want o-late alone (every event folded, 5)", o, rep)
		}
	}
}
