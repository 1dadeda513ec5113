package app_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/adapters/embedded"
	"github.com/orderflow/orderflow/internal/adapters/regions"
	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/testsupport/netfault"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// regionServer runs only the embedded NATS server of a region on dataDir (no
// orderflow serve: no lanes, no provisioning), linked to its peers as serve links
// it; stop shuts it down, and so does the end of the test.
func regionServer(t *testing.T, dataDir string, rc regions.Config) (r *region, stop func()) {
	t.Helper()
	rc.SetDefaults()
	srv, err := embedded.Start(context.Background(), embedded.Config{
		DataDir: dataDir, Listen: "127.0.0.1:0", Configure: rc.Configure,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, js := dial(t, srv.ClientURL(), nats.MaxReconnects(0))
	return &region{name: rc.Name, url: srv.ClientURL(), nc: nc, js: js}, srv.Shutdown
}

// ledgerPair is two regions on linkedPair's settings, a the milestones home.
type ledgerPair struct {
	dirA, dirB   string
	cfgA, cfgB   regions.Config
	link         *netfault.Link
	a, b         *region
	stopA, stopB func()
}

// startLedgerPair starts b then a, publishes msgs split between them at random
// (seed) and waits until the ledger holds every milestone they owe, once.
func startLedgerPair(t *testing.T, msgs []simulate.Message, seed int64) ledgerPair {
	t.Helper()
	var p ledgerPair
	p.dirA, p.dirB, p.cfgA, p.cfgB, p.link = linkedPair(t)
	p.b, p.stopB = startRegionWith(t, p.dirB, p.cfgB)
	p.a, p.stopA = startRegionWith(t, p.dirA, p.cfgA)
	publishSplit(t, rand.New(rand.NewSource(seed)), msgs, p.a, p.b)
	owed, _ := agreeWithResolver(t, context.Background(), msgs, p.a, p.b)
	assertOneLedger(t, context.Background(), owed, p.a, p.b)
	return p
}

// TestMilestonesHandoverBelievesOnlyTheHome: a handover deletes the old ledger only
// once every milestone it holds is in the new home's ledger. The old home a is
// handed over to b, promoted while a was down, whose ledger lacks a milestone a
// stored (the copy lag) and cannot store anything now. Forwarded on a's own
// connection, that milestone was also captured by a's ledger, which answered
// "subject full": counted as stored by b, a's ledger was deleted and the milestone
// was gone from every region. Now the handover stops a's ledger taking anything
// first, takes only b's acknowledgements, checks b's ledger, and refuses; a's
// ledger is kept, takes nothing more, and a second handover, once b stores again,
// moves the milestone.
func TestMilestonesHandoverBelievesOnlyTheHome(t *testing.T) {
	ctx := context.Background()
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 5, Orders: 40})
	if err != nil {
		t.Fatal(err)
	}
	p := startLedgerPair(t, msgs, 5)
	dirA, cfgA, a, b := p.dirA, p.cfgA, p.a, p.b

	p.stopA()
	if _, err := regions.PromoteMilestones(ctx, b.nc); err != nil {
		t.Fatal(err)
	}
	bs, err := b.js.Stream(ctx, topology.MilestonesStream)
	if err != nil {
		t.Fatal(err)
	}
	// b's ledger stores nothing now: it stands in for a home that does not store
	// what crosses the link (a full stream, a link dropping packets).
	full, err := bs.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	limited := full.Config
	limited.MaxMsgs, limited.Discard = int64(full.State.Msgs), jetstream.DiscardNew
	if _, err := b.js.UpdateStream(ctx, limited); err != nil {
		t.Fatal(err)
	}

	// a's server comes back with its old ledger (nothing of serve runs), which
	// holds a milestone b's copy never received (the copy lag at promotion).
	a, _ = regionServer(t, dirA, cfgA)
	lagged := topology.MilestonesPrefix + ".delivered.o-lagged"
	if _, err := a.js.Publish(ctx, lagged, []byte("{}"), jetstream.WithMsgID("o-lagged.delivered")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "b answers a", func() error {
		if !regions.Answers(ctx, a.nc, "b") {
			return errors.New("no")
		}
		return nil
	})
	h, err := regions.DemoteMilestones(ctx, a.nc, "b")
	if err == nil {
		t.Fatalf("handover to a home that stores nothing succeeded: %+v", h)
	}
	t.Logf("refused, as it must be: %v", err)
	as, err := a.js.Stream(ctx, topology.MilestonesStream)
	if err != nil {
		t.Fatalf("a's ledger after a refused handover: %v", err)
	}
	if _, err := as.GetLastMsgForSubject(ctx, lagged); err != nil {
		t.Fatalf("a's ledger lost %s: %v", lagged, err)
	}
	// It takes nothing more: a milestone a lane would publish now stays in its outbox.
	if _, err := a.js.Publish(ctx, topology.MilestonesPrefix+".delivered.o-late", []byte("{}")); err == nil {
		t.Error("a's ledger still took a milestone after the handover began")
	}

	// b stores again: the handover, run again, moves the milestone and removes a's ledger.
	limited.MaxMsgs = -1
	if _, err := b.js.UpdateStream(ctx, limited); err != nil {
		t.Fatal(err)
	}
	h, err = regions.DemoteMilestones(ctx, a.nc, "b")
	if err != nil {
		t.Fatalf("second handover: %v", err)
	}
	if h.Copied != 1 {
		t.Errorf("second handover copied %d milestones, want 1 (%s): %+v", h.Copied, lagged, h)
	}
	if _, err := bs.GetLastMsgForSubject(ctx, lagged); err != nil {
		t.Errorf("b's ledger lacks %s after the handover: %v", lagged, err)
	}
	if _, err := a.js.Stream(ctx, topology.MilestonesStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("a's old ledger after the handover: %v, want removed", err)
	}
}

