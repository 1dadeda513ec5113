package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/testsupport/testrun"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// startServe runs one instance against env and returns its HTTP address.
func startServe(t *testing.T, env *testenv.NATSEnv, topo topology.Topology) string {
	t.Helper()
	return startServeURL(t, env.URL, topo)
}

func startServeURL(t *testing.T, url string, topo topology.Topology) string {
	t.Helper()
	return startServeConfig(t, app.ServeConfig{NATSURL: url, Topology: topo})
}

// startServeConfig runs one instance with cfg, on a free HTTP port, logging nowhere.
func startServeConfig(t *testing.T, cfg app.ServeConfig) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan app.Addrs, 1)
	done := make(chan error, 1)
	cfg.HTTPListen = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Started = func(a app.Addrs) { addrs <- a }
	go func() {
		done <- app.Serve(ctx, cfg)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case a := <-addrs:
		return a.HTTP
	case err := <-done:
		done <- err // for the cleanup, which waits for serve to return
		t.Fatalf("serve stopped before serving: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not start within 20s")
	}
	return ""
}

// TestPipelineMatchesResolver runs a contending simulated workload with bad input
// through the real pipeline and checks that every KV snapshot and every HTTP answer
// equals the pure resolver applied to the published events, and that every bad
// message is in the DLQ with its reason and origin.
func TestPipelineMatchesResolver(t *testing.T) {
	env := testenv.NATS(t)
	httpAddr := startServe(t, env, topology.Topology{Partitions: 4})

	msgs, sum := testrun.PublishDrained(t, env.JS, simulate.Config{Seed: 7, Orders: 600, InvalidRate: 0.01})
	if sum.Invalid == 0 || sum.Duplicates == 0 || sum.AgentCorrections == 0 {
		t.Fatalf("workload lacks contention: %s", sum)
	}
	ctx := context.Background()

	want := verify.FoldMessages(msgs)
	got, err := verify.Snapshots(ctx, env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.Diff(want, got); len(diffs) > 0 {
		t.Fatalf("%d snapshots differ from the resolver, first: %v", len(diffs), diffs[0])
	}
	fromWAL, err := verify.FromWAL(ctx, env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.Diff(want, fromWAL); len(diffs) > 0 {
		t.Fatalf("WAL replay differs from the published events: %v", diffs[0])
	}

	// Every milestone the resolver says was reached is out, exactly once.
	gotMs, err := verify.PublishedMilestones(ctx, env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.DiffMilestones(verify.ExpectedMilestones(msgs), gotMs); len(diffs) > 0 {
		t.Fatalf("%d orders with wrong milestones, first: %s", len(diffs), diffs[0])
	}

	// Every order over HTTP, including the newest WAL position.
	checked := 0
	for id, st := range want {
		if st.View().Status == "" {
			continue
		}
		resp, err := http.Get("http://" + httpAddr + "/v1/orders/" + id)
		if err != nil {
			t.Fatal(err)
		}
		var v resolver.View
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET order %s: %d %v", id, resp.StatusCode, err)
		}
		if diffs := verify.DiffViews(map[string]resolver.View{id: st.View()}, map[string]resolver.View{id: v}); len(diffs) > 0 {
			t.Fatalf("HTTP answer differs: %v", diffs[0])
		}
		checked++
	}
	if checked < 500 {
		t.Fatalf("only %d orders checked over HTTP", checked)
	}

	// Bad input: all in the DLQ, each with reason, original subject and WAL sequence.
	dlq, err := env.JS.Stream(ctx, topology.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if int(info.State.Msgs) != sum.Invalid {
		t.Fatalf("DLQ holds %d messages, published %d invalid", info.State.Msgs, sum.Invalid)
	}
	invalidBodies := map[string]bool{}
	for _, m := range msgs {
		if m.Invalid != "" {
			invalidBodies[string(m.Body)] = true
		}
	}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := dlq.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(handlers.HeaderDLQReason) == "" || m.Header.Get(handlers.HeaderOriginalSubject) == "" {
			t.Fatalf("DLQ message %d lacks reason or origin: %v", seq, m.Header)
		}
		if _, err := strconv.ParseUint(m.Header.Get(handlers.HeaderWALSeq), 10, 64); err != nil {
			t.Fatalf("DLQ message %d: bad WAL seq header: %v", seq, err)
		}
		if !invalidBodies[string(m.Data)] {
			t.Fatalf("DLQ message %d is not byte-for-byte an invalid message we sent", seq)
		}
	}
}

// TestQuietLaneCheckpointsAtOnce: a lane that has made everything durable and gets
// no more deliveries records its position at once, not at its next checkpoint tick
// (an hour here), so WaitDrained, which watches the checkpoints, returns.
func TestQuietLaneCheckpointsAtOnce(t *testing.T) {
	env := testenv.NATS(t)
	startServeConfig(t, app.ServeConfig{
		NATSURL:  env.URL,
		Topology: topology.Topology{Partitions: 2},
		Lane:     handlers.LaneConfig{CheckpointEvery: time.Hour},
	})
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 11, Orders: 200})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Twice: the second burst finds lanes that already checkpointed once.
	for _, part := range [][]simulate.Message{msgs[:len(msgs)/2], msgs[len(msgs)/2:]} {
		if err := simulate.PublishAll(ctx, env.JS, part, 0); err != nil {
			t.Fatal(err)
		}
		if err := pipelines.WaitDrained(ctx, env.JS, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	got, err := verify.Snapshots(ctx, env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.Diff(verify.FoldMessages(msgs), got); len(diffs) > 0 {
		t.Fatalf("%d snapshots differ from the resolver once drained, first: %v", len(diffs), diffs[0])
	}
}

// TestTerminalSnapshotsExpireAndReadsFallBackToTheWAL checks the terminal TTL: the
// snapshot of a delivered order leaves KV, reads still answer from the WAL, and a
// late event refolds the order's history instead of starting from nothing.
func TestTerminalSnapshotsExpireAndReadsFallBackToTheWAL(t *testing.T) {
	env := testenv.NATS(t)
	httpAddr := startServe(t, env, topology.Topology{Partitions: 2, TerminalTTL: time.Second})
	ctx := context.Background()
	msgs, _ := testrun.PublishDrained(t, env.JS, simulate.Config{Seed: 21, Orders: 5, CancelRate: simulate.Off, AgentRate: simulate.Off, EstimatorRate: simulate.Off})
	id := msgs[0].Event.OrderID
	want := verify.FoldMessages(msgs)[id].View()
	if want.Status != "delivered" {
		t.Fatalf("workload order %s ends %s, want delivered", id, want.Status)
	}
	kv, err := env.JS.KeyValue(ctx, topology.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := kv.Get(ctx, id); err != nil {
			break // expired
		}
		if time.Now().After(deadline) {
			t.Fatal("terminal snapshot did not expire")
		}
		time.Sleep(200 * time.Millisecond)
	}
	get := func() resolver.View {
		resp, err := http.Get("http://" + httpAddr + "/v1/orders/" + id)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v resolver.View
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&v) != nil {
			t.Fatalf("GET expired order: %s", resp.Status)
		}
		return v
	}
	if v := get(); v.Status != "delivered" || v.CustomerID != want.CustomerID {
		t.Fatalf("read after expiry: %+v, want %+v", v, want)
	}
	// A late estimator eta for the finished order: the lane must refold its history.
	late := nats.NewMsg("orders.events.estimator." + id)
	late.Data = []byte(`{"schema_version":1,"event_id":"late-eta","order_id":"` + id + `","source":"estimator","source_seq":99,"occurred_at":"2026-01-05T13:00:00Z","eta":"2026-01-05T13:10:00Z"}`)
	if _, err := env.JS.PublishMsg(ctx, late); err != nil {
		t.Fatal(err)
	}
	if err := pipelines.WaitDrained(ctx, env.JS, time.Minute); err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, id)
	if err != nil {
		t.Fatalf("no snapshot after the late event: %v", err)
	}
	st, err := resolver.UnmarshalSnapshot(e.Value())
	if err != nil {
		t.Fatal(err)
	}
	if v := st.View(); v.Status != "delivered" || v.Version[schemas.SourcePlatform] != 1 {
		t.Fatalf("late event started from nothing: %+v", v)
	}
}

// TestClusterR3 runs the pipeline on a 3-node JetStream cluster with R3 streams, the
// documented way to scale out, and checks the snapshots equal the resolver.
func TestClusterR3(t *testing.T) {
	c := testenv.NATSCluster(t, 3)
	startServeURL(t, strings.Join(c.URLs, ","), topology.Topology{Partitions: 4, Replicas: 3})
	msgs, _ := testrun.PublishDrained(t, c.JS, simulate.Config{Seed: 51, Orders: 300})
	ctx := context.Background()
	got, err := verify.Snapshots(ctx, c.JS)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.Diff(verify.FoldMessages(msgs), got); len(diffs) > 0 {
		t.Fatalf("%d orders differ on the cluster, first: %v", len(diffs), diffs[0])
	}
	s, err := c.JS.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if r := s.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("ORDER_EVENTS has %d replicas, want 3", r)
	}
}

