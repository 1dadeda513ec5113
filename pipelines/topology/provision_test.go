package topology_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
)

func TestProvisionIsIdempotent(t *testing.T) {
	env := testenv.NATS(t)
	ctx := context.Background()
	first, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range first {
		if c.Action != "created" {
			t.Fatalf("first run: %s %s, want created", c.Resource, c.Action)
		}
	}
	again, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range again {
		if c.Action == "created" || c.Action == "updated" {
			t.Fatalf("second run changed %s (%s)", c.Resource, c.Action)
		}
	}
	// A changed duplicate window is updated in place.
	changed, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 4, DuplicateWindow: 5 * 60e9})
	if err != nil {
		t.Fatal(err)
	}
	if changed[0].Action != "updated" {
		t.Fatalf("duplicate window change: %s %s, want updated", changed[0].Resource, changed[0].Action)
	}
}

// The partition transform must agree with wal.Partition, or readers look in the wrong lane.
func TestPartitionMatchesServerTransform(t *testing.T) {
	env := testenv.NATS(t)
	ctx := context.Background()
	if _, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 7}); err != nil {
		t.Fatal(err)
	}
	s, err := env.JS.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"o-1", "o-2", "A", "order_with-dashes", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"}
	for _, id := range ids {
		if _, err := env.JS.PublishMsg(ctx, &nats.Msg{Subject: "orders.events.driver." + id, Data: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
		m, err := s.GetLastMsgForSubject(ctx, "orders.wal.*.driver."+id)
		if err != nil {
			t.Fatal(err)
		}
		p, ok := topology.PartitionOf(m.Subject)
		if !ok || p != wal.Partition(id, 7) {
			t.Fatalf("order %s stored as %s, wal.Partition says %d", id, m.Subject, wal.Partition(id, 7))
		}
	}
}

func TestRepartitioningANonEmptyWALIsRefused(t *testing.T) {
	env := testenv.NATS(t)
	ctx := context.Background()
	if _, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.JS.PublishMsg(ctx, &nats.Msg{Subject: "orders.events.driver.o-1", Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	_, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 8})
	if !errors.Is(err, topology.ErrIncompatible) {
		t.Fatalf("got %v, want ErrIncompatible", err)
	}
}

// Lane consumers are AckAll; one provisioned with explicit acks keeps them (the
// server cannot change an ack policy, and recreating it would lose its position).
func TestLaneConsumersKeepTheirAckPolicy(t *testing.T) {
	env := testenv.NATS(t)
	ctx := context.Background()
	topo := topology.Topology{Partitions: 2}
	if _, err := topology.Provision(ctx, env.JS, topo); err != nil {
		t.Fatal(err)
	}
	env.ExplicitAckLane(t, topo, 0)
	if _, err := topology.Provision(ctx, env.JS, topo); err != nil {
		t.Fatalf("provisioning over an explicit-ack lane consumer: %v", err)
	}
	for lane, want := range []jetstream.AckPolicy{jetstream.AckExplicitPolicy, jetstream.AckAllPolicy} {
		c, err := env.JS.Consumer(ctx, topology.EventsStream, topology.LaneConsumer(lane))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.CachedInfo().Config.AckPolicy; got != want {
			t.Fatalf("lane %d acks %s, want %s", lane, got, want)
		}
	}
}

// TestFileStoredLocationsBucketIsRecreatedInMemory: a data directory whose
// dasher_locations cache was created on file (it used to be) provisions: the
// server cannot change a stream's storage in place, and a cache can start over.
func TestFileStoredLocationsBucketIsRecreatedInMemory(t *testing.T) {
	env := testenv.NATS(t)
	ctx := context.Background()
	if _, err := env.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: topology.LocationsBucket, History: 1, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	changes, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	recreated := false
	for _, c := range changes {
		recreated = recreated || (c.Resource == "bucket "+topology.LocationsBucket && c.Action == "recreated")
	}
	kv, err := env.JS.KeyValue(ctx, topology.LocationsBucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Storage; !recreated || got != jetstream.MemoryStorage {
		t.Fatalf("recreated %v, storage %v; want recreated in memory", recreated, got)
	}
	if _, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 2}); err != nil {
		t.Fatalf("provisioning again: %v", err)
	}
}
