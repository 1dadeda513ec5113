package bench

import (
	"context"
	"testing"
	"time"

	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// TestPeerFoldsLikeTheResolver checks that the peer the pipeline is compared with
// does the same job: after it handled a whole backlog, its bucket holds, for every
// order, the state the resolver gives from the WAL.
func TestPeerFoldsLikeTheResolver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := testenv.NATS(t)
	topo := topology.Topology{Partitions: 4}
	if _, err := topology.Provision(ctx, n.JS, topo); err != nil {
		t.Fatal(err)
	}
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 7, Orders: 60, InvalidRate: 0.02})
	if err != nil {
		t.Fatal(err)
	}
	if err := simulate.PublishAll(ctx, n.JS, msgs, 0); err != nil {
		t.Fatal(err)
	}
	info, err := stream(ctx, n.JS)
	if err != nil {
		t.Fatal(err)
	}
	res, err := peerPhase(ctx, n.URL, n.JS, topo, int(info.State.Msgs), 50*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Complete {
		t.Fatalf("the peer handled %d of %d events", res.Events, info.State.Msgs)
	}
	want, err := verify.FromWAL(ctx, n.JS)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := n.JS.KeyValue(ctx, peerBucket)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*resolver.State{}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for id := range keys.Keys() {
		e, err := kv.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got[id], _, err = snapshot.Decode(e.Value()); err != nil {
			t.Fatalf("order %s: %v", id, err)
		}
	}
	if len(got) == 0 {
		t.Fatal("the peer wrote no snapshot")
	}
	for _, d := range verify.Diff(want, got) {
		t.Error(d)
	}
}
