package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/regions"
	"github.com/orderflow/orderflow/internal/services/consumers"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/testsupport/testrun"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// TestRegionKillAndFailback runs both regions as separate `orderflow serve`
// processes. Producers publish a contending workload to both; region a, the
// milestones home, is killed with SIGKILL mid-stream; a's producer, configured with
// both regions' URLs, fails over to b and retries every event it has no ack for,
// with the same ids; b takes writes and serves reads throughout; a restarts from its
// data directory and catches up. Watchers of order_status in both regions record
// every status they see. Afterwards: every acknowledged event is in both WALs, both
// regions' snapshots equal the resolver over all events, the home's ledger holds
// each milestone some region owes exactly once (and b's copy equals it), billing
// (reading b's copy) charged once per delivered order, and no watcher saw a status
// go backwards outside agent overrides. The time from the kill to the failed-over
// producer's first ack from b (RTO) is logged.
func TestRegionKillAndFailback(t *testing.T) {
	bin, err := testrun.Build(t.TempDir(), "../../cmd/orderflow")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	natsA, natsB, leafA, leafB := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	common := []string{"--partitions", "4", "--lane-failover", "2s", "--lane-ack-wait", "3s"}
	argsA := append([]string{"--data-dir", t.TempDir(), "--nats-listen", natsA, "--region", "a", "--region-listen", leafA, "--peer", "b=" + leafB}, common...)
	argsB := append([]string{"--data-dir", t.TempDir(), "--nats-listen", natsB, "--region", "b", "--region-listen", leafB, "--peer", "a"}, common...)
	b := testrun.Serve(t, bin, nil, argsB...)
	a := testrun.Serve(t, bin, nil, argsA...)
	a0 := connectRegion(t, "a", natsA)
	b0 := connectRegion(t, "b", natsB)
	waitFor(t, 30*time.Second, "regions linked", func() error {
		for _, r := range []*region{a0, b0} {
			st, err := regions.Read(ctx, r.nc)
			if err != nil {
				return err
			}
			if st.Peers[0].Link != "up" {
				return fmt.Errorf("region %s: %+v", r.name, st.Peers[0])
			}
		}
		return nil
	})

	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchA, watchB := watchStatuses(wctx, t, natsA), watchStatuses(wctx, t, natsB)
	bctx, stopBilling := context.WithCancel(ctx)
	billingDone := make(chan error, 1)
	go func() { billingDone <- consumers.Billing.Run(bctx, b0.js, io.Discard) }()
	defer func() {
		stopBilling()
		<-billingDone
	}()

	msgs, _, err := simulate.Generate(simulate.Config{Seed: 31, Orders: 300, DuplicateRate: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(31))
	toA, toB := splitRandomly(rng, msgs)

	// b's producer publishes throughout.
	bDone := make(chan error, 1)
	go func() { bDone <- simulate.PublishAll(ctx, b0.js, toB, 2000) }()

	// a's producer knows both regions; a dies a third of the way through its share.
	var killedAt, firstAckFromB time.Time
	failover := newFailoverProducer(t, natsA, natsB)
	for i, m := range toA {
		if i == len(toA)/3 {
			a.Kill()
			killedAt = time.Now()
			// b serves reads while a is down.
			id := m.Event.OrderID
			waitFor(t, 10*time.Second, "b serves an order while a is down", func() error {
				return getOK(b.HTTP + "/v1/orders/" + id)
			})
		}
		domain := failover.publish(ctx, m)
		if !killedAt.IsZero() && firstAckFromB.IsZero() && domain == "b" {
			firstAckFromB = time.Now()
		}
	}
	if err := <-bDone; err != nil {
		t.Fatalf("b's producer: %v", err)
	}
	t.Logf("RTO: %s from SIGKILL of region a to the failed-over producer's first ack from region b", firstAckFromB.Sub(killedAt).Round(time.Millisecond))

	// a comes back from its disk and catches up.
	restarted := time.Now()
	a = testrun.Serve(t, bin, nil, argsA...)
	a1 := connectRegion(t, "a", natsA)
	distinct := distinctEvents(msgs)
	waitFor(t, 90*time.Second, "both WALs hold every event", walsHold(ctx, distinct, a1, b0))
	t.Logf("region a caught up %s after its restart (%d events in each WAL)", time.Since(restarted).Round(time.Millisecond), distinct)

	owed, _ := agreeWithResolver(t, ctx, msgs, a1, b0)
	assertOneLedger(t, ctx, owed, a1, b0)

	// Billing, reading region b's copy, charged each billable milestone once.
	ledger, err := verify.PublishedMilestones(ctx, a1.js)
	if err != nil {
		t.Fatal(err)
	}
	var billable []string
	for _, id := range ledgerIDs(ledger) {
		if slices.ContainsFunc(consumers.Billing.Kinds, func(k string) bool { return strings.HasSuffix(id, "."+k) }) {
			billable = append(billable, id)
		}
	}
	waitFor(t, 30*time.Second, "billing recorded every billable milestone", func() error {
		recs, err := consumers.Billing.Ledger(ctx, b0.js)
		if err != nil {
			return err
		}
		var got []string
		for _, r := range recs {
			got = append(got, r.MilestoneID)
		}
		slices.Sort(got)
		slices.Sort(billable)
		if !slices.Equal(got, billable) {
			return fmt.Errorf("billing recorded %d effects, the ledger has %d billable milestones", len(got), len(billable))
		}
		return nil
	})

	// No watcher saw a status go backwards, except in orders an agent corrected.
	corrected := map[string]bool{}
	for _, m := range msgs {
		if m.Event.Source == schemas.SourceAgent {
			corrected[m.Event.OrderID] = true
		}
	}
	stopWatch()
	for name, w := range map[string]*statusWatch{"a": watchA, "b": watchB} {
		n, back := w.backwards(corrected)
		if len(back) > 0 {
			t.Errorf("region %s's watcher saw %d statuses go backwards, first: %s", name, len(back), back[0])
		}
		t.Logf("region %s's watcher saw %d status changes", name, n)
	}
	// The operator's view, through the CLI: nothing waits for the home, and the
	// home is not promoted behind its back.
	if out, err := exec.Command(bin, "region", "status", "--nats-url", "nats://"+natsB).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "milestones: home a, waiting for the home 0, this region's copy: link up, lag 0") {
		t.Errorf("region status in b: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "region", "promote-milestones", "--force", "--nats-url", "nats://"+natsB).CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "the milestones home still answers") {
		t.Errorf("promote-milestones in b with the home up: %v\n%s; want a refusal", err, out)
	}
	// Were a lost for good: the CLI promotes b's copy, keeping every milestone.
	a.Kill()
	out, err := exec.Command(bin, "region", "promote-milestones", "--force", "--json", "--nats-url", "nats://"+natsB).CombinedOutput()
	var p regions.Promotion
	if err != nil || json.Unmarshal(out, &p) != nil || p.Region != "b" || p.OldHome != "a" || p.Milestones != uint64(len(ledgerIDs(ledger))) {
		t.Errorf("promote-milestones in b with a gone: %v\n%s; want b to hold the %d milestones", err, out, len(ledgerIDs(ledger)))
	}
	b.Kill()
}

// ledgerIDs lists the milestone ids (<order_id>.<kind>) of m.
func ledgerIDs(m verify.Milestones) []string {
	var ids []string
	for id, kinds := range m {
		for k := range kinds {
			ids = append(ids, id+"."+k)
		}
	}
	return ids
}

func connectRegion(t *testing.T, name, addr string) *region {
	t.Helper()
	nc, js := dial(t, "nats://"+addr)
	return &region{name: name, url: addr, nc: nc, js: js}
}

// dial connects a client that reconnects forever (a region may be down a while).
func dial(t *testing.T, urls string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(urls, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func getOK(url string) error {
	resp, err := http.Get("http://" + url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// failoverProducer publishes with a client that knows both regions (a first):
// every event is retried, with the same Nats-Msg-Id, until some region acks it.
type failoverProducer struct {
	t  *testing.T
	js jetstream.JetStream
}

func newFailoverProducer(t *testing.T, first, second string) *failoverProducer {
	t.Helper()
	_, js := dial(t, "nats://"+first+",nats://"+second, nats.DontRandomize())
	return &failoverProducer{t: t, js: js}
}

// publish retries m until acked and returns the acking region's domain; no ack
// within a minute fails the test.
func (p *failoverProducer) publish(ctx context.Context, m simulate.Message) string {
	domain, err := publishUntilAcked(ctx, p.js, m)
	if err != nil {
		p.t.Fatal(err)
	}
	return domain
}

// publishUntilAcked publishes m, again with the same Nats-Msg-Id after each failure
// or second without an ack, until a server acknowledges it, and returns the acking
// JetStream domain; an error once a minute has passed without an ack.
func publishUntilAcked(ctx context.Context, js jetstream.JetStream, m simulate.Message) (string, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		ack, err := js.PublishMsg(pctx, m.NatsMsg())
		cancel()
		if err == nil {
			return ack.Domain, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("event %s: not acknowledged within a minute: %w", m.MsgID, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// statusWatch records every status a KV watcher of order_status saw, per order.
type statusWatch struct {
	mu   sync.Mutex
	seen map[string][]schemas.Status
}

// watchStatuses watches order_status in the region at addr until ctx ends,
// starting a new watch whenever the connection comes back (a restarted region).
func watchStatuses(ctx context.Context, t *testing.T, addr string) *statusWatch {
	t.Helper()
	w := &statusWatch{seen: map[string][]schemas.Status{}}
	reconnected := make(chan struct{}, 1)
	_, js := dial(t, "nats://"+addr, nats.ReconnectHandler(func(*nats.Conn) {
		select {
		case reconnected <- struct{}{}:
		default:
		}
	}))
	go func() {
		for ctx.Err() == nil {
			wctx, cancel := context.WithCancel(ctx)
			if kv, err := js.KeyValue(wctx, topology.StatusBucket); err == nil {
				if kw, err := kv.WatchAll(wctx); err == nil {
					w.record(wctx, kw, reconnected)
				}
			}
			cancel()
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *statusWatch) record(ctx context.Context, kw jetstream.KeyWatcher, reconnected <-chan struct{}) {
	defer kw.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reconnected:
			return
		case e, ok := <-kw.Updates():
			if !ok {
				return
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var v struct {
				Status schemas.Status `json:"status"`
			}
			if json.Unmarshal(e.Value(), &v) != nil || v.Status == "" {
				continue
			}
			w.mu.Lock()
			if s := w.seen[e.Key()]; len(s) == 0 || s[len(s)-1] != v.Status {
				w.seen[e.Key()] = append(s, v.Status)
			}
			w.mu.Unlock()
		}
	}
}

// backwards lists the observed moves to a status that precedes the previous one
// (resolver.Precedes), outside the orders in except, and counts all changes seen.
func (w *statusWatch) backwards(except map[string]bool) (changes int, back []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, s := range w.seen {
		changes += len(s)
		if except[id] {
			continue
		}
		for i := 1; i < len(s); i++ {
			if resolver.Precedes(s[i], s[i-1]) {
				back = append(back, fmt.Sprintf("order %s: %v", id, s))
				break
			}
		}
	}
	return changes, back
}
