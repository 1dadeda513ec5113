package bench

import (
	"context"
	"testing"
	"time"
)

// TestRunTinyWorkload runs every phase on a workload smaller than the read sampler's
// hot set: the figures are noise at this size, so it checks only that each phase ran
// and reported something, never how fast.
func TestRunTinyWorkload(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, Config{Orders: 40, LiveSeconds: 1, IngestSeconds: 1, Reads: 20})
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	if res.Events == 0 || res.RawConsumeAckRate == 0 || res.PipelineRate == 0 {
		t.Errorf("backlog phases measured nothing: %+v", res)
	}
	if res.Peer == nil || res.Peer.Events == 0 {
		t.Errorf("the peer phase handled nothing: %+v", res.Peer)
	}
	if len(res.Live) != len(DefaultLiveFractions) {
		t.Errorf("live points: got %d, want one per default fraction (%v)", len(res.Live), DefaultLiveFractions)
	}
	for _, l := range res.Live {
		if l.Samples == 0 {
			t.Errorf("live point %.2f x timed no event", l.Fraction)
		}
	}
	if res.Ingest == nil || res.Ingest.HTTPEvents == 0 || res.Ingest.Samples == 0 {
		t.Errorf("the ingest phase measured nothing: %+v", res.Ingest)
	}
	if res.HotReadP99Ms == 0 || res.ColdReadP99Ms == 0 {
		t.Errorf("reads measured nothing: hot p99 %v ms, cold p99 %v ms", res.HotReadP99Ms, res.ColdReadP99Ms)
	}
}