// TestMilestonesCopyResumesFromAPlaceholder: a restart of the copy's source that
// stopped between its two stream updates (a crash) leaves the copy parked on the
// placeholder source, which copies nothing. The region watcher must see it as
// stalled and put the configured source back; it used to see a running source,
// and a Resume put the placeholder back, so the copy stopped for good.
func TestMilestonesCopyResumesFromAPlaceholder(t *testing.T) {
	a, b, _ := twoRegions(t)
	ctx := context.Background()
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 9, Orders: 60})
	if err != nil {
		t.Fatal(err)
	}
	half := len(msgs) / 2
	publishSplit(t, rand.New(rand.NewSource(9)), msgs[:half], a, b)
	owed, _ := agreeWithResolver(t, ctx, msgs[:half], a, b)
	assertOneLedger(t, ctx, owed, a, b)

	// What Resume's first update leaves: the copy's only source is the placeholder.
	s, err := b.js.Stream(ctx, topology.MilestonesStream)
	if err != nil {
		t.Fatal(err)
	}
	parked := s.CachedInfo().Config
	parked.Sources = []*jetstream.StreamSource{{Name: topology.MilestonesStream, Domain: "a", FilterSubject: topology.PlaceholderFilter}}
	if _, err := b.js.UpdateStream(ctx, parked); err != nil {
		t.Fatal(err)
	}
	publishSplit(t, rand.New(rand.NewSource(10)), msgs[half:], a, b)
	owed, _ = agreeWithResolver(t, ctx, msgs, a, b)
	// b's watcher restarts the parked source; the copy catches up.
	assertOneLedger(t, ctx, owed, a, b)

	// A Resume on a parked stream puts the configured source back.
	if _, err := b.js.UpdateStream(ctx, parked); err != nil {
		t.Fatal(err)
	}
	if err := regions.Resume(ctx, b.js, topology.MilestonesStream, "a"); err != nil {
		t.Fatal(err)
	}
	s, err = b.js.Stream(ctx, topology.MilestonesStream)
	if err != nil {
		t.Fatal(err)
	}
	srcs := s.CachedInfo().Config.Sources
	if len(srcs) != 1 || srcs[0].FilterSubject != "" || topology.MilestonesCopyOf(s.CachedInfo().Config) != "a" {
		t.Errorf("after Resume of a parked copy: sources %+v, want region a's ledger unfiltered", srcs)
	}
}

