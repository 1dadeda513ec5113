package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// overloadSeconds bounds the overload phase; overloadPublishers publish in it.
const (
	overloadSeconds    = 6
	overloadPublishers = 4
)

// TestOverloadAtTwiceTheMaximumLiveRate measures the maximum live rate of a running
// `serve` (a workload published as fast as the server takes it, over the time until
// every event is durable, as `orderflow bench` defines it), then publishes at twice
// that rate for a bounded time and checks what an operator relies on:
//   - every acknowledged event is in the WAL and folded into its order's snapshot
//     (snapshots equal the resolver over the WAL; the WAL holds exactly the
//     acknowledged sequences);
//   - the lanes fall behind during the overload and orderflow_lane_lag_events says
//     so, then it returns to 0;
//   - /readyz stays 200 (a lagging instance still answers reads correctly, so
//     taking it out of rotation would only move the load), and a read during the
//     overload includes an event acknowledged just before it;
//   - orderflow_events_total + orderflow_dlq_events_total count exactly the events
//     stored.
func TestOverloadAtTwiceTheMaximumLiveRate(t *testing.T) {
	in := startServe(t, "--no-archive")
	nc, js := connect(t, in.NATSURL)
	defer nc.Close()
	ctx := context.Background()

	// 1. The maximum live rate: the better of two runs, the first of which also
	// warms the process up.
	var acked []uint64
	var calib []simulate.Message
	maxRate := 0.0
	for _, seed := range []int64{31, 33} {
		msgs, _, err := simulate.Generate(simulate.Config{Seed: seed, Orders: 2000})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		seqs := publishPaced(t, js, msgs, 0, time.Time{})
		if t.Failed() {
			t.FailNow()
		}
		if err := pipelines.WaitDrained(ctx, js, 5*time.Minute); err != nil {
			t.Fatal(err)
		}
		maxRate = max(maxRate, float64(len(seqs))/time.Since(start).Seconds())
		acked, calib = append(acked, seqs...), msgs
	}

	// 2. Twice that, for overloadSeconds.
	rate := 2 * maxRate
	perOrder := float64(len(calib)) / 2000
	orders := max(500, min(20000, int(rate*overloadSeconds/perOrder)))
	load, _, err := simulate.Generate(simulate.Config{Seed: 32, Orders: orders})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		maxLag   float64
		notReady []string
		readErrs []string
		probes   int
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // readiness and the lag metric, every 100 ms
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			code, body := in.get(t, "/readyz")
			lag := sum(in.metrics(t), "orderflow_lane_lag_events")
			mu.Lock()
			if code != http.StatusOK {
				notReady = append(notReady, fmt.Sprintf("%d %s", code, body))
			}
			maxLag = max(maxLag, lag)
			mu.Unlock()
		}
	}()
	go func() { // a probe order every 250 ms: its event acknowledged, then read at once
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			id := fmt.Sprintf("probe-%04d", i)
			ack, err := js.PublishMsg(ctx, probeMsg(id))
			var msg string
			if err != nil {
				msg = "publish probe: " + err.Error()
			} else {
				code, body := in.get(t, "/v1/orders/"+id)
				var v struct {
					Status string `json:"status"`
					WALSeq uint64 `json:"wal_seq"`
				}
				if code == http.StatusOK {
					jsonBody(t, body, &v)
				}
				if code != http.StatusOK || v.Status != "created" || v.WALSeq != ack.Sequence {
					msg = fmt.Sprintf("read of %s (acked at %d) during overload: %d %s", id, ack.Sequence, code, body)
				}
			}
			mu.Lock()
			probes++
			if msg != "" {
				readErrs = append(readErrs, msg)
			}
			mu.Unlock()
		}
	}()
	// Several producers, as in production: one connection's acks would pace a
	// single publisher below what the server can take.
	start := time.Now()
	acked2 := publishParallel(t, in.NATSURL, load, rate, start.Add(overloadSeconds*time.Second), overloadPublishers)
	if t.Failed() {
		t.FailNow()
	}
	publishTime := time.Since(start)
	drainStart := time.Now()
	if err := pipelines.WaitDrained(ctx, js, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	drain := time.Since(drainStart)
	close(stop)
	wg.Wait()
	// On one machine the publisher, the server and the pipeline share the cores, so
	// the server's acks pace the publisher below the target: the overload shows as
	// publish back-pressure and lane lag. The log says which rate was reached.
	t.Logf("maximum live rate %.0f events/s; overload: target %.0f/s for %ds, %d events stored in %s (%.0f/s), drained %s after; "+
		"max lane lag %.0f; %d probe reads", maxRate, rate, overloadSeconds, len(acked2), publishTime.Round(time.Millisecond),
		float64(len(acked2))/publishTime.Seconds(), drain.Round(time.Millisecond), maxLag, probes)

	if len(notReady) > 0 {
		t.Errorf("/readyz was not 200 during the overload: %v", notReady)
	}
	if len(readErrs) > 0 {
		t.Errorf("%d of %d reads missed an acknowledged event; first: %s", len(readErrs), probes, readErrs[0])
	}
	if maxLag == 0 {
		t.Errorf("orderflow_lane_lag_events never rose while publishing at twice the maximum live rate")
	}
	waitFor(t, time.Minute, "lane lag back to 0", func() bool { return sum(in.metrics(t), "orderflow_lane_lag_events") == 0 })

	// Nothing acknowledged lost: the WAL holds exactly the acknowledged sequences
	// (plus the probes), and every snapshot equals the resolver over the WAL.
	info, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	st := info.CachedInfo().State
	all := map[uint64]bool{}
	for _, s := range append(acked, acked2...) {
		all[s] = true
	}
	if st.FirstSeq != 1 || st.Msgs != st.LastSeq || st.Msgs != uint64(len(all)+probes) {
		t.Errorf("WAL holds %d messages (seq %d..%d); acknowledged %d events and %d probes",
			st.Msgs, st.FirstSeq, st.LastSeq, len(all), probes)
	}
	snapshotsMatchWAL(t, js)
	m := in.metrics(t)
	if counted := sum(m, "orderflow_events_total") + sum(m, "orderflow_dlq_events_total"); counted != float64(st.Msgs) {
		t.Errorf("metrics count %.0f events folded or set aside, the WAL holds %d", counted, st.Msgs)
	}
	if v := m[`orderflow_stream_messages{stream="ORDER_EVENTS"}`]; v != float64(st.Msgs) {
		t.Errorf("orderflow_stream_messages says %.0f, the WAL holds %d", v, st.Msgs)
	}
	if code, _ := in.get(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz %d after the overload", code)
	}
}

