//go:build regions_cluster

package app_test

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/adapters/regions"
	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/testsupport/netfault"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// TestRegionsR3PartitionNodeLossAndHeal is TestRegionsPartitionAndHeal on the
// deployment `serve --nats-url --region --replicas 3` is for: each region a
// 3-server JetStream cluster (JetStream domain = the region's name), R3 streams and
// buckets, every server of a soliciting a leafnode link to b's servers (through
// proxies that cut it) with the region link's deny list. Producers publish a
// contending workload to both regions, each event to either, retrying what is not
// acknowledged. The link is cut for the middle third; during it, the server leading
// a's WAL is shut down mid-stream (its cluster keeps quorum); the link heals for
// the last third, during which the server leading b's WAL is shut down; then both
// come back. Afterwards both WALs hold every event once, each ingest log exactly
// what was published in its region, every order's view in both regions equals the
// resolver over all events, and the ledger (a's) holds every owed milestone once,
// b's copy equal.
//
// A soak test, outside the regular suite: go tool task soak runs it (-tags
// regions_cluster); 22-45 s on a loaded 2-core machine.
func TestRegionsR3PartitionNodeLossAndHeal(t *testing.T) {
	ctx := context.Background()
	began := time.Now()
	cb := testenv.NATSClusterWith(t, testenv.ClusterConfig{Nodes: 3, Name: "b", Domain: "b", LeafListen: true,
		Configure: func(_ int, o *server.Options) error {
			// A server that accepts a leafnode tells it its cluster peers' leafnode
			// addresses, which the soliciting server then also dials: here the real
			// ones behind the proxies, which would make the link outlive its cut (found
			// by this test). Where regions reach each other through proxies or NAT,
			// the accepting servers advertise nothing (or the reachable address).
			o.LeafNode.NoAdvertise = true
			return nil
		}})
	var links []*netfault.Link
	var proxied []string
	for i, addr := range cb.LeafAddrs {
		l := netfault.NewLink(t, fmt.Sprintf("a-b%d", i), addr)
		links, proxied = append(links, l), append(proxied, l.Addr())
	}
	ca := testenv.NATSClusterWith(t, testenv.ClusterConfig{Nodes: 3, Name: "a", Domain: "a",
		Configure: func(_ int, o *server.Options) error {
			// What regions.Config.Configure sets on an embedded server, listing
			// every server of b so the link outlives any one of them.
			remote, err := regions.Remote(proxied...)
			if err != nil {
				return err
			}
			o.LeafNode.Remotes = []*server.RemoteLeafOpts{remote}
			o.LeafNode.ReconnectInterval = time.Second
			return nil
		}})

	regionOn := func(c *testenv.ClusterEnv, name, peer string) *region {
		r, _ := serveRegion(t, app.ServeConfig{
			NATSURL: strings.Join(c.URLs, ","),
			Region:  regions.Config{Name: name, Peers: []regions.Peer{{Name: peer}}},
			// "Every event once" holds for retries and re-sourced messages within the
			// duplicate window (beyond it a retry is a second WAL message and still
			// one event to the resolver, README "Regions"): a window longer than the
			// test may run (-timeout 10m) keeps a slow run from failing on time.
			Topology: topology.Topology{Partitions: 4, Replicas: 3, LanePinnedTTL: 2 * time.Second, LaneAckWait: 3 * time.Second,
				DuplicateWindow: 15 * time.Minute},
		}, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		return r
	}
	b := regionOn(cb, "b", "a")
	a := regionOn(ca, "a", "b")
	waitFor(t, 60*time.Second, "regions linked", func() error {
		if err := caughtUp(ctx, a); err != nil {
			return err
		}
		return caughtUp(ctx, b)
	})
	t.Logf("two 3-server regions up and linked in %s", time.Since(began).Round(time.Millisecond))
	for _, r := range []*region{a, b} {
		s, err := r.js.Stream(ctx, topology.EventsStream)
		if err != nil {
			t.Fatal(err)
		}
		if n := s.CachedInfo().Config.Replicas; n != 3 {
			t.Fatalf("region %s: ORDER_EVENTS has %d replicas, want 3", r.name, n)
		}
	}

	msgs, _, err := simulate.Generate(simulate.Config{Seed: 23, Orders: 400, DuplicateRate: 0.1, InvalidRate: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(23))
	third := len(msgs) / 3
	// Which event ids each region's producers had acknowledged, to check that each
	// region's ingest log holds its own and nothing that crossed the link.
	published := map[string]map[string]bool{"a": {}, "b": {}}
	publishSplitAcked(t, rng, msgs[:third], a, b, published, nil)

	for _, l := range links {
		l.Cut()
	}
	waitFor(t, 20*time.Second, "link reported down", linkDown(ctx, a))
	// Halfway through a's share of the middle third, the server leading a's WAL
	// (which runs its sources) shuts down; its cluster keeps quorum.
	start := time.Now()
	lostA := publishSplitAcked(t, rng, msgs[third:2*third], a, b, published, func() int { return stopWALLeader(t, ctx, a, ca) })
	t.Logf("region b while cut: %d milestones queued for the home", drainedWhileCut(t, ctx, a, b))
	for _, r := range []*region{a, b} {
		if err := linkDown(ctx, r)(); err != nil {
			t.Fatalf("the link came back while cut: %v", err)
		}
	}

	// Healed, both regions catch up while the last third arrives, and halfway
	// through it the server leading b's WAL shuts down too.
	for _, l := range links {
		l.Heal()
	}
	lostB := publishSplitAcked(t, rng, msgs[2*third:], a, b, published, func() int { return stopWALLeader(t, ctx, b, cb) })
	t.Logf("last two thirds published and acknowledged in %s", time.Since(start).Round(time.Millisecond))
	ca.StartNode(t, lostA)
	cb.StartNode(t, lostB)
	ca.WaitMetaLeader(t)
	cb.WaitMetaLeader(t)
	restarted := time.Now()

	distinct := distinctEvents(msgs)
	waitFor(t, 120*time.Second, "both WALs hold every event", func() error {
		err := walsHold(ctx, distinct, a, b)()
		if err != nil {
			return fmt.Errorf("%w%s", err, walDuplicates(ctx, a, b))
		}
		return nil
	})
	t.Logf("both WALs complete %s after the servers came back", time.Since(restarted).Round(time.Millisecond))
	for _, r := range []*region{a, b} {
		waitFor(t, 60*time.Second, "region "+r.name+"'s restarted server has caught up", replicasCurrent(ctx, r, 3))
		t.Logf("region %s: every WAL replica current %s after the servers came back", r.name, time.Since(restarted).Round(time.Millisecond))
		s, err := r.js.Stream(ctx, topology.IngestStream)
		if err != nil {
			t.Fatal(err)
		}
		// Nothing crossed the link but JetStream's own traffic: this region's
		// ingest log holds exactly what was published here.
		if got, want := s.CachedInfo().State.Msgs, len(published[r.name]); got != uint64(want) {
			t.Errorf("region %s: ORDER_INGEST holds %d events, %d were published there", r.name, got, want)
		}
	}
	views := assertConverged(t, ctx, msgs, a, b)
	t.Logf("converged %s after the servers came back", time.Since(restarted).Round(time.Millisecond))
	t.Logf("%d orders, %d messages (%d distinct events) published across both regions (R3, 3 servers each); link cut for a third of them", len(views["a"]), len(msgs), distinct)
}

// stopWALLeader shuts down the server of c leading r's ORDER_EVENTS (the one running
// its sources) and returns its index.
func stopWALLeader(t *testing.T, ctx context.Context, r *region, c *testenv.ClusterEnv) int {
	t.Helper()
	var leader string
	i := -1
	waitFor(t, 30*time.Second, "region "+r.name+"'s WAL has a leader", func() error {
		s, err := r.js.Stream(ctx, topology.EventsStream)
		if err != nil {
			return err
		}
		if cl := s.CachedInfo().Cluster; cl != nil {
			leader = cl.Leader
		}
		if i = c.NodeIndex(leader); i < 0 {
			return fmt.Errorf("leader %q is none of the region's servers", leader)
		}
		return nil
	})
	c.StopNode(i)
	t.Logf("region %s: server %s (leading the WAL) shut down", r.name, leader)
	return i
}

// walDuplicates describes the messages of each region's WAL that share a
// Nats-Msg-Id with an earlier one (where each came from and when it was stored),
// for a failure message; empty when there are none.
func walDuplicates(ctx context.Context, rs ...*region) string {
	var out strings.Builder
	for _, r := range rs {
		s, err := r.js.Stream(ctx, topology.EventsStream)
		if err != nil {
			continue
		}
		st := s.CachedInfo().State
		first := map[string]*jetstream.RawStreamMsg{}
		shown := 0
		for seq := st.FirstSeq; seq <= st.LastSeq && seq > 0 && shown < 5; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				continue
			}
			id := m.Header.Get(nats.MsgIdHdr)
			if f, ok := first[id]; ok {
				shown++
				fmt.Fprintf(&out, "\nregion %s: event %s at WAL seq %d (source %q, stored %s) and %d (source %q, stored %s)", r.name, id,
					f.Sequence, f.Header.Get("Nats-Stream-Source"), f.Time.Format(time.RFC3339Nano),
					m.Sequence, m.Header.Get("Nats-Stream-Source"), m.Time.Format(time.RFC3339Nano))
				continue
			}
			first[id] = m
		}
	}
	return out.String()
}

