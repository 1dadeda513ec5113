package partitions

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// CatchUp says what the fold up to the switch did.
type CatchUp struct {
	// Orders with an event in the range; Written: snapshots written.
	Orders  int `json:"orders"`
	Written int `json:"written"`
	// SetAside: events stored in the DLQ (invalid, or the resolver panicked on them).
	SetAside int `json:"dlq_sent"`
}

// catchUp does what the stopped lanes had left to do for the events in from..upto:
// every order with an event there gets the events after its snapshot folded in,
// one by one, its outbox updated after each change and the milestones it owes
// published before the snapshot is written (as a lane does, so a milestone reached
// and revoked within the range is still published), and every event a lane sets
// aside goes to the DLQ. A lane's checkpoint ckpts[p] says which events of
// partition p it had finished; a partition without one never ran.
func catchUp(ctx context.Context, js jetstream.JetStream, ckpts map[int]uint64, from, upto uint64, terminalTTL time.Duration) (CatchUp, error) {
	var res CatchUp
	dlq := handlers.NewDLQ(js)
	var ids []string
	touched := map[string]bool{}
	err := wal.ReadRange(ctx, js, topology.WALPrefix+".>", from, upto, func(r wal.Record) error {
		p, _ := topology.PartitionOf(r.Subject)
		if c, ran := ckpts[p]; ran && r.Seq <= c {
			return nil // its lane finished it
		}
		ev, rej := fold.Classify(r)
		if rej != nil {
			res.SetAside++
			return dlq.Send(ctx, r, *rej)
		}
		if !touched[ev.OrderID] {
			touched[ev.OrderID] = true
			ids = append(ids, ev.OrderID)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("read the WAL up to the switch: %w", err)
	}
	slices.Sort(ids)
	res.Orders = len(ids)
	log, err := wal.Open(ctx, js)
	if err != nil {
		return res, err
	}
	t := topology.Topology{TerminalTTL: terminalTTL}
	t.SetDefaults()
	store, err := snapshot.Open(ctx, js, t.TerminalTTL)
	if err != nil {
		return res, err
	}
	lanes, err := handlers.NewJetStreamLanes(ctx, js)
	if err != nil {
		return res, err
	}
	prefix, err := topology.MilestonesPublishPrefixOf(ctx, js)
	if err != nil {
		return res, err
	}
	ms := handlers.NewMilestonePublisher(js, prefix)
	for _, id := range ids {
		wrote, aside, err := catchUpOrder(ctx, log, lanes, store, ms, dlq, id, upto)
		if err != nil {
			return res, err
		}
		res.SetAside += aside
		if wrote {
			res.Written++
		}
	}
	return res, nil
}

// catchUpOrder folds the order's events after its snapshot up to upto into it. An
// event the resolver panics on is set aside (DLQ) and the fold starts over
// without it, as the lanes do.
func catchUpOrder(ctx context.Context, log *wal.Log, lanes *handlers.JetStreamLanes, store *snapshot.Store, ms *handlers.MilestonePublisher, dlq *handlers.DLQ, id string, upto uint64) (bool, int, error) {
	skip := map[uint64]bool{}
	for {
		wrote, err := store.Update(ctx, id, func(st *resolver.State, ob outbox.Outbox) (*resolver.State, outbox.Outbox, error) {
			if st == nil {
				// No snapshot (or an expired terminal one): the lanes fold the order
				// from its first event; milestones it published then are refused
				// as duplicates by ORDER_MILESTONES.
				st = resolver.New(id)
			}
			before := st.WalSeq()
			c := fold.Into(st, skip)
			c.Then = func(st *resolver.State, _ fold.Record, _ *schemas.Event, d resolver.Decision) error {
				if d.Changed {
					ob.Update(st.Milestones())
				}
				return nil
			}
			if err := log.ReadOrder(ctx, id, before, upto, c.Record); err != nil {
				return nil, ob, err
			}
			if st.WalSeq() == before && len(ob.Pending) == 0 {
				return nil, ob, nil
			}
			for _, kind := range slices.Clone(ob.Pending) {
				if err := ms.Publish(ctx, id, kind); err != nil {
					return nil, ob, err
				}
				ob.Published(kind)
			}
			return st, ob, nil
		})
		var pe *fold.PanicError
		if !errors.As(err, &pe) {
			if err != nil {
				return false, len(skip), fmt.Errorf("order %s: %w", id, err)
			}
			return wrote, len(skip), nil
		}
		rec, err := lanes.ReadSeq(ctx, pe.Seq)
		if err != nil {
			return false, len(skip), err
		}
		if err := dlq.Send(ctx, rec, fold.Rejection{Reason: fold.ReasonHandlerPanic, Detail: "resolver panicked on this event"}); err != nil {
			return false, len(skip), err
		}
		skip[pe.Seq] = true
	}
}
