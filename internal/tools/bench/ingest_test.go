package bench

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// TestIngestPhaseMeasuresAuthenticatedPosts runs the ingest phase on a tiny workload
// against serve's own API: every POST carries a token minted for the data
// directory's local key, so anything but 202 (or a 429) fails the phase. It checks
// that each run measured something and that what was answered 202 is in the WAL,
// never how fast.
func TestIngestPhaseMeasuresAuthenticatedPosts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := testenv.NATS(t)
	topo := topology.Topology{Partitions: 2}
	if _, err := topology.Provision(ctx, n.JS, topo); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	addr, stop, err := startPipeline(ctx, n.URL, dir, topo, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	before, err := stream(ctx, n.JS)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Orders: 20}
	cfg.setDefaults()
	res, err := ingestPhase(ctx, n.JS, addr, dir, cfg, time.Second)
	if err != nil {
		t.Fatalf("ingest phase: %v", err)
	}
	if res.RawEvents == 0 || res.RawRate == 0 {
		t.Errorf("raw publish measured nothing: %+v", res)
	}
	if res.HTTPEvents == 0 || res.HTTPRate == 0 || res.Ratio == 0 {
		t.Errorf("HTTP ingest measured nothing: %+v", res)
	}
	if res.Samples == 0 || res.P99Ms == 0 {
		t.Errorf("single-POST latency timed nothing: %+v", res)
	}
	if res.Limited != 0 {
		t.Errorf("%d requests were rate limited: the bench's limits should be out of reach", res.Limited)
	}
	after, err := stream(ctx, n.JS)
	if err != nil {
		t.Fatal(err)
	}
	// Duplicates in the workload are answered 202 and stored once: the WAL grew by
	// at least the distinct events, at most every acknowledged publish and POST.
	grew := int(after.State.Msgs - before.State.Msgs)
	if grew == 0 || grew > res.RawEvents+res.HTTPEvents+res.Samples {
		t.Errorf("the WAL grew by %d events for %d raw publishes, %d + %d POSTs answered 202", grew, res.RawEvents, res.HTTPEvents, res.Samples)
	}
}
