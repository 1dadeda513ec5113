// Package verify recomputes order states from first principles — the pure resolver
// over the WAL, or over a list of published messages — and reports every stored
// snapshot that disagrees. `orderflow verify` and the crash tests both use it.
package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// Difference is one order whose stored state disagrees with the recomputed one.
type Difference struct {
	OrderID string
	Want    *resolver.View // nil: the order should not exist
	Got     *resolver.View // nil: missing
}

func (d Difference) String() string {
	return fmt.Sprintf("order %s: want %s, got %s", d.OrderID, describe(d.Want), describe(d.Got))
}

func describe(v *resolver.View) string {
	if v == nil {
		return "nothing"
	}
	return fmt.Sprintf("%s/%s predicted=%v version=%v", v.Status, v.StatusSource, v.Predicted, v.Version)
}

// FoldMessages is the oracle for a simulated workload: the resolver over the
// messages in publish order (see EachApplied).
func FoldMessages(msgs []simulate.Message) map[string]*resolver.State {
	return EachApplied(msgs, nil)
}

// EachApplied folds msgs with the resolver in publish order, as the WAL receives
// them: producer retries dropped by message id (JetStream's duplicate window) and
// invalid messages skipped, each valid one at the WAL position it will get as long
// as nothing else publishes. fn, if set, sees every applied message with its
// order's state after it and the decision. It returns the final states.
func EachApplied(msgs []simulate.Message, fn func(i int, st *resolver.State, d resolver.Decision)) map[string]*resolver.State {
	out := map[string]*resolver.State{}
	c := &fold.Catchup{State: stateIn(out)}
	var i int
	if fn != nil {
		c.Then = func(st *resolver.State, _ fold.Record, _ *schemas.Event, d resolver.Decision) error {
			fn(i, st, d)
			return nil
		}
	}
	seen := map[string]bool{}
	var seq uint64
	for i = range msgs {
		m := &msgs[i]
		if seen[m.MsgID] {
			continue
		}
		seen[m.MsgID] = true
		seq++
		if m.Invalid != "" {
			continue
		}
		ev := m.Event
		// A resolver panic (it is fuzzed never to) leaves the event out, as the lanes do.
		_ = c.Event(fold.Record{Seq: seq}, &ev)
	}
	return out
}

// stateIn returns the state of an order in states, added when new.
func stateIn(states map[string]*resolver.State) func(string) *resolver.State {
	return func(id string) *resolver.State {
		st, ok := states[id]
		if !ok {
			st = resolver.New(id)
			states[id] = st
		}
		return st
	}
}

// FromWAL recomputes every order's state by folding the whole WAL.
func FromWAL(ctx context.Context, js jetstream.JetStream) (map[string]*resolver.State, error) {
	return FoldWAL(ctx, js, topology.WALPrefix+".>", nil)
}

// FoldWAL folds every valid event matching filter, in WAL order, with the resolver,
// calling visit (when set) once for each event folded in. An event the resolver
// panics on is left out, as the lanes set it aside: the WAL is then read again.
func FoldWAL(ctx context.Context, js jetstream.JetStream, filter string, visit func(ev *schemas.Event, seq uint64)) (map[string]*resolver.State, error) {
	s, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return nil, err
	}
	last := s.CachedInfo().State.LastSeq
	var out map[string]*resolver.State
	var visited uint64 // a pass after a panic sees the earlier events again
	err = fold.Rebuild(func(skip map[uint64]bool) error {
		out = map[string]*resolver.State{}
		c := &fold.Catchup{State: stateIn(out), Skip: skip}
		if visit != nil {
			c.Then = func(_ *resolver.State, r fold.Record, ev *schemas.Event, _ resolver.Decision) error {
				if r.Seq > visited {
					visited = r.Seq
					visit(ev, r.Seq)
				}
				return nil
			}
		}
		return wal.ReadRange(ctx, js, filter, 1, last, c.Record)
	})
	return out, err
}

// Snapshots reads every snapshot in KV order_status. A value that does not decode
// is returned as a nil state: it differs from whatever the WAL says.
func Snapshots(ctx context.Context, js jetstream.JetStream) (map[string]*resolver.State, error) {
	kv, err := js.KeyValue(ctx, topology.StatusBucket)
	if err != nil {
		return nil, err
	}
	out := map[string]*resolver.State{}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue // deleted or expired since listed
		}
		st, _, err := snapshot.Decode(e.Value())
		if err != nil {
			st = nil
		}
		out[key] = st
	}
	return out, nil
}

