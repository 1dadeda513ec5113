package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/services/partitions"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// TestPartitionsGrow grows a WAL holding events from 3 to 5 partitions with
// `orderflow partitions grow`, while producers keep publishing: a contending
// workload (retries, invalid input) is published a third with serve running, a
// sixth just before serve stops (its lanes may or may not get to it), a sixth with
// serve stopped, and the rest after the growth to serve on 5 partitions. Then
// every snapshot equals the resolver over the published events and over the WAL,
// verify passes, each event is in the WAL once, every event after the switch is on
// its order's one new partition, each invalid event is in the DLQ once and each
// milestone published once. Grow refuses while serve runs and to shrink, and a
// second run does nothing.
func TestPartitionsGrow(t *testing.T) {
	env := testenv.NATS(t)
	ctx := context.Background()
	serveArgs := func(parts string) []string {
		return []string{"--nats-url", env.URL, "--no-archive", "--partitions", parts, "--lane-failover", "2s", "--lane-ack-wait", "3s"}
	}
	msgs, sum, err := simulate.Generate(simulate.Config{Seed: 61, Orders: 600, InvalidRate: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Duplicates == 0 || sum.Invalid == 0 {
		t.Fatalf("the workload needs retries and invalid input: %s", sum)
	}
	n := len(msgs)
	publish := func(part []simulate.Message) {
		t.Helper()
		if err := simulate.PublishAll(ctx, env.JS, part, 0); err != nil {
			t.Fatal(err)
		}
	}

	inst := startInstance(t, serveArgs("3")...)
	publish(msgs[:n/3])
	if err := pipelines.WaitDrained(ctx, env.JS, time.Minute); err != nil {
		t.Fatal(err)
	}
	if out, err := orderflow(t, "partitions", "grow", "--nats-url", env.URL, "--to", "5", "--force", "--wait", "0s"); err == nil || !strings.Contains(out, "stop every orderflow serve") {
		t.Fatalf("grow with serve running: %v\n%s", err, out)
	}
	publish(msgs[n/3 : n/2])
	inst.Stop(t)
	publish(msgs[n/2 : 2*n/3]) // producers go on while serve is stopped

	out, err := orderflow(t, "partitions", "grow", "--nats-url", env.URL, "--to", "5", "--force", "--json")
	if err != nil {
		t.Fatalf("grow: %v\n%s", err, out)
	}
	var rep partitions.Report
	decodeJSONLine(t, out, &rep)
	t.Logf("grow: %d -> %d, switch at %d, caught up from %d (%d orders, %d snapshots written, %d set aside), %s",
		rep.From, rep.To, rep.Switch, rep.CatchUpFrom, rep.CatchUp.Orders, rep.CatchUp.Written, rep.CatchUp.SetAside, rep.Duration)
	if rep.From != 3 || rep.To != 5 || rep.Switch != testenv.WALLastSeq(t, env.JS) {
		t.Fatalf("grow reported %+v, want 3 -> 5 switching at the WAL's end %d", rep, testenv.WALLastSeq(t, env.JS))
	}
	if rep.CatchUp.Written == 0 {
		t.Errorf("the catch-up wrote no snapshot: the events published with serve stopped were not folded by it")
	}
	if out, err := orderflow(t, "partitions", "grow", "--nats-url", env.URL, "--to", "5", "--force"); err != nil || !strings.Contains(out, "nothing to do") {
		t.Errorf("second grow: %v\n%s", err, out)
	}
	if out, err := orderflow(t, "partitions", "grow", "--nats-url", env.URL, "--to", "4", "--force"); err == nil || !strings.Contains(out, "only grow") {
		t.Errorf("grow to fewer: %v\n%s", err, out)
	}
	if out, err := orderflow(t, append([]string{"serve", "--http-listen", "127.0.0.1:0"}, serveArgs("3")...)...); err == nil || !strings.Contains(out, "partitioning") {
		t.Errorf("serve with the old count: %v\n%s", err, out)
	}

	startInstance(t, serveArgs("5")...)
	publish(msgs[2*n/3:])
	checkAgainstResolver(t, env.JS, msgs)
	if out, err := orderflow(t, "verify", "--nats-url", env.URL); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}

	// The WAL: each published event once; before the switch on the old partitions,
	// after it each order on one of the new ones; invalid events counted for the DLQ.
	ids := map[string]bool{}
	for _, m := range msgs {
		ids[m.MsgID] = true
	}
	seen := map[string]int{}
	after := map[string]int{} // order token -> partition after the switch
	usedNew := false
	rejected := 0
	err = wal.ReadRange(ctx, env.JS, topology.WALPrefix+".>", 1, testenv.WALLastSeq(t, env.JS), func(r wal.Record) error {
		seen[nats.Header(r.Header).Get(nats.MsgIdHdr)]++
		p, _ := topology.PartitionOf(r.Subject)
		order := r.Subject[strings.LastIndexByte(r.Subject, '.')+1:]
		switch {
		case r.Seq <= rep.Switch && p >= 3:
			t.Errorf("WAL %d before the switch on partition %d", r.Seq, p)
		case r.Seq > rep.Switch:
			if q, ok := after[order]; ok && q != p {
				t.Errorf("order %s on partitions %d and %d after the switch", order, q, p)
			}
			after[order] = p
			usedNew = usedNew || p >= 3
		}
		if _, rej := fold.Classify(r); rej != nil {
			rejected++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(after) == 0 || !usedNew {
		t.Errorf("after the switch: %d orders, new partitions used: %v", len(after), usedNew)
	}
	for id, c := range seen {
		if c != 1 || !ids[id] {
			t.Errorf("Nats-Msg-Id %q is in the WAL %d times (published: %v)", id, c, ids[id])
		}
	}
	if len(seen) != len(ids) {
		t.Errorf("the WAL holds %d events, %d were published", len(seen), len(ids))
	}
	dlq := dlqWALSeqs(t, env.JS)
	for seq, c := range dlq {
		if c != 1 {
			t.Errorf("WAL %s is in the DLQ %d times", seq, c)
		}
	}
	if len(dlq) != rejected || rejected == 0 {
		t.Errorf("the DLQ holds %d events, the WAL %d invalid ones", len(dlq), rejected)
	}
	published, err := verify.PublishedMilestones(ctx, env.JS)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.DiffMilestones(verify.ExpectedMilestones(msgs), published); len(diffs) > 0 {
		t.Errorf("milestones differ: %v", diffs)
	}
}

// TestPartitionsGrowInterrupted kills `orderflow partitions grow` (3 -> 5) right
// after the switch, before it folded anything, with producers going on. Until a
// run of grow finishes the growth, serve refuses to start, with the new count or
// the old one, and names the command that finishes it: its lanes would fold an
// order's events after the switch before its events before it. The next run
// finishes it, and serve on 5 partitions then folds the rest: every snapshot
// equals the resolver over the published events and over the WAL.
func TestPartitionsGrowInterrupted(t *testing.T) {
	env := testenv.NATS(t)
	ctx := context.Background()
	serveArgs := func(parts string) []string {
		return []string{"--nats-url", env.URL, "--no-archive", "--partitions", parts, "--lane-failover", "2s", "--lane-ack-wait", "3s"}
	}
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 63, Orders: 300, InvalidRate: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	n := len(msgs)
	inst := startInstance(t, serveArgs("3")...)
	if err := simulate.PublishAll(ctx, env.JS, msgs[:n/3], 0); err != nil {
		t.Fatal(err)
	}
	inst.Stop(t)
	if err := simulate.PublishAll(ctx, env.JS, msgs[n/3:n/2], 0); err != nil {
		t.Fatal(err)
	}

	grow := orderflowCmd(t, "partitions", "grow", "--nats-url", env.URL, "--to", "5", "--force")
	grow.Env = append(os.Environ(), "ORDERFLOW_FAILPOINT="+handlers.FailGrowAfterSwitch)
	if out, err := grow.CombinedOutput(); err == nil {
		t.Fatalf("grow with its failpoint armed finished:\n%s", out)
	}
	if err := simulate.PublishAll(ctx, env.JS, msgs[n/2:2*n/3], 0); err != nil { // after the switch
		t.Fatal(err)
	}
	for _, parts := range []string{"5", "3"} {
		out, err := orderflow(t, append([]string{"serve", "--http-listen", "127.0.0.1:0"}, serveArgs(parts)...)...)
		if err == nil || !strings.Contains(out, "orderflow partitions grow --to 5") {
			t.Fatalf("serve --partitions %s during the growth: %v\n%s", parts, err, out)
		}
	}

	out, err := orderflow(t, "partitions", "grow", "--nats-url", env.URL, "--to", "5", "--force", "--json")
	if err != nil {
		t.Fatalf("grow after the interrupted one: %v\n%s", err, out)
	}
	var rep partitions.Report
	decodeJSONLine(t, out, &rep)
	if rep.From != 3 || rep.To != 5 || rep.Switch != testenv.WALLastSeq(t, env.JS) || rep.CatchUp.Written == 0 {
		t.Fatalf("grow after the interrupted one: %+v, want 3 -> 5 switching at the WAL's end %d, snapshots written", rep, testenv.WALLastSeq(t, env.JS))
	}
	startInstance(t, serveArgs("5")...)
	if err := simulate.PublishAll(ctx, env.JS, msgs[2*n/3:], 0); err != nil {
		t.Fatal(err)
	}
	checkAgainstResolver(t, env.JS, msgs)
}

// dlqWALSeqs counts the DLQ's messages per WAL sequence they set aside.
func dlqWALSeqs(t *testing.T, js jetstream.JetStream) map[string]int {
	t.Helper()
	ctx := context.Background()
	c, err := js.OrderedConsumer(ctx, topology.DLQStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for left := info.NumPending; left > 0; {
		batch, err := c.Fetch(int(min(left, 500)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out[m.Headers().Get(handlers.HeaderWALSeq)]++
			left--
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestPartitionsGrowWithArchive grows 3 -> 5 partitions under serve with the
// archive on (orders archived a second after completing) while orders are half
// way: an order whose events straddle the switch, on two partitions, is archived
// whole once complete, reads back from the archive with the resolver's status,
// and an operator's archive pass finds nothing left and fails on nothing.
func TestPartitionsGrowWithArchive(t *testing.T) {
	env := testenv.NATS(t)
	ctx := context.Background()
	location := t.TempDir()
	serveArgs := func(parts string) []string {
		return []string{"--nats-url", env.URL, "--archive", location, "--archive-after", "1s", "--archive-interval", "1s",
			"--partitions", parts, "--lane-failover", "2s", "--lane-ack-wait", "3s"}
	}
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 62, Orders: 200, CancelRate: simulate.Off})
	if err != nil {
		t.Fatal(err)
	}
	half := len(msgs) / 2
	// An order with events on both sides of the switch whose partition changes.
	straddling := ""
	seenBefore := map[string]bool{}
	for i, m := range msgs {
		id := m.Event.OrderID
		if id == "" {
			continue
		}
		if i < half {
			seenBefore[id] = true
		} else if seenBefore[id] && wal.Partition(id, 3) != wal.Partition(id, 5) && straddling == "" {
			straddling = id
		}
	}
	if straddling == "" {
		t.Fatal("the workload has no order straddling the switch on two partitions")
	}
	want := verify.Views(verify.FoldMessages(msgs))

	inst := startInstance(t, serveArgs("3")...)
	if err := simulate.PublishAll(ctx, env.JS, msgs[:half], 0); err != nil {
		t.Fatal(err)
	}
	if err := pipelines.WaitDrained(ctx, env.JS, time.Minute); err != nil {
		t.Fatal(err)
	}
	inst.Stop(t)
	if out, err := orderflow(t, "partitions", "grow", "--nats-url", env.URL, "--to", "5", "--force"); err != nil {
		t.Fatalf("grow: %v\n%s", err, out)
	}
	inst = startInstance(t, serveArgs("5")...)
	if err := simulate.PublishAll(ctx, env.JS, msgs[half:], 0); err != nil {
		t.Fatal(err)
	}
	waitArchived(t, env.JS, inst, straddling)
	out, err := orderflow(t, "status", straddling, "--nats-url", env.URL, "--archive", location)
	if err != nil || !strings.Contains(out, "from the archive") || !strings.Contains(out, string(want[straddling].Status)) {
		t.Fatalf("orderflow status %s: %v\n%s", straddling, err, out)
	}
	if out, err := orderflow(t, "replay", "--nats-url", env.URL, "--target", "archive", "--archive", location, "--archive-after", "1s", "--force"); err != nil {
		t.Fatalf("replay --target archive: %v\n%s", err, out)
	}
	if out, err := orderflow(t, "verify", "--nats-url", env.URL); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
}
