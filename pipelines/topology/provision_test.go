package topology_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/orderflow/orderflow/internal/testenv"
	"github.com/orderflow/orderflow/internal/wal"
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
