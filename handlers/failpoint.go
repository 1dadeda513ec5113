package handlers

import (
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Failpoints crash the process at named points so fault tests can prove that no
// crash position loses or duplicates a milestone. The composition root reads them
// from ORDERFLOW_FAILPOINT ("after-snapshot-write", or
// "after-snapshot-write:0.05,consumer-after-record:0.1": the number is the
// probability of crashing each time the point is reached) and injects them; a nil
// Failpoints never fires.
type Failpoints map[string]float64

// Points the lanes, the example consumers and partitions grow pass.
const (
	// FailAfterSnapshotWrite: the snapshot with a pending milestone is durable, the
	// milestone not yet published.
	FailAfterSnapshotWrite = "after-snapshot-write"
	// FailAfterMilestonePublish: the milestone is published, the outbox not cleared.
	FailAfterMilestonePublish = "after-milestone-publish"
	// FailConsumerAfterRecord: a downstream consumer recorded a milestone, not acked.
	FailConsumerAfterRecord = "consumer-after-record"
	// FailGrowAfterSwitch: orderflow partitions grow repartitioned the WAL and
	// recorded the switch, and folded nothing yet.
	FailGrowAfterSwitch = "grow-after-switch"
)

// FailpointsFromEnv reads ORDERFLOW_FAILPOINT.
func FailpointsFromEnv() Failpoints { return ParseFailpoints(os.Getenv("ORDERFLOW_FAILPOINT")) }

// ParseFailpoints reads a failpoint list; an unreadable probability means 1.
func ParseFailpoints(s string) Failpoints {
	var out Failpoints
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
		if out == nil {
			out = Failpoints{}
		}
		out[name] = prob
	}
	return out
}

// Hit kills the process with SIGKILL, as a crash would, when the named point is
// armed and the dice say so.
func (f Failpoints) Hit(name string) {
	if p, ok := f[name]; ok && rand.Float64() < p {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
