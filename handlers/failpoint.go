package handlers

import (
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Failpoints crash the process at a named point so fault tests can prove that no
// crash position loses or duplicates a milestone. ORDERFLOW_FAILPOINT lists them:
// "after-snapshot-write" or "after-snapshot-write:0.05,consumer-after-record:0.1"
// (the number is the probability of crashing each time the point is reached).
const (
	// FailAfterSnapshotWrite: the snapshot with a pending milestone is durable, the
	// milestone not yet published.
	FailAfterSnapshotWrite = "after-snapshot-write"
	// FailAfterMilestonePublish: the milestone is published, the outbox not cleared.
	FailAfterMilestonePublish = "after-milestone-publish"
	// FailConsumerAfterRecord: a downstream consumer recorded a milestone, not acked.
	FailConsumerAfterRecord = "consumer-after-record"
)

// failpoints is read once: a process-wide switch, set only by fault tests.
var failpoints = parseFailpoints(os.Getenv("ORDERFLOW_FAILPOINT"))

func parseFailpoints(s string) map[string]float64 {
	out := map[string]float64{}
	for _, part := range strings.Split(s, ",") {
		name, p, hasP := strings.Cut(strings.TrimSpace(part), ":")
		if name == "" {
			continue
		}
		prob := 1.0
		if hasP {
			if v, err := strconv.ParseFloat(p, 64); err == nil {
				prob = v
			}
		}
		out[name] = prob
	}
	return out
}

// Failpoint kills the process with SIGKILL, as a crash would, when the named point
// is armed and the dice say so.
func Failpoint(name string) { failpoint(name) }

func failpoint(name string) {
	if p, ok := failpoints[name]; ok && rand.Float64() < p {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
