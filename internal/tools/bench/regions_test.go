package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestRegionsTinyRun runs the regions bench at a tiny rate and size with the orderflow
// binary built from this tree (region a runs as its process): it checks that every
// phase ran and reported plausible figures, never how fast.
func TestRegionsTinyRun(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "orderflow")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/orderflow/orderflow/cmd/orderflow").CombinedOutput(); err != nil {
		t.Fatalf("build orderflow: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := RunRegions(ctx, RegionsConfig{Binary: bin, Rate: 200, Seconds: 1, LatencyMs: 20, Progress: os.Stderr})
	if err != nil {
		t.Fatalf("regions bench: %v", err)
	}
	if res.FirstEventMs <= 0 || res.FirstRawMs <= 0 {
		t.Errorf("first replication not timed: event %v ms, raw %v ms", res.FirstEventMs, res.FirstRawMs)
	}
	if len(res.Lag) != 2 {
		t.Fatalf("lag runs: got %d, want one without and one with added latency", len(res.Lag))
	}
	for _, l := range res.Lag {
		for name, lag := range map[string]Lag{"raw": l.Raw, "wal": l.WAL, "snapshot": l.Snapshot} {
			if lag.Events == 0 || lag.P50Ms <= 0 || lag.P99Ms < lag.P50Ms || lag.MaxMs < lag.P99Ms {
				t.Errorf("link +%d ms, %s: %+v", l.AddedLatencyMs, name, lag)
			}
		}
		if l.LinkRTTP50Ms <= 0 || l.MetricScrapes == 0 {
			t.Errorf("link +%d ms: round trip %v ms, %d scrapes of /metrics", l.AddedLatencyMs, l.LinkRTTP50Ms, l.MetricScrapes)
		}
	}
	// The added latency is on every byte across the link, each way.
	if with := res.Lag[1]; with.Raw.P50Ms < float64(with.AddedLatencyMs) || with.LinkRTTP50Ms < 2*float64(with.AddedLatencyMs) {
		t.Errorf("link +%d ms: raw p50 %v ms, round trip %v ms: the latency did not apply", with.AddedLatencyMs, with.Raw.P50Ms, with.LinkRTTP50Ms)
	}
	f := res.Failover
	if f.FirstAckMs <= 0 || f.SnapshotMs <= 0 || f.RestartReadyMs <= 0 || f.CatchUpMs < f.RestartReadyMs || f.WALEvents == 0 || f.CleanRestartReadyMs <= 0 || f.CleanRestartJetStreamMs <= 0 {
		t.Errorf("failover: %+v", f)
	}
}
