// Package orders answers questions about one order, never older than the WAL:
// its current view (cache, then KV snapshot, then the WAL after the snapshot's
// wal_seq) and its timeline (every event with its decision).
package orders

import (
	"context"
	"errors"
	"sync"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/adapters/wal"
)

// ErrNotFound means the order has no accepted event.
var ErrNotFound = errors.New("order not found")

// Reader serves order reads.
type Reader struct {
	log   *wal.Log
	snaps *snapshot.Store
	max   int

	mu    sync.Mutex
	cache map[string]*cached
}

type cached struct {
	mu sync.Mutex
	st *resolver.State
}

// NewReader returns a reader caching up to maxCached orders.
func NewReader(log *wal.Log, snaps *snapshot.Store, maxCached int) *Reader {
	if maxCached <= 0 {
		maxCached = 100_000
	}
	return &Reader{log: log, snaps: snaps, max: maxCached, cache: make(map[string]*cached)}
}

// Get returns the order's view including every event the WAL holds for it now.
// Cost: one direct get to learn the order's newest WAL sequence; a cold read adds a
// KV read, and any events newer than what is known are folded in.
func (r *Reader) Get(ctx context.Context, id string) (resolver.View, error) {
	last, err := r.log.LastSeq(ctx, id)
	if err != nil {
		return resolver.View{}, err
	}
	c := r.entry(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st == nil {
		st, stored, err := r.snapshot(ctx, id)
		if err != nil {
			return resolver.View{}, err
		}
		if !stored && last == 0 {
			r.forget(id)
			return resolver.View{}, ErrNotFound
		}
		c.st = st
	}
	if last > c.st.WalSeq() {
		err := fold.Rebuild(func(skip map[uint64]bool) error {
			if len(skip) > 0 { // the resolver panicked: start over from the snapshot
				st, _, err := r.snapshot(ctx, id)
				if err != nil {
					return err
				}
				c.st = st
			}
			return r.log.ReadOrder(ctx, id, c.st.WalSeq(), last, fold.Into(c.st, skip).Record)
		})
		if err != nil {
			c.st = nil // partially folded: start over next time
			return resolver.View{}, err
		}
	}
	v := c.st.View()
	if v.Status == "" {
		return resolver.View{}, ErrNotFound
	}
	return v, nil
}

// snapshot returns the state to fold the order's newer WAL events into: its stored
// one, or a new one when none is stored (never written, expired, archived).
func (r *Reader) snapshot(ctx context.Context, id string) (st *resolver.State, stored bool, err error) {
	st, _, _, err = r.snaps.Get(ctx, id)
	switch {
	case err != nil:
		return nil, false, err
	case st == nil:
		return resolver.New(id), false, nil
	}
	return st, true, nil
}

// Replay folds the order's whole WAL up to upto (0: to the end) into a new state,
// leaving out what the lanes set aside, as they do.
func (r *Reader) Replay(ctx context.Context, id string, upto uint64) (*resolver.State, error) {
	var st *resolver.State
	err := fold.Rebuild(func(skip map[uint64]bool) error {
		st = resolver.New(id)
		return r.log.ReadOrder(ctx, id, 0, upto, fold.Into(st, skip).Record)
	})
	return st, err
}

func (r *Reader) entry(id string) *cached {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cache[id]
	if !ok {
		if len(r.cache) >= r.max {
			for k := range r.cache { // drop an arbitrary quarter: cheap, and reads re-fill
				delete(r.cache, k)
				if len(r.cache) < r.max*3/4 {
					break
				}
			}
		}
		c = &cached{}
		r.cache[id] = c
	}
	return c
}

func (r *Reader) forget(id string) {
	r.mu.Lock()
	delete(r.cache, id)
	r.mu.Unlock()
}

// TimelineEvent is one event of an order with the decision it got.
type TimelineEvent = fold.TimelineEvent

// Timeline is every event of an order in WAL order, and the view they resolve to.
type Timeline struct {
	OrderID string          `json:"order_id"`
	Current *resolver.View  `json:"current,omitempty"`
	Events  []TimelineEvent `json:"events"`
}

// Timeline refolds the order's whole WAL: decisions are recomputed, not stored, so
// they always match the rules that produced the current status.
func (r *Reader) Timeline(ctx context.Context, id string) (Timeline, error) {
	tl := Timeline{OrderID: id, Events: []TimelineEvent{}}
	st := resolver.New(id)
	err := r.log.ReadOrder(ctx, id, 0, 0, func(rec wal.Record) error {
		tl.Events = append(tl.Events, fold.Step(st, rec))
		return nil
	})
	if err != nil {
		return tl, err
	}
	if len(tl.Events) == 0 {
		return tl, ErrNotFound
	}
	if v := st.View(); v.Status != "" {
		tl.Current = &v
	}
	return tl, nil
}