// TestMilestonesTwoHomesHold: a partition lets an operator promote b's copy while
// the home a still runs. Once the link is back, a sees b's ledger, a later
// promotion than its own, and holds its ledger (it takes no milestones, which
// wait in its lanes' outbox) and says so in region status; b serves on. Restarted
// with its old flags, a refuses to start as the home, or (the link not up within
// the start's wait) starts held. Before, a kept taking milestones in a second
// ledger, and billing reading either charged them.
func TestMilestonesTwoHomesHold(t *testing.T) {
	ctx := context.Background()
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 31, Orders: 30})
	if err != nil {
		t.Fatal(err)
	}
	p := startLedgerPair(t, msgs, 31)
	dirA, cfgA, link, a, b, stopA := p.dirA, p.cfgA, p.link, p.a, p.b, p.stopA

	link.Cut()
	waitFor(t, 30*time.Second, "b promotes its copy with a out of reach", func() error {
		_, err := regions.PromoteMilestones(ctx, b.nc)
		return err
	})
	link.Heal()
	held := func(r *region) error {
		st, err := regions.Read(ctx, r.nc)
		if err != nil {
			return err
		}
		if st.Milestones.Held == "" {
			return fmt.Errorf("region %s: milestones %+v, want held", r.name, st.Milestones)
		}
		s, err := r.js.Stream(ctx, topology.MilestonesStream)
		if err != nil {
			return err
		}
		if topology.MilestonesCaptures(s.CachedInfo().Config) {
			return fmt.Errorf("region %s's ledger still takes milestones: %v", r.name, s.CachedInfo().Config.Subjects)
		}
		return nil
	}
	waitFor(t, 30*time.Second, "a holds its ledger once it sees b's", func() error { return held(a) })
	if st, err := regions.Read(ctx, b.nc); err != nil || st.Milestones.Held != "" {
		t.Errorf("region b (the later promotion): milestones %+v, %v; want it to serve", st.Milestones, err)
	}

	// Handed over while a's serve runs and its lanes take events: every milestone
	// of a's ledger ends in b's, a's ledger is removed, and a's serve runs on (its
	// dispatch release consumer waits for the stream instead of ending serve).
	more, _, err := simulate.Generate(simulate.Config{Seed: 32, Orders: 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := simulate.PublishAll(ctx, a.js, more, 0); err != nil {
		t.Fatal(err)
	}
	old, err := verify.PublishedMilestones(ctx, a.js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := regions.DemoteMilestones(ctx, a.nc, "b"); err != nil {
		t.Fatalf("hand a's ledger over while a runs: %v", err)
	}
	inB, err := verify.PublishedMilestones(ctx, b.js)
	if err != nil {
		t.Fatal(err)
	}
	for id, kinds := range old {
		for k := range kinds {
			if !inB[id][k] {
				t.Errorf("a's old ledger held %s of %s; b's ledger lacks it", k, id)
			}
		}
	}
	if _, err := a.js.Stream(ctx, topology.MilestonesStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("a's ledger after the handover: %v, want removed", err)
	}

	// a restarts with its old flags.
	stopA()
	addrs := make(chan app.Addrs, 1)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- app.Serve(sctx, app.ServeConfig{
			DataDir: dirA, NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Region: cfgA,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Started: func(ad app.Addrs) { addrs <- ad },
		})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, regions.ErrNotTheHome) {
			t.Fatalf("a restarted as the home: %v, want ErrNotTheHome", err)
		}
		t.Logf("a refused to start: %v", err)
	case ad := <-addrs:
		a = connectRegion(t, "a", strings.TrimPrefix(ad.NATS, "nats://"))
		waitFor(t, 30*time.Second, "a, started as the home, holds its ledger", func() error { return held(a) })
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve a: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("a neither refused nor started within 60s")
	}
}

