package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/testsupport/testrun"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
)

func orderflow(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := orderflowCmd(t, args...).CombinedOutput()
	return string(out), err
}

// orderflowCmd is the command orderflow runs, for a test that sets its environment.
func orderflowCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = t.TempDir() // defaults such as ./orderflow-data land there, not in the source tree
	return cmd
}

// decodeJSONLine decodes the last line of out that holds a JSON object into v, and
// fails the test, showing out, when there is none or it does not decode: progress
// lines go to stderr, which out may include.
func decodeJSONLine(t *testing.T, out string, v any) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if line := strings.TrimSpace(lines[i]); strings.HasPrefix(line, "{") {
			if err := json.Unmarshal([]byte(line), v); err != nil {
				t.Fatalf("output's JSON line: %v\n%s", err, out)
			}
			return
		}
	}
	t.Fatalf("no JSON line in the output:\n%s", out)
}

// TestReplayRepairsCorruptedSnapshots corrupts snapshots (garbage, a wrong state, a
// deleted key) while the pipeline runs, checks verify reports them, replays from
// sequence 1, and checks verify then reports zero differences and that a second
// replay changes nothing.
func TestReplayRepairsCorruptedSnapshots(t *testing.T) {
	env := testenv.NATS(t)
	startInstance(t, append([]string{"--nats-url", env.URL}, failoverArgs...)...)
	msgs, _ := testrun.PublishDrained(t, env.JS, simulate.Config{Seed: 31, Orders: 300})
	ctx := context.Background()
	url := "--nats-url=" + env.URL
	if out, err := orderflow(t, "verify", url); err != nil {
		t.Fatalf("verify before corruption: %v\n%s", err, out)
	}
	kv, err := env.JS.KeyValue(ctx, topology.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := msgs[0].Event.OrderID, msgs[200].Event.OrderID, msgs[400].Event.OrderID
	if _, err := kv.Put(ctx, a, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	// b gets c's state: decodes fine, wrong order.
	cEntry, err := kv.Get(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, b, cEntry.Value()); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, c); err != nil {
		t.Fatal(err)
	}
	out, err := orderflow(t, "verify", url)
	if err == nil || !strings.Contains(out, "snapshots differ") {
		t.Fatalf("verify did not notice the corruption:\n%s", out)
	}
	t.Logf("verify after corruption:\n%s", out)
	if out, err := orderflow(t, "replay", url, "--target", "kv", "--from-seq", "1", "--dry-run"); err != nil || !strings.Contains(out, "dry run") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if out, err := orderflow(t, "replay", url, "--target", "kv", "--from-seq", "1"); err == nil {
		t.Fatalf("a destructive replay without --force and without a terminal went ahead:\n%s", out)
	}
	out, err = orderflow(t, "replay", url, "--target", "kv", "--from-seq", "1", "--force")
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	t.Logf("replay: %s", out)
	if out, err := orderflow(t, "verify", url); err != nil {
		t.Fatalf("verify after replay: %v\n%s", err, out)
	}
	out, err = orderflow(t, "replay", url, "--target", "kv", "--from-seq", "1", "--force")
	if err != nil || !strings.Contains(out, "0 differ; rewrote 0") {
		t.Fatalf("a second replay changed something: %v\n%s", err, out)
	}
}

// TestReplayFromTimeTakesTheOrdersSinceThen: --from-time starts at the first WAL
// event stored at or after the time, so a dry run covers exactly the orders with
// an event since then.
func TestReplayFromTimeTakesTheOrdersSinceThen(t *testing.T) {
	env := testenv.NATS(t)
	startInstance(t, append([]string{"--nats-url", env.URL}, failoverArgs...)...)
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 41, Orders: 60, InvalidRate: simulate.Off})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := simulate.PublishAll(ctx, env.JS, msgs, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	since := time.Now()
	time.Sleep(50 * time.Millisecond)
	later := map[string]bool{}
	for _, m := range msgs[:40] {
		later[m.Event.OrderID] = true
	}
	for id := range later {
		body := `{"schema_version":1,"event_id":"late-` + id + `","order_id":"` + id + `","source":"estimator","source_seq":90,"occurred_at":"2026-01-05T18:00:00Z","eta":"2026-01-05T18:10:00Z"}`
		if _, err := env.JS.Publish(ctx, "orders.events.estimator."+id, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pipelines.WaitDrained(ctx, env.JS, time.Minute); err != nil {
		t.Fatal(err)
	}
	out, err := orderflow(t, "replay", "--nats-url="+env.URL, "--target", "kv", "--from-time", since.UTC().Format(time.RFC3339Nano), "--dry-run", "--json")
	if err != nil {
		t.Fatalf("replay --from-time: %v\n%s", err, out)
	}
	var rep struct {
		Orders int `json:"orders"`
		Differ int `json:"differ"`
	}
	decodeJSONLine(t, out, &rep)
	if rep.Orders != len(later) || rep.Differ != 0 {
		t.Fatalf("replay --from-time covered %d orders (%d differ), want the %d with an event since then", rep.Orders, rep.Differ, len(later))
	}
}
