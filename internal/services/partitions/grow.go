// Package partitions grows the partition count of a WAL that holds events: the
// migration README's "Growing partitions later" describes. ORDER_EVENTS is
// repartitioned in place (its sequences, and so every wal_seq, checkpoint, ClickHouse
// row and archive entry, stay valid); every event stored up to the switch is made
// durable here as the lanes would have (snapshot, milestones, DLQ copy); the new
// lanes start right after it.
//
// The lanes must be stopped (every orderflow serve): a lane folding an order's old
// events while another folds its new ones would apply them out of order, and the
// earlier ones, older than the snapshot then, would never be applied. So the growth
// is recorded and the lane consumers deleted before the stream changes, and serve
// refuses to start until the growth has finished. Producers
// need not stop: what they publish into ORDER_EVENTS meanwhile is stored and
// acknowledged as always, before the switch on the old partitions and after it on
// the new ones, and folded by the replay or by the new lanes. (The ingest API is part
// of serve: its clients retry with their Idempotency-Key until serve is back.)
package partitions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// ErrShrink: the partition count only grows (a smaller count would need the same
// migration, but merging lanes buys nothing an idle lane costs).
var ErrShrink = errors.New("partitions only grow")

// Options say how to grow.
type Options struct {
	// To is the new partition count.
	To int
	// TerminalTTL is serve's --terminal-ttl, for the snapshots the replay writes.
	TerminalTTL time.Duration
	// Failpoints crash the process at handlers.FailGrowAfterSwitch (crash tests).
	Failpoints handlers.Failpoints
}

// Report says what Grow did.
type Report struct {
	From int `json:"from"`
	To   int `json:"to"`
	// Switch is the last WAL sequence folded here; the new lanes start after it.
	Switch uint64 `json:"switch_seq"`
	// CatchUpFrom is the first WAL sequence some stopped lane had not made durable;
	// CatchUp is what folding from there up to the switch did.
	CatchUpFrom uint64        `json:"catch_up_from"`
	CatchUp     CatchUp       `json:"catch_up"`
	Duration    time.Duration `json:"duration_ns"`
	Unchanged   bool          `json:"unchanged,omitempty"`
}

// Grow repartitions ORDER_EVENTS to o.To partitions. Before it changes anything it
// records the growth in KV order_lanes (topology.Growth) and removes the lane
// consumers; serve refuses to start until the record is gone, which happens only
// once the new lanes exist. It is safe to run again after a failure at any step:
// the next run finishes the growth recorded (with the checkpoints recorded then),
// taking the switch where the WAL ends by then, which only moves it later, and
// folding everything up to it again (idempotently).
func Grow(ctx context.Context, js jetstream.JetStream, o Options) (Report, error) {
	start := time.Now()
	rep := Report{To: o.To}
	if err := (topology.Topology{Partitions: o.To, Replicas: 1, TerminalTTL: time.Second}).Validate(); err != nil {
		return rep, err
	}
	s, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return rep, fmt.Errorf("look up stream %s: %w", topology.EventsStream, err)
	}
	if rep.From, err = topology.PartitionsOf(s.CachedInfo().Config); err != nil {
		return rep, err
	}
	if rep.From > o.To {
		return rep, fmt.Errorf("%w: the WAL has %d partitions, %d asked", ErrShrink, rep.From, o.To)
	}
	g, err := topology.GrowthUnderWay(ctx, js)
	if err != nil {
		return rep, err
	}
	resumed := g != nil
	switch {
	case resumed && g.To != o.To:
		return rep, fmt.Errorf("%w from %d to %d partitions: finish it first with `orderflow partitions grow --to %d`",
			topology.ErrGrowing, g.From, g.To, g.To)
	case resumed:
		rep.From = g.From
	case rep.From == o.To && lanesComplete(ctx, js, o.To):
		rep.Unchanged = true
		return rep, nil
	}
	// A run that stopped half-way may have left the stream at o.To already; its
	// lanes are the old ones (rep.From is then o.To: cover them all).
	lanes := max(rep.From, o.To)
	if !resumed {
		ckpts, err := checkpoints(ctx, js, lanes)
		if err != nil {
			return rep, err
		}
		// Recorded before the check below: a serve starting from here on is
		// refused, and one that started before is either seen holding its lane or
		// loses it when the consumers are deleted.
		g = &topology.Growth{From: rep.From, To: o.To, Checkpoints: ckpts}
		if err := topology.RecordGrowth(ctx, js, *g, true); err != nil {
			return rep, err
		}
	}
	if err := topology.LaneConsumersIdle(ctx, js, lanes); err != nil {
		if !resumed {
			// Nothing has changed: serve may go on starting.
			err = errors.Join(err, topology.EndGrowth(ctx, js))
		}
		return rep, err
	}
	// No lane may fold anything from here until the new lanes start: not an
	// order's events after the switch before its events before it.
	if err := topology.DeleteLaneConsumers(ctx, js, lanes); err != nil {
		return rep, err
	}
	if _, err := topology.Repartition(ctx, js, o.To); err != nil {
		return rep, err
	}
	// Everything stored up to here is folded below; later events land on the new
	// partitions and the new lanes fold them.
	info, err := s.Info(ctx)
	if err != nil {
		return rep, err
	}
	rep.Switch = info.State.LastSeq
	g.Switch = rep.Switch
	if err := topology.RecordGrowth(ctx, js, *g, false); err != nil {
		return rep, err
	}
	o.Failpoints.Hit(handlers.FailGrowAfterSwitch)
	rep.CatchUpFrom = rep.Switch + 1
	for _, c := range g.Checkpoints {
		rep.CatchUpFrom = min(rep.CatchUpFrom, c+1)
	}
	if rep.CatchUp, err = catchUp(ctx, js, g.Checkpoints, rep.CatchUpFrom, rep.Switch, o.TerminalTTL); err != nil {
		return rep, err
	}
	if err := (topology.Topology{Partitions: o.To}).StartLanesAt(ctx, js, lanes, rep.Switch+1); err != nil {
		return rep, err
	}
	if err := topology.EndGrowth(ctx, js); err != nil {
		return rep, err
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

// lanesComplete reports whether every lane of n has its consumer.
func lanesComplete(ctx context.Context, js jetstream.JetStream, n int) bool {
	for p := range n {
		if _, err := js.Consumer(ctx, topology.EventsStream, topology.LaneConsumer(p)); err != nil {
			return false
		}
	}
	return true
}

// checkpoints reads the checkpoints of the first n lanes that have one or a
// consumer (a lane with a consumer and no checkpoint has made nothing durable: 0).
// A lane with neither is a new partition that never ran.
func checkpoints(ctx context.Context, js jetstream.JetStream, n int) (map[int]uint64, error) {
	kv, err := js.KeyValue(ctx, topology.LanesBucket)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", topology.LanesBucket, err)
	}
	out := map[int]uint64{}
	for p := range n {
		kve, err := kv.Get(ctx, topology.LaneConsumer(p))
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if _, err := js.Consumer(ctx, topology.EventsStream, topology.LaneConsumer(p)); err == nil {
				out[p] = 0
			}
		case err != nil:
			return nil, fmt.Errorf("lane %d checkpoint: %w", p, err)
		default:
			if out[p], err = topology.ParseCheckpoint(kve.Value()); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
