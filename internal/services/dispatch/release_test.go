package dispatch_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// TestFollowMilestonesOutlivesTheStream: ORDER_MILESTONES goes away under the
// release consumer (a region's milestone handover removes it) and comes back.
// FollowMilestones used to return the error, and serve exited with it; now it
// counts and retries, and releases dashers again once the stream is back.
func TestFollowMilestonesOutlivesTheStream(t *testing.T) {
	env := testenv.WAL(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	d := instance(t, env, 2, dispatch.AssignConfig{Registerer: reg})
	if _, err := d.Assign(ctx, "o1", dispatch.AssignRequest{Pickup: pickup}); err != nil {
		t.Fatal(err)
	}
	if err := env.JS.DeleteStream(ctx, topology.MilestonesStream); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.FollowMilestones(ctx) }()
	retries := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "orderflow_dispatch_release_follow_retries_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	deadline := time.Now().Add(30 * time.Second)
	for retries() < 2 {
		select {
		case err := <-done:
			t.Fatalf("FollowMilestones returned without its stream: %v; want it to retry until ctx ends", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no retry counted within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The stream is back: a delivered milestone frees o1's dasher.
	topo := topology.Topology{}
	topo.SetDefaults()
	if _, err := env.JS.CreateStream(ctx, topo.MilestonesConfig()); err != nil {
		t.Fatal(err)
	}
	if _, err := env.JS.Publish(ctx, topology.MilestonesPrefix+"."+string(schemas.StatusDelivered)+".o1", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := d.Lease(ctx, "d0")
		if errors.Is(err, dispatch.ErrNoLease) {
			break
		}
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("o1's dasher not released after the stream came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("FollowMilestones at the end: %v, want nil", err)
	}
}