// replicasCurrent reports nil once r's WAL has n replicas, all current.
func replicasCurrent(ctx context.Context, r *region, n int) func() error {
	return func() error {
		s, err := r.js.Stream(ctx, topology.EventsStream)
		if err != nil {
			return err
		}
		cl := s.CachedInfo().Cluster
		if cl == nil || cl.Leader == "" || len(cl.Replicas)+1 != n {
			return fmt.Errorf("region %s: WAL cluster %+v", r.name, cl)
		}
		for _, p := range cl.Replicas {
			if !p.Current || p.Offline {
				return fmt.Errorf("region %s: WAL replica %s: current %v, offline %v, lag %d", r.name, p.Name, p.Current, p.Offline, p.Lag)
			}
		}
		return nil
	}
}

// publishSplitAcked publishes each message to a or b at random, each region's
// share in order, every message again until it is acknowledged (publishUntilAcked),
// and records each acknowledged id under the region's name in acked. mid, when set,
// runs from the test's goroutine once a's producer is halfway through its share,
// while both producers keep publishing; its result is returned.
func publishSplitAcked(t *testing.T, rng *rand.Rand, msgs []simulate.Message, a, b *region, acked map[string]map[string]bool, mid func() int) int {
	t.Helper()
	toA, toB := splitRandomly(rng, msgs)
	ctx := context.Background()
	half := make(chan struct{})
	halfway := sync.OnceFunc(func() { close(half) })
	publish := func(js jetstream.JetStream, ms []simulate.Message, halfway func()) error {
		defer halfway()
		for i, m := range ms {
			if i == len(ms)/2 {
				halfway()
			}
			if _, err := publishUntilAcked(ctx, js, m); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make(chan error, 2)
	go func() { errs <- publish(a.js, toA, halfway) }()
	go func() { errs <- publish(b.js, toB, func() {}) }()
	var out int
	if mid != nil {
		<-half
		out = mid()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for name, ms := range map[string][]simulate.Message{a.name: toA, b.name: toB} {
		for _, m := range ms {
			acked[name][m.MsgID] = true
		}
	}
	return out
}
