package main

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/internal/services/consumers"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// TestMilestonesExactlyOnceUnderFaults publishes a workload rich in cancellations
// and agent corrections while the pipeline and the billing consumer are crashed over
// and over: at each failpoint (snapshot written but milestone not published;
// milestone published but outbox not cleared; billing recorded but not acked) and
// by SIGKILL at random moments. Afterwards every (order, milestone) the resolver
// says was reached is in ORDER_MILESTONES exactly once, and billing recorded exactly
// one effect per billing milestone: one charge per delivered order.
func TestMilestonesExactlyOnceUnderFaults(t *testing.T) {
	env := testenv.NATS(t)
	msgs, sum, err := simulate.Generate(simulate.Config{Seed: 17, Orders: 1500, AgentRate: 0.1, CancelRate: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--nats-url", env.URL}, failoverArgs...)
	serveFaults := []string{
		"ORDERFLOW_FAILPOINT=" + handlers.FailAfterSnapshotWrite + ":0.03",
		"ORDERFLOW_FAILPOINT=" + handlers.FailAfterMilestonePublish + ":0.03",
		"", // killed at a random moment instead
	}
	consumerFault := "ORDERFLOW_FAILPOINT=" + handlers.FailConsumerAfterRecord + ":0.05"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	published := make(chan error, 1)
	go func() { published <- simulate.PublishAll(ctx, env.JS, msgs, 1500) }()

	rng := rand.New(rand.NewPCG(17, 1))
	crashes := map[string]int{}
	fired := func() bool {
		return crashes[serveFaults[0]] > 0 && crashes[serveFaults[1]] > 0 && crashes[consumerFault] > 0
	}
	// Rounds go on until the workload is published and every failpoint has fired
	// (or a round limit, which the check below then reports).
	for round, done := 0, false; !done || (!fired() && round < 30); round++ {
		fault := serveFaults[round%len(serveFaults)]
		serve := startServeWith(t, []string{fault}, args...)
		billing := launch(t, []string{consumerFault}, "consume", "billing", "--nats-url", env.URL)
		select {
		case <-serve.Done:
		case <-time.After(time.Duration(1000+rng.IntN(3000)) * time.Millisecond):
		}
		if serve.Exited() {
			crashes[fault]++
		} else {
			crashes["sigkill"]++
		}
		if billing.Exited() {
			crashes[consumerFault]++
		}
		serve.Kill()
		billing.Kill()
		if !done {
			select {
			case err := <-published:
				if err != nil {
					t.Fatal(err)
				}
				done = true
			default:
			}
		}
	}
	t.Logf("%s; crashes: %v", sum, crashes)
	if !fired() {
		t.Fatalf("the failpoints never fired (%v): the test proved nothing", crashes)
	}

	// A clean run to finish.
	startInstance(t, args...)
	launch(t, nil, "consume", "billing", "--nats-url", env.URL)
	if err := pipelines.WaitDrained(ctx, env.JS, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	want := verify.ExpectedMilestones(msgs)
	got, err := verify.PublishedMilestones(ctx, env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.DiffMilestones(want, got); len(diffs) > 0 {
		t.Fatalf("%d orders with wrong milestones, first: %s", len(diffs), diffs[0])
	}
	waitConsumed(t, env.JS, topology.MilestonesStream, consumers.Billing.Name)
	ledger, err := consumers.Billing.Ledger(ctx, env.JS)
	if err != nil {
		t.Fatal(err)
	}
	billed := verify.Milestones{}
	for _, r := range ledger {
		if billed[r.OrderID] == nil {
			billed[r.OrderID] = map[string]bool{}
		}
		billed[r.OrderID][r.Kind] = true
	}
	wantBilled := verify.Milestones{}
	charges := 0
	for id, kinds := range got {
		for k := range kinds {
			if k == "delivered" || k == "delivered"+outbox.Revoked || k == "delivered"+outbox.Reinstated {
				if wantBilled[id] == nil {
					wantBilled[id] = map[string]bool{}
				}
				wantBilled[id][k] = true
				if k != "delivered"+outbox.Revoked {
					charges++
				}
			}
		}
	}
	if diffs := verify.DiffMilestones(wantBilled, billed); len(diffs) > 0 {
		t.Fatalf("billing ledger differs from the billing milestones, first: %s", diffs[0])
	}
	t.Logf("%d orders, %d milestones, %d billing charges, each exactly once", len(want), countKinds(got), charges)
}

func countKinds(m verify.Milestones) int {
	n := 0
	for _, k := range m {
		n += len(k)
	}
	return n
}

// waitConsumed waits until a durable consumer of ORDER_MILESTONES has nothing pending.
// waitConsumed waits until stream's durable consumer name has nothing pending.
func waitConsumed(t *testing.T, js jetstream.JetStream, stream, name string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := js.Consumer(context.Background(), stream, name)
		if err == nil {
			if info, err := c.Info(context.Background()); err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s did not catch up", name)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
