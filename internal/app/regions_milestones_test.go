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

	"github.com/orderflow/orderflow/internal/adapters/regions"
	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// TestMilestonesHomeDownAndPromotion walks the milestone ledger through the
// runbook: region a (the home) goes down and comes back from its disk (b's
// milestones wait in b's queue, b's lanes keep checkpointing, and the milestones
// arrive once); then a is lost for good, b's copy is promoted to the ledger, and
// a comes back as a copy of b's, handing over its own ledger first. After every
// step the home's ledger holds each milestone some region owes exactly once and
// the other region's copy equals it.
func TestMilestonesHomeDownAndPromotion(t *testing.T) {
	ctx := context.Background()
	dirA, dirB, cfgA, cfgB, _ := linkedPair(t)
	b, stopB := startRegionWith(t, dirB, cfgB)
	a, stopA := startRegionWith(t, dirA, cfgA)

	msgs, _, err := simulate.Generate(simulate.Config{Seed: 21, Orders: 200, DuplicateRate: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(21))
	q := len(msgs) / 4
	published := 0
	owed := func(rs ...*region) verify.Milestones {
		t.Helper()
		ms, _ := agreeWithResolver(t, ctx, msgs[:published], rs...)
		return ms
	}

	// 1. Both up.
	publishSplit(t, rng, msgs[:q], a, b)
	published = q
	waitFor(t, 60*time.Second, "both WALs hold every event", walsHold(ctx, distinctEvents(msgs[:published]), a, b))
	assertOneLedger(t, ctx, owed(a, b), a, b)
	// The watcher's restart of a stalled copy (remove its only source, add it back)
	// resumes where it was: nothing twice, nothing skipped.
	if err := regions.Resume(ctx, b.js, topology.MilestonesStream, "a"); err != nil {
		t.Fatalf("restart b's copy: %v", err)
	}
	publishSplit(t, rng, msgs[q:q+q/4], a, b)
	published = q + q/4
	waitFor(t, 60*time.Second, "both WALs hold every event", walsHold(ctx, distinctEvents(msgs[:published]), a, b))
	assertOneLedger(t, ctx, owed(a, b), a, b)

	// 2. The home is down: b keeps folding and checkpointing, its milestones wait.
	stopA()
	if err := simulate.PublishAll(ctx, b.js, msgs[q+q/4:2*q], 0); err != nil {
		t.Fatal(err)
	}
	published = 2 * q
	waitFor(t, 60*time.Second, "b's WAL holds every event", walsHold(ctx, distinctEvents(msgs[:published]), b))
	var queued uint64
	waitFor(t, 30*time.Second, "region b queues milestones with the home down", func() error {
		st, err := regions.Read(ctx, b.nc)
		if err != nil {
			return err
		}
		if queued = st.Milestones.Queued; queued == 0 {
			return fmt.Errorf("milestones %+v, want some queued", st.Milestones)
		}
		return nil
	})
	if err := pipelines.WaitDrained(ctx, b.js, time.Minute); err != nil {
		t.Fatalf("region b with the milestones home down: %v", err)
	}
	t.Logf("home down: region b drained its lanes with %d milestones queued for the home", queued)

	// ... and comes back from its disk: they arrive, once.
	a, stopA = startRegionWith(t, dirA, cfgA)
	waitFor(t, 60*time.Second, "both WALs hold every event", walsHold(ctx, distinctEvents(msgs[:published]), a, b))
	assertOneLedger(t, ctx, owed(a, b), a, b)
	owedByA := owed(a) // what a's path owes: in the ledger, and copied to b's copy

	// 3. The home is lost for good: promote b's copy.
	stopA()
	if _, err := regions.PromoteMilestones(ctx, b.nc); err != nil {
		t.Fatalf("promote b's copy: %v", err)
	}
	if _, err := regions.PromoteMilestones(ctx, b.nc); err == nil {
		t.Error("a second promotion succeeded; want: already the ledger")
	}
	stopB()
	cfgB.MilestonesHome, cfgA.MilestonesHome = "b", "b"
	b, _ = startRegionWith(t, dirB, cfgB)
	if err := simulate.PublishAll(ctx, b.js, msgs[2*q:3*q], 0); err != nil {
		t.Fatal(err)
	}
	published = 3 * q
	assertOneLedger(t, ctx, unionMilestones(owed(b), owedByA), b)

	// 4. Failback: a's own ledger disagrees with the new home, so serve refuses it...
	refused := serveOnce(t, dirA, cfgA)
	if refused == nil || !strings.Contains(refused.Error(), "--milestones-handover") {
		t.Fatalf("serve a with --milestones-region b on its old ledger: %v; want a refusal naming --milestones-handover", refused)
	}
	// ... and, asked to, hands it over and copies b's.
	cfgA.Handover = true
	a, _ = startRegionWith(t, dirA, cfgA)
	if err := simulate.PublishAll(ctx, a.js, msgs[3*q:], 0); err != nil {
		t.Fatal(err)
	}
	published = len(msgs)
	waitFor(t, 60*time.Second, "both WALs hold every event", walsHold(ctx, distinctEvents(msgs[:published]), a, b))
	assertOneLedger(t, ctx, owed(a, b), b, a)
	// a's copy records b's promotion epoch: promoting it in turn records a later one.
	waitFor(t, 30*time.Second, "a's copy records the home's epoch", func() error {
		s, err := a.js.Stream(ctx, topology.MilestonesStream)
		if err != nil {
			return err
		}
		if e := topology.MilestonesEpoch(s.CachedInfo().Config); e != 1 {
			return fmt.Errorf("a's copy records epoch %d, want 1 (b's)", e)
		}
		return nil
	})
}

// serveOnce runs serve and returns its error; it must end by itself within 30 s
// (a refusal), or the test fails.
func serveOnce(t *testing.T, dataDir string, rc regions.Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := app.Serve(ctx, app.ServeConfig{
		DataDir: dataDir, NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Region: rc,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("serve did not refuse within 30s (err %v)", err)
	}
	return err
}
