package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/regions"
	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/testsupport/netfault"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// region is one region of a test: an orderflow instance with its embedded server.
type region struct {
	name string
	url  string
	nc   *nats.Conn
	js   jetstream.JetStream
}

// twoRegions starts regions a and b in this process, joined through a proxied link
// (a solicits b's --region-listen through the proxy).
func twoRegions(t *testing.T) (a, b *region, link *netfault.Link) {
	t.Helper()
	leafB := freeAddr(t)
	link = netfault.NewLink(t, "a-b", leafB)
	b, _ = startRegion(t, "b", t.TempDir(), leafB, regions.Peer{Name: "a"})
	a, _ = startRegion(t, "a", t.TempDir(), freeAddr(t), regions.Peer{Name: "b", Addr: link.Addr()})
	return a, b, link
}

// startRegion runs one region's serve on dataDir; stop ends it (as SIGTERM does),
// and so does the end of the test.
func startRegion(t *testing.T, name, dataDir, listen string, peer regions.Peer) (r *region, stop func()) {
	t.Helper()
	return startRegionWith(t, dataDir, regions.Config{Name: name, Listen: listen, Peers: []regions.Peer{peer}})
}

// startRegionWith is startRegion with any region settings.
func startRegionWith(t *testing.T, dataDir string, rc regions.Config) (r *region, stop func()) {
	t.Helper()
	return serveRegion(t, app.ServeConfig{DataDir: dataDir, NATSListen: "127.0.0.1:0", Region: rc}, nats.MaxReconnects(0))
}

// serveRegion runs serve with cfg (its region in cfg.Region) and connects to the
// region's NATS with opts; stop ends it (as SIGTERM does), and so does the end of
// the test.
func serveRegion(t *testing.T, cfg app.ServeConfig, opts ...nats.Option) (r *region, stop func()) {
	t.Helper()
	name := cfg.Region.Name
	addrs := make(chan app.Addrs, 1)
	cfg.Started = func(a app.Addrs) { addrs <- a }
	stop = serveInBackground(t, cfg)
	var url string
	select {
	case a := <-addrs:
		url = a.NATS
	case <-time.After(30 * time.Second):
		t.Fatalf("region %s did not start within 30s", name)
	}
	nc, js := dial(t, url, opts...)
	return &region{name: name, url: url, nc: nc, js: js}, stop
}

// linkedPair is the settings of regions a and b on data directories of their own,
// a soliciting b's --region-listen through a proxied link.
func linkedPair(t *testing.T) (dirA, dirB string, cfgA, cfgB regions.Config, link *netfault.Link) {
	t.Helper()
	leafB := freeAddr(t)
	link = netfault.NewLink(t, "a-b", leafB)
	cfgA = regions.Config{Name: "a", Listen: freeAddr(t), Peers: []regions.Peer{{Name: "b", Addr: link.Addr()}}}
	cfgB = regions.Config{Name: "b", Listen: leafB, Peers: []regions.Peer{{Name: "a"}}}
	return t.TempDir(), t.TempDir(), cfgA, cfgB, link
}

// convergent is every order's view without the per-region arrival bookkeeping:
// wal_seq (a position in this region's WAL) and updated_at (the producer time of the
// event that last changed the answer, which depends on arrival order; resolver rule
// 14). Everything else is a function of the set of events (rule 1, README).
func convergent(states map[string]*resolver.State) map[string]resolver.View {
	out := verify.Views(states)
	for id, v := range out {
		v.WalSeq, v.UpdatedAt = 0, time.Time{}
		out[id] = v
	}
	return out
}

// walMilestones is what the resolver owes over r's WAL, in its order.
func walMilestones(ctx context.Context, js jetstream.JetStream) (verify.Milestones, error) {
	var msgs []simulate.Message
	_, err := verify.FoldWAL(ctx, js, topology.WALPrefix+".>", func(ev *schemas.Event, seq uint64) {
		msgs = append(msgs, simulate.Message{MsgID: fmt.Sprint(seq), Event: *ev})
	})
	return verify.ExpectedMilestones(msgs), err
}