// Diff lists every order whose public view differs. wal_seq is left out: a snapshot
// need not be rewritten for trailing events that changed nothing.
func Diff(want, got map[string]*resolver.State) []Difference {
	return DiffViews(Views(want), Views(got))
}

// Views returns the public view of every state that resolved to an order (states
// holding only rejected events are not orders yet).
func Views(states map[string]*resolver.State) map[string]resolver.View {
	out := make(map[string]resolver.View, len(states))
	for id, st := range states {
		if st == nil {
			out[id] = resolver.View{OrderID: id, Status: "(missing or undecodable)"}
			continue
		}
		if v := st.View(); v.Status != "" {
			out[id] = v
		}
	}
	return out
}

// DiffViews lists every order whose view differs between want and got.
func DiffViews(want, got map[string]resolver.View) []Difference {
	var diffs []Difference
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			diffs = append(diffs, Difference{OrderID: id, Want: &w})
		} else if !sameView(w, g) {
			diffs = append(diffs, Difference{OrderID: id, Want: &w, Got: &g})
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok {
			diffs = append(diffs, Difference{OrderID: id, Got: &g})
		}
	}
	sort.Slice(diffs, func(i, j int) bool { return diffs[i].OrderID < diffs[j].OrderID })
	return diffs
}

// sameView compares the JSON the API would serve, so equal instants in different
// time zone representations compare equal.
func sameView(a, b resolver.View) bool {
	a.WalSeq, b.WalSeq = 0, 0
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// Milestones maps order id to the set of milestone kinds (delivered, delivered_revoked, ...).
type Milestones map[string]map[string]bool

// ExpectedMilestones is the oracle for ORDER_MILESTONES: the outbox rules applied
// after every event that changed an order's answer, in publish order.
func ExpectedMilestones(msgs []simulate.Message) Milestones {
	out := Milestones{}
	boxes := map[string]*outbox.Outbox{}
	EachApplied(msgs, func(i int, st *resolver.State, d resolver.Decision) {
		id := msgs[i].Event.OrderID
		if boxes[id] == nil {
			boxes[id] = &outbox.Outbox{}
		}
		if d.Changed {
			boxes[id].Update(st.Milestones())
		}
	})
	for id, b := range boxes {
		for _, k := range append(b.Emitted, b.Pending...) {
			if out[id] == nil {
				out[id] = map[string]bool{}
			}
			out[id][k] = true
		}
	}
	return out
}

// PublishedMilestones reads ORDER_MILESTONES and returns what it holds, failing if
// any (order, kind) appears more than once.
func PublishedMilestones(ctx context.Context, js jetstream.JetStream) (Milestones, error) {
	s, err := js.Stream(ctx, topology.MilestonesStream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	out := Milestones{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		rest := strings.TrimPrefix(m.Subject, topology.MilestonesPrefix+".")
		kind, id, _ := strings.Cut(rest, ".")
		if out[id][kind] {
			return nil, fmt.Errorf("milestone %s of order %s published twice", kind, id)
		}
		if out[id] == nil {
			out[id] = map[string]bool{}
		}
		out[id][kind] = true
	}
	return out, nil
}

// DiffMilestones lists every order whose milestone kinds differ.
func DiffMilestones(want, got Milestones) []string {
	var diffs []string
	for id := range want {
		if !maps.Equal(want[id], got[id]) {
			diffs = append(diffs, fmt.Sprintf("order %s: want %v, got %v", id, keys(want[id]), keys(got[id])))
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			diffs = append(diffs, fmt.Sprintf("order %s: unexpected milestones %v", id, keys(got[id])))
		}
	}
	sort.Strings(diffs)
	return diffs
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Report is what `orderflow verify` found.
type Report struct {
	Orders      int          `json:"orders"`
	Differences []Difference `json:"differences"`
}

// Check compares KV with want, every order recomputed from the WAL (FoldWAL). A
// terminal order without a snapshot is not a difference: terminal snapshots expire
// by design and reads fold the WAL instead. want is left as it was.
func Check(ctx context.Context, js jetstream.JetStream, want map[string]*resolver.State) (Report, error) {
	got, err := Snapshots(ctx, js)
	if err != nil {
		return Report{}, err
	}
	held := make(map[string]*resolver.State, len(want))
	for id, st := range want {
		if _, ok := got[id]; ok || !st.Terminal() {
			held[id] = st
		}
	}
	return Report{Orders: len(Views(held)), Differences: Diff(held, got)}, nil
}
