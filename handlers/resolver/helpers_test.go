package resolver

import (
	"fmt"
	"reflect"
	"slices"
	"time"

	"pgregory.net/rapid"

	"github.com/orderflow/orderflow/schemas"
)

const testOrder = "o-1"

// t0 is an arbitrary fixed instant: tests never read the clock either.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// ev builds a valid event; event_id defaults to "<source>-<seq>".
func ev(src schemas.Source, seq uint64, st schemas.Status, opts ...func(*schemas.Event)) *schemas.Event {
	e := &schemas.Event{
		SchemaVersion: schemas.SchemaVersion,
		EventID:       fmt.Sprintf("%s-%d", src, seq),
		OrderID:       testOrder,
		Source:        src,
		SourceSeq:     seq,
		OccurredAt:    t0.Add(time.Duration(seq) * time.Minute),
		Status:        st,
	}
	if src == schemas.SourceAgent {
		e.Reason = "support ticket"
	}
	for _, o := range opts {
		o(e)
	}
	return e
}

func withETA(min int) func(*schemas.Event) {
	return func(e *schemas.Event) { t := t0.Add(time.Duration(min) * time.Minute); e.ETA = &t }
}

func withID(id string) func(*schemas.Event) { return func(e *schemas.Event) { e.EventID = id } }

func withObserved(obs map[schemas.Source]uint64) func(*schemas.Event) {
	return func(e *schemas.Event) { e.Observed = obs }
}

func withEntities(customer, restaurant, dasher string) func(*schemas.Event) {
	return func(e *schemas.Event) { e.CustomerID, e.RestaurantID, e.DasherID = customer, restaurant, dasher }
}

// fold applies events in the given (arrival) order, WAL sequences 1, 2, ...
func fold(events []*schemas.Event) (*State, []Decision) {
	s := New(testOrder)
	ds := make([]Decision, len(events))
	for k, e := range events {
		ds[k] = s.Apply(e, uint64(k+1))
	}
	return s, ds
}

// answer is the part of the state that must be a function of the set of events:
// the view without wal_seq and updated_at (arrival bookkeeping), and the milestones.
type answer struct {
	View       View
	Milestones []schemas.Status
}

func answerOf(s *State) answer {
	v := s.View()
	v.WalSeq, v.UpdatedAt = 0, time.Time{}
	return answer{v, s.Milestones()}
}

func sameAnswer(a, b answer) bool { return reflect.DeepEqual(a, b) }

// allowedByDesign restates DESIGN §2 "who may say what" independently of rules.go,
// so a wrong rights table cannot agree with itself.
func allowedByDesign(src schemas.Source, st schemas.Status) bool {
	switch src {
	case schemas.SourcePlatform:
		return st == schemas.StatusCreated || st == schemas.StatusCancelled
	case schemas.SourceMerchant:
		return slices.Contains([]schemas.Status{schemas.StatusConfirmed, schemas.StatusPreparing,
			schemas.StatusReadyForPickup, schemas.StatusCancelled}, st)
	case schemas.SourceDriver:
		return slices.Contains([]schemas.Status{schemas.StatusPickedUp, schemas.StatusEnRoute,
			schemas.StatusArrived, schemas.StatusDelivered}, st)
	case schemas.SourceEstimator:
		return slices.Contains([]schemas.Status{schemas.StatusPreparing, schemas.StatusReadyForPickup,
			schemas.StatusPickedUp, schemas.StatusEnRoute, schemas.StatusArrived}, st)
	case schemas.SourceAgent:
		return st.Valid()
	}
	return false
}

// lifecycleStage is the DESIGN §2 lifecycle position; cancelled has none (-1).
func lifecycleStage(st schemas.Status) int {
	if st == schemas.StatusCancelled {
		return -1
	}
	return slices.Index(schemas.Statuses, st)
}

func isTerminal(st schemas.Status) bool {
	return st == schemas.StatusDelivered || st == schemas.StatusCancelled
}

// reasonsFor lists, per outcome, the reasons doc.go documents for it.
var reasonsFor = map[Outcome][]Reason{
	Applied:   {ReasonAdvanced, ReasonConfirmed, ReasonPredicted, ReasonOverride, ReasonFieldsOnly},
	Duplicate: {ReasonSameEventID},
	Stale:     {ReasonOlderSourceSeq, ReasonOlderSourceSeqMerged},
	Ignored: {ReasonRegression, ReasonTerminal, ReasonSupersededByOverride, ReasonEstimatorBehindAuthoritative,
		ReasonPredictionBehindEarlier, ReasonOverrideOutranked},
	Rejected: {ReasonNotAllowedForSource, ReasonUnknownSource, ReasonUnknownStatus, ReasonInvalidSourceSeq,
		ReasonOrderMismatch, ReasonMissingReason},
}