// TestMilestonesHomeHeldUntilConfirmed: the home starting while its peer is down
// cannot know whether the peer was promoted meanwhile, so it starts with its
// ledger held; its lanes fold, and their milestones wait. Once the peer is back
// and copies its ledger, the hold ends and the ledger holds every owed milestone
// once.
func TestMilestonesHomeHeldUntilConfirmed(t *testing.T) {
	ctx := context.Background()
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 41, Orders: 40})
	if err != nil {
		t.Fatal(err)
	}
	half := len(msgs) / 2
	p := startLedgerPair(t, msgs[:half], 41)
	p.stopA()
	p.stopB()
	a, _ := startRegionWith(t, p.dirA, p.cfgA)
	st, err := regions.Read(ctx, a.nc)
	if err != nil {
		t.Fatal(err)
	}
	if st.Milestones.Held == "" {
		t.Fatalf("region a started as the home with its peer down: milestones %+v, want held", st.Milestones)
	}
	t.Logf("held: %s", st.Milestones.Held)
	if err := simulate.PublishAll(ctx, a.js, msgs[half:], 0); err != nil {
		t.Fatal(err)
	}
	b, _ := startRegionWith(t, p.dirB, p.cfgB)
	owed, _ := agreeWithResolver(t, ctx, msgs, a, b)
	assertOneLedger(t, ctx, owed, a, b)
	if st, err := regions.Read(ctx, a.nc); err != nil || st.Milestones.Held != "" {
		t.Errorf("region a after b came back: milestones %+v, %v; want the hold ended", st.Milestones, err)
	}
}

// TestMilestonesHandoverToAHeldHome: region b still has a ledger of its own (it
// ran with per-region milestones) when it joins the home a. Seeing it, a holds its
// ledger; b's handover begins by making its ledger take nothing, which a's guard
// takes as the handover it is, so a takes milestones again and b's arrive. Without
// that, each waited for the other: b's handover refused a home that took nothing.
func TestMilestonesHandoverToAHeldHome(t *testing.T) {
	ctx := context.Background()
	dirA, dirB, cfgA, cfgB, _ := linkedPair(t)
	b, stopB := regionServer(t, dirB, cfgB)
	single := topology.Topology{}
	single.SetDefaults()
	if _, err := b.js.CreateStream(ctx, single.MilestonesConfig()); err != nil {
		t.Fatal(err)
	}
	own := topology.MilestonesPrefix + ".delivered.o-b-only"
	if _, err := b.js.Publish(ctx, own, []byte("{}"), jetstream.WithMsgID("o-b-only.delivered")); err != nil {
		t.Fatal(err)
	}
	stopB()

	a, _ := startRegionWith(t, dirA, cfgA) // held: b does not answer
	cfgB.Handover = true
	b, _ = startRegionWith(t, dirB, cfgB)
	as, err := a.js.Stream(ctx, topology.MilestonesStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := as.GetLastMsgForSubject(ctx, own); err != nil {
		t.Fatalf("a's ledger after b's handover: %v, want %s", err, own)
	}
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 51, Orders: 20})
	if err != nil {
		t.Fatal(err)
	}
	publishSplit(t, rand.New(rand.NewSource(51)), msgs, a, b)
	owed, _ := agreeWithResolver(t, ctx, msgs, a, b)
	owed["o-b-only"] = map[string]bool{"delivered": true}
	assertOneLedger(t, ctx, owed, a, b)
}
