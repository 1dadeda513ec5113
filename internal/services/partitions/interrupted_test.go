package partitions_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/services/partitions"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// TestGrowInterruptedKeepsServeOut stops a growth from 2 to 4 partitions at two
// points (right after the switch, before anything is folded; and while the new
// lanes are being started) by failing one write to KV order_lanes on a real
// server. An order has its created event before the switch, on one partition, and
// its confirmation after it, on another: a lane started then would fold the
// confirmation first and skip the created event for good. So until a run of grow
// finishes: no lane consumer exists that could deliver the confirmation, provisioning (serve, with
// the old or the new count) is refused with the command that finishes the growth,
// and grow to another count is refused. The next run finishes it: every snapshot
// equals the resolver over the WAL (the straddling order too), and serve may start.
func TestGrowInterruptedKeepsServeOut(t *testing.T) {
	for _, stop := range []struct {
		name, key string
	}{
		{"after the switch", topology.GrowthKey},
		{"starting the new lanes", topology.LaneConsumer(2)},
	} {
		t.Run(stop.name, func(t *testing.T) {
			env := testenv.NATS(t)
			ctx := context.Background()
			if _, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 2}); err != nil {
				t.Fatal(err)
			}
			msgs, _, err := simulate.Generate(simulate.Config{Seed: 73, Orders: 60})
			if err != nil {
				t.Fatal(err)
			}
			half := len(msgs) / 2
			if err := simulate.PublishAll(ctx, env.JS, msgs[:half], 0); err != nil {
				t.Fatal(err)
			}
			id := straddlingOrder(2, 4)
			created := env.Publish(t, testenv.Event(id, schemas.SourcePlatform, 1, schemas.StatusCreated))

			faulty := failingPut{JetStream: env.JS, bucket: topology.LanesBucket, key: stop.key}
			if _, err := partitions.Grow(ctx, faulty, partitions.Options{To: 4}); !errors.Is(err, errInjected) {
				t.Fatalf("grow with the write of %s failing: %v", stop.key, err)
			}
			g, err := topology.GrowthUnderWay(ctx, env.JS)
			if err != nil || g == nil || g.From != 2 || g.To != 4 {
				t.Fatalf("the growth under way: %+v, %v; want 2 -> 4 recorded", g, err)
			}
			// The old lanes are gone; a new lane started already starts after the
			// switch, which is past every event folded on an old one.
			for p := range 4 {
				c, err := env.JS.Consumer(ctx, topology.EventsStream, topology.LaneConsumer(p))
				if errors.Is(err, jetstream.ErrConsumerNotFound) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if cfg := c.CachedInfo().Config; g.Switch < created || cfg.OptStartSeq != g.Switch+1 {
					t.Errorf("lane %d during the growth starts at %d (%v), the switch recorded is %d: a lane could fold an order's events after the switch before its events before it",
						p, cfg.OptStartSeq, cfg.DeliverPolicy, g.Switch)
				}
			}
			confirmed := env.Publish(t, testenv.Event(id, schemas.SourceMerchant, 2, schemas.StatusConfirmed))
			if err := simulate.PublishAll(ctx, env.JS, msgs[half:], 0); err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{2, 4} {
				_, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: n})
				if !errors.Is(err, topology.ErrGrowing) || !strings.Contains(err.Error(), "orderflow partitions grow --to 4") {
					t.Errorf("provisioning %d partitions during the growth: %v; want ErrGrowing naming the command that finishes it", n, err)
				}
			}
			if _, err := partitions.Grow(ctx, env.JS, partitions.Options{To: 5}); !errors.Is(err, topology.ErrGrowing) {
				t.Errorf("grow to 5 during a growth to 4: %v, want ErrGrowing", err)
			}

			rep, err := partitions.Grow(ctx, env.JS, partitions.Options{To: 4})
			if err != nil {
				t.Fatal(err)
			}
			last := testenv.WALLastSeq(t, env.JS)
			if rep.From != 2 || rep.Switch != last || rep.CatchUpFrom != 1 {
				t.Fatalf("the run that finished the growth: %+v, want 2 -> 4, switch %d, folded from 1", rep, last)
			}
			if g, err := topology.GrowthUnderWay(ctx, env.JS); err != nil || g != nil {
				t.Fatalf("after the growth: %+v, %v; want none under way", g, err)
			}
			got := checkAgainstResolver(t, env.JS, msgs)
			if st := got[id]; st == nil || st.WalSeq() != confirmed {
				t.Fatalf("order %s (created at %d, confirmed at %d across the switch): snapshot %+v", id, created, confirmed, st)
			}
			if _, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 4}); err != nil {
				t.Fatalf("provision after the growth: %v", err)
			}
		})
	}
}

// TestGrowRefusedLeavesServeFree: grow refused because a lane is held changes
// nothing, and serve may start (or go on) as before.
func TestGrowRefusedLeavesServeFree(t *testing.T) {
	env := testenv.NATS(t)
	ctx := context.Background()
	if _, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	env.Publish(t, testenv.Event("held", schemas.SourcePlatform, 1, schemas.StatusCreated))
	c, err := env.JS.Consumer(ctx, topology.EventsStream, topology.LaneConsumer(wal.Partition("held", 2)))
	if err != nil {
		t.Fatal(err)
	}
	// A pull with the lanes' priority group pins the consumer to this client, as a
	// running lane does.
	batch, err := c.Fetch(1, jetstream.FetchPriorityGroup(topology.LaneGroup))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	if _, err := partitions.Grow(ctx, env.JS, partitions.Options{To: 4}); !errors.Is(err, topology.ErrLanesRunning) {
		t.Fatalf("grow with a lane held: %v, want ErrLanesRunning", err)
	}
	if g, err := topology.GrowthUnderWay(ctx, env.JS); err != nil || g != nil {
		t.Fatalf("after a refused grow: %+v, %v; want none under way", g, err)
	}
	if _, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 2}); err != nil {
		t.Fatalf("provision after a refused grow: %v", err)
	}
}

// straddlingOrder is an order id whose partition among from differs from its
// partition among to.
func straddlingOrder(from, to int) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("straddle-%d", i)
		if wal.Partition(id, from) != wal.Partition(id, to) {
			return id
		}
	}
}

var errInjected = errors.New("injected: the process stopped here")

// failingPut is a JetStream on a real server whose KV bucket fails every Put of
// key, as if the process had stopped just before it.
type failingPut struct {
	jetstream.JetStream
	bucket, key string
}

func (f failingPut) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := f.JetStream.KeyValue(ctx, bucket)
	if err != nil || bucket != f.bucket {
		return kv, err
	}
	return failingKV{KeyValue: kv, key: f.key}, nil
}

type failingKV struct {
	jetstream.KeyValue
	key string
}

func (f failingKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if key == f.key {
		return 0, errInjected
	}
	return f.KeyValue.Put(ctx, key, value)
}
