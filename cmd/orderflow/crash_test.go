package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/testsupport/testrun"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// binary is the orderflow binary under test, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "orderflow-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if binary, err = testrun.Build(dir, "."); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// instance is one orderflow process.
type instance struct{ *testrun.Process }

// launch starts `orderflow args...` with extra environment variables.
func launch(t *testing.T, env []string, args ...string) *instance {
	t.Helper()
	return &instance{testrun.Launch(t, binary, env, args...)}
}

// startInstance runs `orderflow serve` with args and waits until it serves.
func startInstance(t *testing.T, args ...string) *instance {
	t.Helper()
	return startServeWith(t, nil, args...)
}

func startServeWith(t *testing.T, env []string, args ...string) *instance {
	t.Helper()
	return &instance{testrun.Serve(t, binary, env, args...)}
}

func (i *instance) get(path string) (int, error) {
	resp, err := http.Get("http://" + i.HTTP + path)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// eventsHandled sums orderflow_events_total from the instance's /metrics.
func (i *instance) eventsHandled(t *testing.T) float64 {
	t.Helper()
	resp, err := http.Get("http://" + i.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "orderflow_events_total{") {
			var v float64
			fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v)
			sum += v
		}
	}
	return sum
}

// checkAgainstResolver waits for the pipeline to drain and compares every snapshot
// with the pure resolver over the published messages and over the WAL.
func checkAgainstResolver(t *testing.T, js jetstream.JetStream, msgs []simulate.Message) {
	t.Helper()
	ctx := context.Background()
	if err := pipelines.WaitDrained(ctx, js, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	want := verify.FoldMessages(msgs)
	got, err := verify.Snapshots(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.Diff(want, got); len(diffs) > 0 {
		t.Fatalf("%d orders differ from the resolver after crashes; first: %v", len(diffs), diffs[0])
	}
	testenv.SnapshotsMatchWAL(t, js)
	ms, err := verify.PublishedMilestones(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if diffs := verify.DiffMilestones(verify.ExpectedMilestones(msgs), ms); len(diffs) > 0 {
		t.Fatalf("%d orders with wrong milestones after crashes; first: %s", len(diffs), diffs[0])
	}
	if len(verify.Views(got)) < len(verify.Views(want)) {
		t.Fatalf("only %d of %d orders have snapshots", len(got), len(want))
	}
	t.Logf("%d orders, %d messages: every snapshot equals the resolver", len(verify.Views(want)), len(msgs))
}

// failoverArgs make lanes move quickly off a killed instance.
var failoverArgs = []string{"--partitions", "4", "--lane-failover", "2s", "--lane-ack-wait", "3s"}

// TestCrashKill9MidStream kills `orderflow serve` with SIGKILL at random moments
// while a contending workload is published, restarts it each time, and checks that
// every order's snapshot equals the pure resolver over its WAL events: no event lost
// or applied twice.
func TestCrashKill9MidStream(t *testing.T) {
	env := testenv.NATS(t)
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 11, Orders: 3000, InvalidRate: 0.005})
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--nats-url", env.URL}, failoverArgs...)
	inst := startInstance(t, args...)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var pubErr error
	published := make(chan struct{})
	go func() {
		defer close(published)
		pubErr = simulate.PublishAll(ctx, env.JS, msgs, 3000)
	}()
	rng := rand.New(rand.NewPCG(11, 1))
	kills := 0
	for done := false; !done; {
		time.Sleep(time.Duration(500+rng.IntN(2500)) * time.Millisecond)
		inst.Kill()
		kills++
		inst = startInstance(t, args...)
		select {
		case <-published:
			done = true
		default:
		}
	}
	if pubErr != nil {
		t.Fatal(pubErr)
	}
	// One more kill after the last publish, before the pipeline caught up.
	inst.Kill()
	kills++
	startInstance(t, args...)
	t.Logf("killed orderflow serve %d times", kills)
	if kills < 4 {
		t.Fatalf("only %d kills: the workload finished too fast to test crashes", kills)
	}
	checkAgainstResolver(t, env.JS, msgs)
}

// TestFailoverTwoInstances runs two instances on one NATS server, kills one
// mid-run, and checks the survivor takes over its lanes with the same result.
func TestFailoverTwoInstances(t *testing.T) {
	env := testenv.NATS(t)
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 12, Orders: 1200})
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--nats-url", env.URL}, failoverArgs...)
	a := startInstance(t, args...)
	b := startInstance(t, args...)
	half := len(msgs) / 2
	ctx := context.Background()
	if err := simulate.PublishAll(ctx, env.JS, msgs[:half], 4000); err != nil {
		t.Fatal(err)
	}
	owners := laneOwners(t, env.JS)
	handledA, handledB := a.eventsHandled(t), b.eventsHandled(t)
	t.Logf("before the kill: lane pins %v; instance A handled %.0f events, B %.0f", owners, handledA, handledB)
	if handledA == 0 {
		t.Fatal("instance A held no lane before the kill: the test would prove nothing")
	}
	a.Kill()
	if err := simulate.PublishAll(ctx, env.JS, msgs[half:], 4000); err != nil {
		t.Fatal(err)
	}
	checkAgainstResolver(t, env.JS, msgs)
	if code, err := b.get("/readyz"); err != nil || code != 200 {
		t.Fatalf("survivor not ready: %d %v", code, err)
	}
	if after := b.eventsHandled(t); after <= handledB {
		t.Fatalf("survivor handled no events after the kill (%.0f before, %.0f after)", handledB, after)
	}
}

// laneOwners lists the pinned client id of each lane consumer.
func laneOwners(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	var out []string
	for p := 0; p < 4; p++ {
		c, err := js.Consumer(context.Background(), topology.EventsStream, topology.LaneConsumer(p))
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		pin := ""
		for _, g := range info.PriorityGroups {
			pin = g.PinnedClientID
		}
		out = append(out, pin)
	}
	return out
}
