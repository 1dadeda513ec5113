// Package replay rebuilds projections from the WAL: order snapshots in KV, and (with
// the ClickHouse sink) the analytics tables, from a sequence or a time, for every
// order or one. It is safe while the pipeline runs: snapshot writes are
// compare-and-set, and a lane holding a stale copy of an order gets a conflict, reloads
// and folds the WAL again.
package replay

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// Options select what to replay.
type Options struct {
	// FromSeq and FromTime pick the first WAL event; every order with an event at
	// or after it is rebuilt from its whole history (a snapshot is cumulative).
	FromSeq  uint64
	FromTime time.Time
	// OrderID limits the replay to one order.
	OrderID string
	// DryRun computes and reports without writing.
	DryRun bool
	// TerminalTTL is how long KV keeps the snapshots replay writes for delivered and
	// cancelled orders: the lane's --terminal-ttl, so a replayed snapshot expires
	// like one the lane wrote. 0 takes the topology's default, as the lane does.
	TerminalTTL time.Duration
	// Progress, if set, is called as orders are processed.
	Progress func(done, total int)
}

// Report says what a replay found and did.
type Report struct {
	FromSeq  uint64              `json:"from_seq"`
	Orders   int                 `json:"orders"`
	Differ   int                 `json:"differ"`
	Written  int                 `json:"written"`
	Sample   []verify.Difference `json:"sample,omitempty"`
	Duration time.Duration       `json:"duration_ns"`
	Events   int                 `json:"events_folded"`
}

// StartSeq resolves FromSeq/FromTime to a WAL sequence.
func StartSeq(ctx context.Context, js jetstream.JetStream, o Options) (uint64, error) {
	if o.FromTime.IsZero() {
		return max(o.FromSeq, 1), nil
	}
	return wal.SeqAtTime(ctx, js, o.FromTime)
}

// Snapshots rebuilds order snapshots from the WAL.
func Snapshots(ctx context.Context, js jetstream.JetStream, o Options) (Report, error) {
	start := time.Now()
	var rep Report
	from, err := StartSeq(ctx, js, o)
	if err != nil {
		return rep, err
	}
	rep.FromSeq = from
	want, touched, events, err := fold(ctx, js, from, o.OrderID)
	if err != nil {
		return rep, err
	}
	rep.Events = events
	store, err := snapshot.Open(ctx, js, o.terminalTTL())
	if err != nil {
		return rep, err
	}
	prefix, err := topology.MilestonesPublishPrefixOf(ctx, js)
	if err != nil {
		return rep, err
	}
	ms := handlers.NewMilestonePublisher(js, prefix)
	ids := make([]string, 0, len(touched))
	for id := range touched {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	rep.Orders = len(ids)
	// Each order costs a KV read (and maybe a write): run several at once so the
	// replay is bound by the server, not by one round trip at a time.
	var (
		mu   sync.Mutex
		done int
		errs []error
		next = make(chan string)
		wg   sync.WaitGroup
	)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range next {
				wrote, diff, err := rebuildOne(ctx, store, ms, id, want[id], o.DryRun)
				mu.Lock()
				done++
				if o.Progress != nil {
					o.Progress(done, len(ids))
				}
				if err != nil {
					errs = append(errs, err)
				}
				if diff != nil {
					rep.Differ++
					if len(rep.Sample) < 5 {
						rep.Sample = append(rep.Sample, *diff)
					}
				}
				if wrote {
					rep.Written++
				}
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		next <- id
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return rep, err
	}
	sort.Slice(rep.Sample, func(i, j int) bool { return rep.Sample[i].OrderID < rep.Sample[j].OrderID })
	rep.Duration = time.Since(start)
	return rep, nil
}

// terminalTTL is the TTL the lane gives terminal snapshots under the same setting.
func (o Options) terminalTTL() time.Duration {
	t := topology.Topology{TerminalTTL: o.TerminalTTL}
	t.SetDefaults()
	return t.TerminalTTL
}

// fold reads the WAL once and returns every order's recomputed state plus the set
// of orders with an event at or after from.
func fold(ctx context.Context, js jetstream.JetStream, from uint64, only string) (map[string]*resolver.State, map[string]bool, int, error) {
	filter := topology.WALPrefix + ".>"
	if only != "" {
		filter = topology.OrderWALFilter(only)
	}
	touched := map[string]bool{}
	events := 0
	states, err := verify.FoldWAL(ctx, js, filter, func(ev *schemas.Event, seq uint64) {
		events++
		if seq >= from {
			touched[ev.OrderID] = true
		}
	})
	return states, touched, events, err
}

// rebuildOne writes the recomputed state of one order if the stored one differs. It
// keeps the order's outbox and first publishes any milestone the recomputed state owes:
// the milestone stream keeps one message per subject, so publishing before recording
// can never duplicate one (nor can publishing again when the write has to be retried).
func rebuildOne(ctx context.Context, store *snapshot.Store, ms *handlers.MilestonePublisher, id string, want *resolver.State, dryRun bool) (bool, *verify.Difference, error) {
	// The common case, a snapshot that holds the recomputed state, costs one read
	// and no decoding.
	data, _, err := store.GetRaw(ctx, id)
	if err != nil {
		return false, nil, err
	}
	if want != nil && data != nil && snapshot.Holds(data, want) {
		return false, nil, nil
	}
	var diff *verify.Difference
	wrote, err := store.Update(ctx, id, func(got *resolver.State, ob outbox.Outbox) (*resolver.State, outbox.Outbox, error) {
		diff = nil
		diffs := verify.Diff(map[string]*resolver.State{id: want}, map[string]*resolver.State{id: got})
		if len(diffs) == 0 {
			return nil, ob, nil
		}
		diff = &verify.Difference{OrderID: id}
		if len(diffs) > 0 {
			diff = &diffs[0]
		}
		if dryRun || want == nil {
			return nil, ob, nil
		}
		ob.Update(want.Milestones())
		for _, kind := range slices.Clone(ob.Pending) {
			if err := ms.Publish(ctx, id, kind); err != nil {
				return nil, ob, err
			}
			ob.Published(kind)
		}
		return want, ob, nil
	})
	return wrote, diff, err
}