// TestWALLimitRefusesProducersAndKeepsWhatItAcknowledged fills a WAL bounded by
// --wal-max-bytes: producers are refused with JetStream's "maximum bytes exceeded"
// (the ingest API with 507), nothing acknowledged is dropped, the pipeline keeps
// draining, and the metrics show the WAL at its limit.
func TestWALLimitRefusesProducersAndKeepsWhatItAcknowledged(t *testing.T) {
	const limit = 4 << 20
	in := startServe(t, "--no-archive", "--wal-max-bytes", "4MiB")
	nc, js := connect(t, in.NATSURL)
	defer nc.Close()
	ctx := context.Background()
	stored := fillWAL(t, in.NATSURL, 100_000)
	if err := pipelines.WaitDrained(ctx, js, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	info, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	st := info.CachedInfo().State
	if st.Msgs != uint64(stored) || st.FirstSeq != 1 || st.LastSeq != uint64(stored) || st.Bytes > limit {
		t.Fatalf("after %d acknowledged events the WAL holds %d (seq %d..%d, %d bytes of %d)", stored, st.Msgs, st.FirstSeq, st.LastSeq, st.Bytes, limit)
	}
	// Still refused, with the reason, and a retry of a stored event is still a duplicate.
	_, err = js.PublishMsg(ctx, probeMsg("after-full"))
	if err == nil || !strings.Contains(err.Error(), "maximum bytes exceeded") {
		t.Fatalf("publish to a full WAL: %v, want maximum bytes exceeded", err)
	}
	token := strings.TrimSpace(run(t, "token", "issue", "--data-dir", in.DataDir, "--source", "driver", "--actor", "d-1"))
	code, body := in.do(t, http.MethodPost, "/v1/orders/full-1/events", token, driverEvent("full-1", 1))
	if code != http.StatusInsufficientStorage || !strings.Contains(string(body), "WAL is full") {
		t.Fatalf("ingest at a full WAL: %d %s, want 507", code, body)
	}
	if orders := snapshotsMatchWAL(t, js); orders != stored {
		t.Fatalf("the WAL folds to %d orders, %d were acknowledged", orders, stored)
	}
	m := in.metrics(t)
	if m[`orderflow_stream_max_bytes{stream="ORDER_EVENTS"}`] != limit || m[`orderflow_stream_bytes{stream="ORDER_EVENTS"}`] < 0.95*limit {
		t.Fatalf("stream metrics at the limit: bytes %v of %v", m[`orderflow_stream_bytes{stream="ORDER_EVENTS"}`], m[`orderflow_stream_max_bytes{stream="ORDER_EVENTS"}`])
	}
	if m[`orderflow_ingest_requests_total{code="507",source="driver"}`] != 1 {
		t.Fatalf("the 507 is not counted: %v", m)
	}
	if code, _ := in.get(t, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz %d with a full WAL: reads still work, the instance is ready", code)
	}
	t.Logf("WAL full at %d events, %d bytes of %d", st.Msgs, st.Bytes, limit)
}

// publishParallel splits msgs by order over n producers, each with its own
// connection, publishing at rate/n until deadline; it returns every stored sequence.
func publishParallel(t testing.TB, url string, msgs []simulate.Message, rate float64, deadline time.Time, n int) []uint64 {
	t.Helper()
	parts := make([][]simulate.Message, n)
	for _, m := range msgs {
		h := fnv.New32a()
		h.Write([]byte(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]))
		parts[h.Sum32()%uint32(n)] = append(parts[h.Sum32()%uint32(n)], m)
	}
	var mu sync.Mutex
	var all []uint64
	var wg sync.WaitGroup
	for _, part := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, js := connect(t, url)
			defer nc.Close()
			seqs := publishPaced(t, js, part, rate/float64(n), deadline)
			mu.Lock()
			all = append(all, seqs...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all
}

// snapshotsMatchWAL checks that every order's snapshot equals the resolver over
// the WAL (every stored event folded in, none twice) and returns the order count.
func snapshotsMatchWAL(t testing.TB, js jetstream.JetStream) int {
	t.Helper()
	ctx := context.Background()
	want, err := verify.FromWAL(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	got, err := verify.Snapshots(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.Diff(want, got); len(diffs) > 0 {
		t.Errorf("%d orders' snapshots differ from the resolver over the WAL; first: %v", len(diffs), diffs[0])
	}
	return len(want)
}

func connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func probeMsg(id string) *nats.Msg {
	m := nats.NewMsg("orders.events.platform." + id)
	m.Header.Set(nats.MsgIdHdr, id+"-platform-1")
	m.Data = []byte(fmt.Sprintf(`{"schema_version":1,"event_id":"%s-platform-1","order_id":%q,"source":"platform","source_seq":1,`+
		`"occurred_at":"2026-11-28T12:00:00Z","status":"created","customer_id":"c-probe","restaurant_id":"r-probe"}`, id, id))
	return m
}

// publishPaced publishes msgs at rate per second (0 = as fast as the server acks)
// with pipelined async publishes, stopping at deadline if it is set, and returns
// the WAL sequence of every message the WAL stored (duplicates within the window
// are acknowledged but not stored). Any refusal fails t.
func publishPaced(t testing.TB, js jetstream.JetStream, msgs []simulate.Message, rate float64, deadline time.Time) []uint64 {
	t.Helper()
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	start := time.Now()
	for i, m := range msgs {
		if !deadline.IsZero() && time.Now().After(deadline) {
			break
		}
		if d := simulate.PaceDelay(i, rate, time.Since(start)); d > 0 {
			time.Sleep(d)
		}
		for {
			f, err := js.PublishMsgAsync(m.NatsMsg())
			if err == nil {
				futures = append(futures, f)
				break
			}
			if err != jetstream.ErrTooManyStalledMsgs {
				t.Errorf("publish: %v", err) // Errorf: publishParallel calls this off the test goroutine
				return nil
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	var seqs []uint64
	for _, f := range futures {
		select {
		case a := <-f.Ok():
			if !a.Duplicate {
				seqs = append(seqs, a.Sequence)
			}
		case err := <-f.Err():
			t.Errorf("publish refused below the WAL's limits: %v", err)
		case <-time.After(2 * time.Minute):
			t.Error("publish not acknowledged within 2m")
			return nil
		}
	}
	return seqs
}

// TestWALAgeLimitNeedsTheArchiveOff: an age limit would delete events the archive
// has not taken yet, so serve refuses the combination before it starts anything.
func TestWALAgeLimitNeedsTheArchiveOff(t *testing.T) {
	dir := t.TempDir()
	out, err := exec.Command(orderflowBinary(t), "serve", "--data-dir", dir, "--nats-listen", freeAddr(t),
		"--http-listen", freeAddr(t), "--wal-max-age", "720h").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "--no-archive") {
		t.Fatalf("serve --wal-max-age with the archive on: %v\n%s\nwant exit 2 naming --no-archive", err, out)
	}
	out, err = exec.Command(orderflowBinary(t), "serve", "--wal-max-bytes", "12 parsecs").CombinedOutput()
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "not a size in bytes") {
		t.Fatalf("serve --wal-max-bytes '12 parsecs': %v\n%s", err, out)
	}
}
