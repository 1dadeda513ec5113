package partitions_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/services/partitions"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// TestGrowResumesAfterAFailure: a growth that stopped right after repartitioning
// the stream without a record of it (as a grow from before growths were recorded
// left it: its lanes are still the old ones, events were stored on the new
// partitions since) is finished by the next run, which folds every event no lane
// checkpointed; a third run does nothing. TestGrowInterruptedKeepsServeOut stops
// a growth that is recorded. No pipeline runs here: grow is the only
// writer, so every snapshot must equal the resolver over the WAL, each milestone
// must be published once, and every lane must start after the switch.
func TestGrowResumesAfterAFailure(t *testing.T) {
	env := testenv.NATS(t)
	ctx := context.Background()
	if _, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 71, Orders: 120, InvalidRate: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	half := len(msgs) / 2
	if err := simulate.PublishAll(ctx, env.JS, msgs[:half], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := topology.Repartition(ctx, env.JS, 4); err != nil { // the run that stopped here
		t.Fatal(err)
	}
	if err := simulate.PublishAll(ctx, env.JS, msgs[half:], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := partitions.Grow(ctx, env.JS, partitions.Options{To: 3}); !errors.Is(err, partitions.ErrShrink) {
		t.Fatalf("grow to fewer than the stream has: %v, want ErrShrink", err)
	}
	rep, err := partitions.Grow(ctx, env.JS, partitions.Options{To: 4})
	if err != nil {
		t.Fatal(err)
	}
	last := testenv.WALLastSeq(t, env.JS)
	if rep.From != 4 || rep.Switch != last || rep.CatchUpFrom != 1 || rep.CatchUp.Orders == 0 || rep.CatchUp.SetAside == 0 {
		t.Fatalf("resumed grow: %+v, want from 4 (already repartitioned), switch %d, everything folded from 1", rep, last)
	}
	checkAgainstResolver(t, env.JS, msgs)
	ckpts, err := env.JS.KeyValue(ctx, topology.LanesBucket)
	if err != nil {
		t.Fatal(err)
	}
	for p := range 4 {
		c, err := env.JS.Consumer(ctx, topology.EventsStream, topology.LaneConsumer(p))
		if err != nil {
			t.Fatalf("lane %d: %v", p, err)
		}
		if cfg := c.CachedInfo().Config; cfg.OptStartSeq != last+1 || cfg.FilterSubject != topology.LaneSubject(p) {
			t.Errorf("lane %d starts at %d with filter %s, want %d and %s", p, cfg.OptStartSeq, cfg.FilterSubject, last+1, topology.LaneSubject(p))
		}
		kve, err := ckpts.Get(ctx, topology.LaneConsumer(p))
		if err != nil {
			t.Fatalf("lane %d checkpoint: %v", p, err)
		}
		if seq, err := topology.ParseCheckpoint(kve.Value()); err != nil || seq != last {
			t.Errorf("lane %d checkpoint %d (%v), want %d", p, seq, err, last)
		}
	}
	again, err := partitions.Grow(ctx, env.JS, partitions.Options{To: 4})
	if err != nil || !again.Unchanged {
		t.Fatalf("third run: %+v, %v; want nothing to do", again, err)
	}
	// Provisioning at serve's start keeps the lanes where grow started them.
	if _, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 4}); err != nil {
		t.Fatalf("provision after the growth: %v", err)
	}
}

// checkAgainstResolver fails unless every snapshot equals the resolver over the
// WAL and the milestones msgs reach are each published once; it returns the
// snapshots.
func checkAgainstResolver(t *testing.T, js jetstream.JetStream, msgs []simulate.Message) map[string]*resolver.State {
	t.Helper()
	ctx := context.Background()
	got := testenv.SnapshotsMatchWAL(t, js)
	published, err := verify.PublishedMilestones(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.DiffMilestones(verify.ExpectedMilestones(msgs), published); len(diffs) > 0 {
		t.Errorf("milestones differ: %v", diffs)
	}
	return got
}
