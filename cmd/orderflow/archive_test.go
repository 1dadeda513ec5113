package main

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/testsupport/testrun"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// TestServeArchivesCompletedOrders runs serve with a short archive age and checks, as
// a user would, that completed orders leave the WAL and still answer over HTTP and
// through `orderflow status`, marked as archived, with the status the resolver says:
// into the default directory, and into an S3-compatible bucket.
func TestServeArchivesCompletedOrders(t *testing.T) {
	t.Run("dir", func(t *testing.T) { serveArchives(t, "") })
	t.Run("s3", func(t *testing.T) {
		s3 := testenv.S3(t) // the credentials it sets reach the child processes
		serveArchives(t, s3.Location(s3.Bucket(t), "prod"))
	})
}

// serveArchives archives to location, or to serve's default when it is empty.
func serveArchives(t *testing.T, location string) {
	dir := t.TempDir()
	addr := freeAddr(t)
	args := []string{"--data-dir", filepath.Join(dir, "data"), "--nats-listen", addr, "--archive-after", "1s", "--archive-interval", "1s"}
	if location == "" {
		location = filepath.Join(dir, "data", "archive")
	} else {
		args = append(args, "--archive", location)
	}
	inst := startInstance(t, append(args, failoverArgs...)...)
	nc, jsc := connectTo(t, "nats://"+addr)
	defer nc.Close()
	msgs, _ := testrun.PublishDrained(t, jsc, simulate.Config{Seed: 61, Orders: 40, CancelRate: simulate.Off})
	want := verify.Views(verify.FoldMessages(msgs))
	id := msgs[0].Event.OrderID
	waitArchived(t, jsc, inst, id)
	resp, err := http.Get("http://" + inst.HTTP + "/v1/orders/" + id)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Status   string `json:"status"`
		Archived bool   `json:"archived"`
	}
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !got.Archived || got.Status != string(want[id].Status) {
		t.Fatalf("GET archived order: %d %+v (want %s, archived)", resp.StatusCode, got, want[id].Status)
	}
	// An operator's archive pass finds nothing left to do: every batch is finished.
	if out, err := orderflow(t, "replay", "--nats-url", "nats://"+addr, "--target", "archive", "--archive", location, "--archive-after", "1s", "--force"); err != nil || !strings.Contains(out, `archive: 0 orders, 0 events, 0 files, 0 bytes (finished interrupted batch: "")`) {
		t.Fatalf("replay --target archive: %v\n%s", err, out)
	}
	out, err := orderflow(t, "status", id, "--nats-url", "nats://"+addr, "--archive", location)
	if err != nil || !strings.Contains(out, "from the archive") || !strings.Contains(out, string(want[id].Status)) {
		t.Fatalf("orderflow status of an archived order: %v\n%s", err, out)
	}
}

// waitArchived waits until the archive purged the order's events from the WAL,
// failing when serve exits first.
func waitArchived(t *testing.T, js jetstream.JetStream, inst *instance, id string) {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := s.GetLastMsgForSubject(ctx, topology.OrderWALFilter(id)); err != nil {
			return
		}
		if time.Now().After(deadline) || inst.Exited() {
			t.Fatalf("completed order %s was not archived within 60s (serve exited: %v)", id, inst.Exited())
		}
		time.Sleep(300 * time.Millisecond)
	}
}