// serveInBackground runs app.Serve until stop or the end of the test; it must
// then stop cleanly.
func serveInBackground(t *testing.T, cfg app.ServeConfig) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg.HTTPListen = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- app.Serve(ctx, cfg) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve %s: %v", cfg.Region.Name, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// caughtUp reports nil once r's WAL holds every event of its own ingest log and of
// its peer's, as region status reports it.
func caughtUp(ctx context.Context, r *region) error {
	st, err := regions.Read(ctx, r.nc)
	if err != nil {
		return err
	}
	if st.LocalLagEvents > 0 {
		return fmt.Errorf("region %s: %d own events not in the WAL yet", r.name, st.LocalLagEvents)
	}
	for _, p := range st.Peers {
		if p.Link != "up" || p.LagEvents > 0 || p.ReplicatedSeq != p.PeerLastSeq {
			return fmt.Errorf("region %s (wal %d, ingest %d): peer %+v", r.name, st.WALLastSeq, st.IngestLastSeq, p)
		}
	}
	return nil
}

// walsHold reports nil once every region's WAL holds n events.
func walsHold(ctx context.Context, n int, rs ...*region) func() error {
	return func() error {
		for _, r := range rs {
			info, err := r.js.Stream(ctx, topology.EventsStream)
			if err != nil {
				return err
			}
			if got := info.CachedInfo().State.Msgs; got != uint64(n) {
				return fmt.Errorf("region %s: WAL holds %d of %d events", r.name, got, n)
			}
		}
		return nil
	}
}

