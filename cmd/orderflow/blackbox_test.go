package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// connectTo connects a client to a NATS server.
func connectTo(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// publishCore publishes msgs with core NATS, as `nats pub` does, and waits until the
// WAL has stored them: a flush says only that the server received them, and
// WaitDrained waits for what the WAL held when it was called. Messages sharing a
// Nats-Msg-Id count once: the stream's duplicate window keeps one.
func publishCore(t *testing.T, nc *nats.Conn, js jetstream.JetStream, msgs []*nats.Msg) {
	t.Helper()
	want := walState(t, js).LastSeq
	ids := map[string]bool{}
	for _, m := range msgs {
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		if id := m.Header.Get(nats.MsgIdHdr); id == "" || !ids[id] {
			ids[id] = id != ""
			want++
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		stored := walState(t, js).LastSeq
		if stored >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the WAL stored %d of the %d messages expected", stored, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// walState is the WAL stream's state now.
func walState(t *testing.T, js jetstream.JetStream) jetstream.StreamState {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

// embeddedInstance runs `orderflow serve` with its embedded JetStream server, the
// default a user gets, and connects a client to it.
func embeddedInstance(t *testing.T, dataDir, natsAddr string) (*instance, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	inst := startInstance(t, append([]string{"--data-dir", dataDir, "--nats-listen", natsAddr}, failoverArgs...)...)
	nc, js := connectTo(t, "nats://"+natsAddr)
	t.Cleanup(nc.Close)
	return inst, nc, js
}

// TestBlackBoxAnyOrderWithDuplicates publishes the events of several orders with a
// plain core-NATS client, as `nats pub` does, in a different random order for each
// order and with retries, and checks that HTTP and KV give what the resolver says
// for those events in publish order; that the status also equals the resolver in the
// original lifecycle order (convergence); and that bad input lands in the DLQ.
func TestBlackBoxAnyOrderWithDuplicates(t *testing.T) {
	inst, nc, js := embeddedInstance(t, t.TempDir(), freeAddr(t))
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 5, Orders: 40, ReorderRate: simulate.Off})
	if err != nil {
		t.Fatal(err)
	}
	// Shuffle every order's events independently, then add retries.
	byOrder := map[string][]simulate.Message{}
	var ids []string
	for _, m := range msgs {
		if _, ok := byOrder[m.Event.OrderID]; !ok {
			ids = append(ids, m.Event.OrderID)
		}
		byOrder[m.Event.OrderID] = append(byOrder[m.Event.OrderID], m)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	var published []simulate.Message
	for _, id := range ids {
		evs := byOrder[id]
		rng.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
		for _, m := range evs {
			published = append(published, m)
			if rng.IntN(4) == 0 {
				published = append(published, m) // a producer retry
			}
		}
	}
	var sent []*nats.Msg
	for _, m := range published {
		sent = append(sent, m.NatsMsg())
	}
	// Bad input: every kind the DLQ must take, the lane must survive.
	bad := []*nats.Msg{
		{Subject: "orders.events.driver.bad-1", Data: []byte("{not json")},
		{Subject: "orders.events.driver.bad-2", Data: []byte(`{"schema_version":1,"event_id":"x","order_id":"bad-2","source":"merchant","source_seq":1,"occurred_at":"2026-11-28T12:00:00Z","status":"confirmed"}`)},
		{Subject: "orders.events.driver.bad-3", Data: []byte(`{"schema_version":1,"event_id":"y","order_id":"bad-3","source":"driver","source_seq":0,"occurred_at":"yesterday"}`)},
		{Subject: "orders.events.driver.bad-4", Data: []byte(strings.Repeat("x", schemas.MaxEventBytes+1))},
		{Subject: "orders.events.driver.bad-5", Data: []byte(`{}`), Header: nats.Header{"Trace": []string{"a", "b"}}},
		// A valid body posing as server metadata: would forge direct-get sequences.
		{Subject: "orders.events.driver.bad-6", Data: []byte(`{"schema_version":1,"event_id":"z","order_id":"bad-6","source":"driver","source_seq":1,"occurred_at":"2026-11-28T12:00:00Z","status":"picked_up"}`),
			Header: nats.Header{"Nats-Sequence": []string{"0"}}},
		// A publish condition the WAL accepted must not make the DLQ copy fail.
		{Subject: "orders.events.driver.bad-7", Data: []byte("{broken"), Header: nats.Header{"Nats-Expected-Stream": []string{"ORDER_EVENTS"}}},
		// A time RFC 3339 can write but UTC cannot.
		{Subject: "orders.events.driver.bad-8", Data: []byte(`{"schema_version":1,"event_id":"w","order_id":"bad-8","source":"driver","source_seq":1,"occurred_at":"9999-12-31T23:59:59-01:00","status":"picked_up"}`)},
	}
	publishCore(t, nc, js, append(sent, bad...))
	ctx := context.Background()
	if err := pipelines.WaitDrained(ctx, js, time.Minute); err != nil {
		t.Fatal(err)
	}

	// What the pipeline stored equals the resolver over the events in WAL order...
	got := testenv.SnapshotsMatchWAL(t, js)
	// ...and, convergence, over the same events in lifecycle order without retries.
	// updated_at is left out: it records when the answer last changed, which depends
	// on arrival order by definition.
	if diffs := verify.DiffViews(withoutUpdatedAt(verify.Views(verify.FoldMessages(msgs))), withoutUpdatedAt(verify.Views(got))); len(diffs) > 0 {
		t.Fatalf("arrival order changed the outcome: %v", diffs[0])
	}
	for _, id := range ids {
		resp, err := http.Get("http://" + inst.HTTP + "/v1/orders/" + id)
		if err != nil {
			t.Fatal(err)
		}
		var v resolver.View
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if diffs := verify.DiffViews(map[string]resolver.View{id: got[id].View()}, map[string]resolver.View{id: v}); len(diffs) > 0 {
			t.Fatalf("HTTP differs from KV: %v", diffs[0])
		}
	}
	if code, _ := inst.get("/v1/orders/never-seen"); code != http.StatusNotFound {
		t.Fatalf("unknown order: got %d, want 404", code)
	}

	// The DLQ holds each bad message with its reason.
	want := []string{fold.ReasonMalformedJSON, fold.ReasonSourceMismatch, fold.ReasonSchemaViolation, fold.ReasonPayloadTooLarge,
		fold.ReasonDuplicateHeader, fold.ReasonReservedHeader, fold.ReasonMalformedJSON, fold.ReasonSchemaViolation}
	dlq, err := js.Stream(ctx, topology.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	// Lanes run in parallel, so match DLQ entries to what was sent by subject.
	bySubject := map[string]*jetstream.RawStreamMsg{}
	for seq := uint64(1); seq <= uint64(len(bad)); seq++ {
		m, err := dlq.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("DLQ message %d: %v", seq, err)
		}
		bySubject[m.Header.Get(handlers.HeaderOriginalSubject)] = m
	}
	for i, reason := range want {
		m, ok := bySubject[bad[i].Subject]
		if !ok {
			t.Fatalf("%s is not in the DLQ", bad[i].Subject)
		}
		if got := m.Header.Get(handlers.HeaderDLQReason); got != reason {
			t.Errorf("%s: reason %q, want %q (%s)", bad[i].Subject, got, reason, m.Header.Get(handlers.HeaderDLQDetail))
		}
		if string(m.Data) != string(bad[i].Data) {
			t.Errorf("%s: DLQ body is not the original", bad[i].Subject)
		}
	}
}

func withoutUpdatedAt(views map[string]resolver.View) map[string]resolver.View {
	for id, v := range views {
		v.UpdatedAt = time.Time{}
		views[id] = v
	}
	return views
}

// TestEmbeddedKill9KeepsAcknowledgedEvents kills `orderflow serve`, embedded server
// included, right after publishes were acknowledged; after a restart on the same data
// dir every acknowledged event is in the WAL and the snapshots equal the resolver.
func TestEmbeddedKill9KeepsAcknowledgedEvents(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	addr := freeAddr(t)
	inst, _, js := embeddedInstance(t, dir, addr)
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 9, Orders: 300})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := simulate.PublishAll(ctx, js, msgs, 0); err != nil {
		t.Fatal(err)
	}
	acked := walState(t, js).Msgs
	inst.Kill()

	_, _, js2 := embeddedInstance(t, dir, addr)
	s2, err := js2.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if after := s2.CachedInfo().State.Msgs; after != acked {
		t.Fatalf("WAL holds %d events after kill -9, %d were acknowledged", after, acked)
	}
	if err := pipelines.WaitDrained(ctx, js2, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := verify.Snapshots(ctx, js2)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.Diff(verify.FoldMessages(msgs), got); len(diffs) > 0 {
		t.Fatalf("%d orders differ after kill -9 and restart: %v", len(diffs), diffs[0])
	}
}

// TestSIGTERMShutsDownCleanly checks serve exits 0 on SIGTERM after making handled
// events durable.
func TestSIGTERMShutsDownCleanly(t *testing.T) {
	inst, _, js := embeddedInstance(t, t.TempDir(), freeAddr(t))
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 3, Orders: 50})
	if err != nil {
		t.Fatal(err)
	}
	if err := simulate.PublishAll(context.Background(), js, msgs, 0); err != nil {
		t.Fatal(err)
	}
	inst.Stop(t)
}

// TestForgedPinHeaderNeitherStallsNorLeaks: a producer's message carrying its own
// Nats-Pin-Id reaches the lane before the server's (the server appends its value),
// so the client reads the forged one as its pin. With lanes that fail over only
// after 30 s, the pipeline must still drain promptly, set every such message aside
// as reserved_header, and give the resolver's answer for everything else.
func TestForgedPinHeaderNeitherStallsNorLeaks(t *testing.T) {
	addr := freeAddr(t)
	startInstance(t, "--data-dir", t.TempDir(), "--nats-listen", addr, "--lane-failover", "30s")
	nc, js := connectTo(t, "nats://"+addr)
	defer nc.Close()
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 9, Orders: 200, InvalidRate: simulate.Off})
	if err != nil {
		t.Fatal(err)
	}
	forged := 0
	var sent []*nats.Msg
	for i, m := range msgs {
		sent = append(sent, m.NatsMsg())
		if i%50 == 0 {
			f := nats.Header{}
			f.Set("Nats-Pin-Id", fmt.Sprintf("forged-%d", i))
			sent = append(sent, &nats.Msg{Subject: m.Subject, Data: m.Body, Header: f})
			forged++
		}
	}
	publishCore(t, nc, js, sent)
	ctx := context.Background()
	start := time.Now()
	if err := pipelines.WaitDrained(ctx, js, 20*time.Second); err != nil {
		t.Fatalf("a forged pin header stalled a lane: %v", err)
	}
	t.Logf("drained %.1fs after the last publish", time.Since(start).Seconds())
	testenv.SnapshotsMatchWAL(t, js)
	dlq, err := js.Stream(ctx, topology.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if int(info.State.Msgs) != forged {
		t.Fatalf("DLQ holds %d messages, %d were forged", info.State.Msgs, forged)
	}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := dlq.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if r := m.Header.Get(handlers.HeaderDLQReason); r != fold.ReasonReservedHeader {
			t.Fatalf("DLQ message %d: reason %q, want %q", seq, r, fold.ReasonReservedHeader)
		}
	}
}