// TestWatchStreamsEveryStatusChange opens GET /v1/orders/{id}/watch before the order
// exists and checks the Server-Sent Events follow its lifecycle, one per change.
func TestWatchStreamsEveryStatusChange(t *testing.T) {
	env := testenv.NATS(t)
	httpAddr := startServe(t, env, topology.Topology{Partitions: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+httpAddr+"/v1/orders/w-1/watch", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	steps := []struct{ source, status string }{
		{"platform", "created"}, {"merchant", "confirmed"}, {"merchant", "preparing"},
		{"driver", "picked_up"}, {"driver", "picked_up"}, {"driver", "delivered"},
	}
	seqs := map[string]int{}
	for _, s := range steps {
		seqs[s.source]++
		body := fmt.Sprintf(`{"schema_version":1,"event_id":"w-1-%s-%d","order_id":"w-1","source":%q,"source_seq":%d,"occurred_at":"2026-11-28T12:00:00Z","status":%q}`,
			s.source, seqs[s.source], s.source, seqs[s.source], s.status)
		if _, err := env.JS.Publish(ctx, "orders.events."+s.source+".w-1", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && len(got) < 5 {
		line := sc.Text()
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var v resolver.View
			if err := json.Unmarshal([]byte(data), &v); err != nil {
				t.Fatal(err)
			}
			got = append(got, string(v.Status))
		}
	}
	want := []string{"created", "confirmed", "preparing", "picked_up", "delivered"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("watch sent %v, want %v (one event per change, the repeated picked_up not repeated)", got, want)
	}
}

// TestRestartedPipelineRebuildsOrdersItDoesNotHold: a lane assumes an order it does
// not hold in memory is new and lets the snapshot write's compare-and-set check it.
// Half of a workload goes through one instance, the rest through a fresh one: every
// order the second instance touches already has a snapshot, so each first write
// conflicts and the lane rebuilds from KV and the WAL. The end states, the
// milestones and the conflict count prove the path.
func TestRestartedPipelineRebuildsOrdersItDoesNotHold(t *testing.T) {
	env := testenv.NATS(t)
	topo := topology.Topology{Partitions: 2}
	ctx := context.Background()
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 31, Orders: 200})
	if err != nil {
		t.Fatal(err)
	}
	half := len(msgs) / 2

	first, stopFirst := context.WithCancel(ctx)
	done := make(chan error, 1)
	started := make(chan app.Addrs, 1)
	go func() {
		done <- app.Serve(first, app.ServeConfig{NATSURL: env.URL, HTTPListen: "127.0.0.1:0", Topology: topo,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Started: func(a app.Addrs) { started <- a }})
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("first instance: %v", err)
	}
	if err := simulate.PublishAll(ctx, env.JS, msgs[:half], 0); err != nil {
		t.Fatal(err)
	}
	if err := pipelines.WaitDrained(ctx, env.JS, time.Minute); err != nil {
		t.Fatal(err)
	}
	stopFirst()
	if err := <-done; err != nil {
		t.Fatalf("first instance: %v", err)
	}

	httpAddr := startServe(t, env, topo)
	if err := simulate.PublishAll(ctx, env.JS, msgs[half:], 0); err != nil {
		t.Fatal(err)
	}
	if err := pipelines.WaitDrained(ctx, env.JS, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := verify.Snapshots(ctx, env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.Diff(verify.FoldMessages(msgs), got); len(diffs) > 0 {
		w, _ := json.Marshal(diffs[0].Want)
		g, _ := json.Marshal(diffs[0].Got)
		t.Fatalf("%d snapshots differ from the resolver, first:\n want %s\n got  %s", len(diffs), w, g)
	}
	gotMs, err := verify.PublishedMilestones(ctx, env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.DiffMilestones(verify.ExpectedMilestones(msgs), gotMs); len(diffs) > 0 {
		t.Fatalf("%d orders with wrong milestones, first: %s", len(diffs), diffs[0])
	}
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	conflicts := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, `orderflow_snapshot_writes_total{result="conflict"}`) {
			fmt.Sscan(strings.Fields(line)[1], &conflicts)
		}
	}
	if conflicts < 20 {
		t.Fatalf("the second instance saw %v write conflicts; its orders were written before, so it should rebuild many", conflicts)
	}
}
