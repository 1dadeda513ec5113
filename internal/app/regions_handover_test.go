package app_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/adapters/embedded"
	"github.com/orderflow/orderflow/internal/adapters/regions"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// regionServer runs only the embedded NATS server of a region on dataDir (no
// orderflow serve: no lanes, no provisioning), linked to its peers as serve links
// it; it stops at the end of the test.
func regionServer(t *testing.T, dataDir string, rc regions.Config) *region {
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
	return &region{name: rc.Name, url: srv.ClientURL(), nc: nc, js: js}
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
	dirA, dirB, cfgA, cfgB, _ := linkedPair(t)
	b, _ := startRegionWith(t, dirB, cfgB)
	a, stopA := startRegionWith(t, dirA, cfgA)

	msgs, _, err := simulate.Generate(simulate.Config{Seed: 5, Orders: 40})
	if err != nil {
		t.Fatal(err)
	}
	publishSplit(t, rand.New(rand.NewSource(5)), msgs, a, b)
	owed, _ := agreeWithResolver(t, ctx, msgs, a, b)
	assertOneLedger(t, ctx, owed, a, b)

	stopA()
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
	a = regionServer(t, dirA, cfgA)
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