// genOptions shapes a generated event set.
type genOptions struct {
	agents    bool // include agent overrides
	estimator bool // include estimator events
}

// genEvents draws the set of events one order receives: every source with its own
// increasing source_seq (with gaps, and occasionally a reused one), allowed and
// disallowed statuses, eta-only events, entity ids, agent overrides with or without
// observed vectors that may run ahead of what has arrived, and reused event ids.
func genEvents(t *rapid.T, o genOptions) []*schemas.Event {
	sources := []schemas.Source{schemas.SourcePlatform, schemas.SourceMerchant, schemas.SourceDriver}
	if o.estimator {
		sources = append(sources, schemas.SourceEstimator)
	}
	if o.agents {
		sources = append(sources, schemas.SourceAgent)
	}
	var events []*schemas.Event
	for _, src := range sources {
		n := rapid.IntRange(0, 6).Draw(t, string(src)+"_n")
		seq := uint64(0)
		from := len(events)
		for range n {
			seq += rapid.SampledFrom([]uint64{1, 1, 1, 2, 0}).Draw(t, "seq_step")
			seq = max(seq, 1)
			events = append(events, genEvent(t, src, seq))
		}
		// Most producers move forward: their statuses rise with their source_seq.
		// The others walk back, skip around or repeat themselves.
		if src != schemas.SourceAgent && rapid.IntRange(0, 2).Draw(t, string(src)+"_erratic") != 0 {
			own := events[from:]
			var sts []schemas.Status
			for _, e := range own {
				if e.Status != "" {
					sts = append(sts, e.Status)
				}
			}
			slices.SortFunc(sts, func(a, b schemas.Status) int { return int(rankOf(a)) - int(rankOf(b)) })
			for _, e := range own {
				if e.Status != "" {
					e.Status, sts = sts[0], sts[1:]
				}
			}
		}
	}
	// A producer bug: an event id reused for a different event.
	if len(events) > 1 && rapid.IntRange(0, 9).Draw(t, "reuse_id") == 0 {
		a := rapid.IntRange(0, len(events)-1).Draw(t, "reuse_from")
		b := rapid.IntRange(0, len(events)-1).Draw(t, "reuse_to")
		events[b].EventID = events[a].EventID
	}
	return events
}

func genEvent(t *rapid.T, src schemas.Source, seq uint64) *schemas.Event {
	e := ev(src, seq, "")
	switch rapid.IntRange(0, 9).Draw(t, "status_kind") {
	case 0: // eta / ids only
	case 1: // anything, often not allowed for the source
		e.Status = rapid.SampledFrom(schemas.Statuses).Draw(t, "any_status")
	default:
		var allowed []schemas.Status
		for _, st := range schemas.Statuses {
			if allowedByDesign(src, st) {
				allowed = append(allowed, st)
			}
		}
		e.Status = rapid.SampledFrom(allowed).Draw(t, "status")
	}
	if e.Status == "" || rapid.IntRange(0, 2).Draw(t, "has_eta") == 0 {
		min := rapid.IntRange(10, 14).Draw(t, "eta")
		withETA(min)(e)
	}
	if rapid.IntRange(0, 3).Draw(t, "has_ids") == 0 {
		pick := func(label string) string {
			return rapid.SampledFrom([]string{"", "a", "b"}).Draw(t, label)
		}
		withEntities(pick("customer"), pick("restaurant"), pick("dasher"))(e)
	}
	if src == schemas.SourceAgent && rapid.Bool().Draw(t, "has_observed") {
		obs := map[schemas.Source]uint64{}
		for _, s := range schemas.Sources {
			if rapid.Bool().Draw(t, "observes") {
				obs[s] = rapid.Uint64Range(0, 7).Draw(t, "observed")
			}
		}
		e.Observed = obs
	}
	return e
}

// genArrival draws one arrival order of the set: a permutation, with some events
// delivered again (retries, redeliveries, replays) at random places.
func genArrival(t *rapid.T, events []*schemas.Event, label string) []*schemas.Event {
	out := slices.Clone(rapid.Permutation(events).Draw(t, label))
	if len(events) == 0 {
		return out
	}
	dups := rapid.IntRange(0, 4).Draw(t, label+"_dups")
	for range dups {
		e := rapid.SampledFrom(events).Draw(t, label+"_dup")
		at := rapid.IntRange(0, len(out)).Draw(t, label+"_at")
		out = slices.Insert(out, at, e)
	}
	return out
}