// publishSplit publishes each message to a or b at random, with acks.
func publishSplit(t *testing.T, rng *rand.Rand, msgs []simulate.Message, a, b *region) {
	t.Helper()
	toA, toB := splitRandomly(rng, msgs)
	ctx := context.Background()
	errs := make(chan error, 2)
	go func() { errs <- simulate.PublishAll(ctx, a.js, toA, 0) }()
	go func() { errs <- simulate.PublishAll(ctx, b.js, toB, 0) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// splitRandomly deals msgs to two producers at random, keeping their order.
func splitRandomly(rng *rand.Rand, msgs []simulate.Message) (first, second []simulate.Message) {
	for _, m := range msgs {
		if rng.Intn(2) == 0 {
			first = append(first, m)
		} else {
			second = append(second, m)
		}
	}
	return first, second
}

// agreeWithResolver waits until each region's WAL holds msgs and its lanes have made
// every event durable,
// checks that every order's snapshot there equals the resolver over msgs (without
// the per-region fields, see convergent), and returns the regions' views and the
// union of what the resolver owes over each region's WAL: milestones follow the
// path an order took in that region's WAL order (a region that saw picked_up before
// a racing cancel owes picked_up and its revocation; one that saw the cancel first
// owes neither).
func agreeWithResolver(t *testing.T, ctx context.Context, msgs []simulate.Message, rs ...*region) (verify.Milestones, map[string]map[string]resolver.View) {
	t.Helper()
	// A producer's ack comes from the region's ingest log, which the WAL sources
	// asynchronously: wait for the WALs before the lanes.
	waitFor(t, 60*time.Second, "the WALs hold every event", walsHold(ctx, distinctEvents(msgs), rs...))
	want := convergent(verify.FoldMessages(msgs))
	owed, views := verify.Milestones{}, map[string]map[string]resolver.View{}
	for _, r := range rs {
		if err := pipelines.WaitDrained(ctx, r.js, time.Minute); err != nil {
			t.Fatalf("region %s: %v", r.name, err)
		}
		got, err := verify.Snapshots(ctx, r.js)
		if err != nil {
			t.Fatal(err)
		}
		views[r.name] = convergent(got)
		if diffs := verify.DiffViews(want, views[r.name]); len(diffs) > 0 {
			w, _ := json.Marshal(diffs[0].Want)
			g, _ := json.Marshal(diffs[0].Got)
			t.Errorf("region %s: %d orders differ from the resolver over all events, first:\nwant %s\ngot  %s", r.name, len(diffs), w, g)
		}
		ms, err := walMilestones(ctx, r.js)
		if err != nil {
			t.Fatal(err)
		}
		owed = unionMilestones(owed, ms)
	}
	return owed, views
}

// distinctEvents counts the event ids among msgs (a retry repeats one).
func distinctEvents(msgs []simulate.Message) int {
	ids := map[string]bool{}
	for _, m := range msgs {
		ids[m.MsgID] = true
	}
	return len(ids)
}

// unionMilestones adds b's milestones to a.
func unionMilestones(a, b verify.Milestones) verify.Milestones {
	for id, kinds := range b {
		if a[id] == nil {
			a[id] = map[string]bool{}
		}
		for k := range kinds {
			a[id][k] = true
		}
	}
	return a
}

// assertOneLedger waits until home's ORDER_MILESTONES holds exactly owed (each
// milestone once: verify.PublishedMilestones fails on a second copy), no region has
// milestones queued for the home, and every copy holds what the ledger holds.
func assertOneLedger(t *testing.T, ctx context.Context, owed verify.Milestones, home *region, copies ...*region) {
	t.Helper()
	waitFor(t, 60*time.Second, "the home's ledger holds every owed milestone once", func() error {
		got, err := verify.PublishedMilestones(ctx, home.js)
		if err != nil {
			return err
		}
		if diffs := verify.DiffMilestones(owed, got); len(diffs) > 0 {
			return fmt.Errorf("%d orders differ from what the regions owe, first: %s", len(diffs), diffs[0])
		}
		if diffs := verify.DiffMilestones(got, owed); len(diffs) > 0 {
			return fmt.Errorf("%d orders have milestones no region owes, first: %s", len(diffs), diffs[0])
		}
		return nil
	})
	ledger, err := verify.PublishedMilestones(ctx, home.js)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range append([]*region{home}, copies...) {
		waitFor(t, 30*time.Second, "region "+r.name+"'s milestones settled", func() error {
			st, err := regions.Read(ctx, r.nc)
			if err != nil {
				return err
			}
			if st.Milestones.Home != home.name || st.Milestones.Queued > 0 || st.Milestones.Copy != nil && st.Milestones.Copy.LagEvents > 0 {
				return fmt.Errorf("region %s: milestones %+v", r.name, st.Milestones)
			}
			got, err := verify.PublishedMilestones(ctx, r.js)
			if err != nil {
				return err
			}
			if diffs := verify.DiffMilestones(ledger, got); len(diffs) > 0 || len(got) != len(ledger) {
				return fmt.Errorf("region %s: copy differs from the ledger in %d orders (%d of %d orders)", r.name, len(diffs), len(got), len(ledger))
			}
			return nil
		})
	}
}

// linkDown reports nil once r's status shows the link to its one peer down.
func linkDown(ctx context.Context, r *region) func() error {
	return func() error {
		st, err := regions.Read(ctx, r.nc)
		if err != nil && err != regions.ErrNotRegional {
			return err
		}
		if len(st.Peers) != 1 || st.Peers[0].Link != "down" {
			return fmt.Errorf("region %s sees %+v", r.name, st.Peers)
		}
		return nil
	}
}

// drainedWhileCut checks that each region keeps serving its own producers while
// the link is cut: its lanes fold and checkpoint (WaitDrained waits for the
// checkpoints), while b's milestones wait in its queue for the home, a. It returns
// how many b has queued.
func drainedWhileCut(t *testing.T, ctx context.Context, a, b *region) uint64 {
	t.Helper()
	for _, r := range []*region{a, b} {
		if err := pipelines.WaitDrained(ctx, r.js, time.Minute); err != nil {
			t.Fatalf("region %s while cut: %v", r.name, err)
		}
	}
	var queued uint64
	waitFor(t, 30*time.Second, "region b queues milestones for the home while cut off", func() error {
		st, err := regions.Read(ctx, b.nc)
		if err != nil {
			return err
		}
		if st.Milestones.Queued == 0 || st.Milestones.Home != a.name {
			return fmt.Errorf("milestones %+v, want some queued for %s", st.Milestones, a.name)
		}
		queued = st.Milestones.Queued
		return nil
	})
	return queued
}

// assertConverged checks what a partition must not break: every order's view is
// the same in both regions and equals the resolver over msgs, and home's ledger
// holds every milestone some region owes, each once, with other's copy identical
// to it. It returns the regions' views.
func assertConverged(t *testing.T, ctx context.Context, msgs []simulate.Message, home, other *region) map[string]map[string]resolver.View {
	t.Helper()
	owed, views := agreeWithResolver(t, ctx, msgs, home, other)
	assertOneLedger(t, ctx, owed, home, other)
	if diffs := verify.DiffViews(views[home.name], views[other.name]); len(diffs) > 0 {
		t.Errorf("%d orders differ between the regions, first: %v", len(diffs), diffs[0])
	}
	return views
}

// TestRegionsPartitionAndHeal: producers publish a contending workload to both
// regions, each event to either, while the link between them is up, then cut, then
// healed. Afterwards both WALs hold every event once, every order's snapshot is
// identical in both regions and equal to the resolver over the union of all
// published events, and the one milestone ledger (region a's, copied in b) holds
// every milestone either region's path owes, exactly once.
func TestRegionsPartitionAndHeal(t *testing.T) {
	a, b, link := twoRegions(t)
	partitionAndHeal(t, a, b, link, 400)
}

// partitionAndHeal publishes orders' events split between a (the milestones
// home) and b, a third of them while the link between them is cut, and checks
// that both regions end with every event once, agree with the resolver and with
// each other, and that the home's ledger holds every milestone once.
func partitionAndHeal(t *testing.T, a, b *region, link *netfault.Link, orders int) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, 20*time.Second, "regions linked", func() error {
		if err := caughtUp(ctx, a); err != nil {
			return err
		}
		return caughtUp(ctx, b)
	})

	msgs, _, err := simulate.Generate(simulate.Config{Seed: 13, Orders: orders, DuplicateRate: 0.1, InvalidRate: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(13))
	third := len(msgs) / 3
	publishSplit(t, rng, msgs[:third], a, b)

	link.Cut()
	waitFor(t, 10*time.Second, "link reported down", linkDown(ctx, a))
	publishSplit(t, rng, msgs[third:2*third], a, b)
	t.Logf("region b while cut: %d milestones queued for the home", drainedWhileCut(t, ctx, a, b))

	link.Heal()
	publishSplit(t, rng, msgs[2*third:], a, b)
	distinct := distinctEvents(msgs)
	// Region status can show a lag of a few events after the last real one: a retry
	// the region already had is dropped by its WAL and does not advance the source
	// state (README "Regions"). So wait for the WALs themselves, then check status.
	waitFor(t, 60*time.Second, "both WALs hold every event", walsHold(ctx, distinct, a, b))
	for _, r := range []*region{a, b} {
		st, err := regions.Read(ctx, r.nc)
		if err != nil {
			t.Fatal(err)
		}
		if p := st.Peers[0]; p.Link != "up" || p.ReplicatedSeq == 0 || p.PeerLastSeq == 0 {
			t.Errorf("region %s: status after heal %+v", r.name, p)
		}
	}

	for _, r := range []*region{a, b} {
		s, err := r.js.Stream(ctx, topology.EventsStream)
		if err != nil {
			t.Fatal(err)
		}
		// Every event once: no echo, and a retry published in the other region is
		// dropped by the WAL's duplicate window.
		if n := s.CachedInfo().State.Msgs; n != uint64(distinct) {
			t.Errorf("region %s: WAL holds %d events, want %d (one per event id)", r.name, n, distinct)
		}
	}
	views := assertConverged(t, ctx, msgs, a, b)
	t.Logf("%d orders, %d messages (%d distinct events) published across both regions; link cut for a third of them", len(views["a"]), len(msgs), distinct)
}

// TestRegionRestartResumesReplication: region b stops while a keeps taking events,
// then b restarts from its disk and takes events of its own. Both WALs end up with
// every event once and both regions agree with the resolver. (With nats-server
// 2.15.2 the restarted region's source of its peer does not resume by itself; the
// region watcher restarts it, see regions.Resume.)
func TestRegionRestartResumesReplication(t *testing.T) {
	ctx := context.Background()
	leafB := freeAddr(t)
	link := netfault.NewLink(t, "a-b", leafB)
	dirB := t.TempDir()
	b, stopB := startRegion(t, "b", dirB, leafB, regions.Peer{Name: "a"})
	a, _ := startRegion(t, "a", t.TempDir(), freeAddr(t), regions.Peer{Name: "b", Addr: link.Addr()})

	msgs, _, err := simulate.Generate(simulate.Config{Seed: 17, Orders: 150})
	if err != nil {
		t.Fatal(err)
	}
	third := len(msgs) / 3
	rng := rand.New(rand.NewSource(17))
	publishSplit(t, rng, msgs[:third], a, b)
	stopB()
	if err := simulate.PublishAll(ctx, a.js, msgs[third:2*third], 0); err != nil {
		t.Fatal(err)
	}
	b, _ = startRegion(t, "b", dirB, leafB, regions.Peer{Name: "a"})
	publishSplit(t, rng, msgs[2*third:], a, b)

	distinct := distinctEvents(msgs)
	waitFor(t, 60*time.Second, "both WALs hold every event", walsHold(ctx, distinct, a, b))
	owed, _ := agreeWithResolver(t, ctx, msgs, a, b)
	assertOneLedger(t, ctx, owed, a, b)
}
