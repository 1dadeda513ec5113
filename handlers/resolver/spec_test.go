package resolver

import (
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/orderflow/orderflow/schemas"
)

// specPrecedence restates rule 2 of doc.go: the lifecycle with cancelled after arrived.
var specPrecedence = []schemas.Status{
	schemas.StatusCreated, schemas.StatusConfirmed, schemas.StatusPreparing, schemas.StatusReadyForPickup,
	schemas.StatusPickedUp, schemas.StatusEnRoute, schemas.StatusArrived, schemas.StatusCancelled, schemas.StatusDelivered,
}

func specRank(st schemas.Status) int { return slices.Index(specPrecedence, st) } // -1 for ""

// specResolve computes the answer straight from the rules table of doc.go, by brute
// force over the set of events, without the incremental summaries: an independent
// restatement that the resolver, fed the set in any order, must agree with.
func specResolve(set []*schemas.Event) answer {
	var valid []*schemas.Event
	for _, e := range set {
		if e.Status == "" || allowedByDesign(e.Source, e.Status) { // rule 3
			valid = append(valid, e)
		}
	}
	v := View{OrderID: testOrder, Version: map[schemas.Source]uint64{}}
	for _, e := range valid { // rule 4
		v.Version[e.Source] = max(v.Version[e.Source], e.SourceSeq)
	}
	// Rule 8: the governing override.
	var gov *schemas.Event
	for _, e := range valid {
		if e.Source == schemas.SourceAgent && e.Status != "" && (gov == nil || specBeats(e, gov)) {
			gov = e
		}
	}
	observed := func(src schemas.Source) uint64 {
		if gov == nil {
			return 0
		}
		return gov.Observed[src]
	}
	// Rule 9: the authoritative status.
	auth, authSrc := "", schemas.Source("")
	if gov != nil {
		auth, authSrc = string(gov.Status), schemas.SourceAgent
	}
	highest := func(src schemas.Source) schemas.Status {
		best := schemas.Status("")
		for _, e := range valid {
			if e.Source == src && e.Status != "" && e.SourceSeq > observed(src) && specRank(e.Status) > specRank(best) {
				best = e.Status
			}
		}
		return best
	}
	for _, src := range []schemas.Source{schemas.SourcePlatform, schemas.SourceMerchant, schemas.SourceDriver} {
		if h := highest(src); specRank(h) > specRank(schemas.Status(auth)) {
			auth, authSrc = string(h), src
		}
	}
	v.Status, v.StatusSource = schemas.Status(auth), authSrc
	// Rule 10: the prediction.
	if p := highest(schemas.SourceEstimator); !isTerminal(v.Status) && p != "" &&
		(v.Status == "" || lifecycleStage(p) > lifecycleStage(v.Status)) {
		v.Status, v.StatusSource, v.Predicted = p, schemas.SourceEstimator, true
	}
	// Rule 11: eta.
	if !isTerminal(v.Status) {
		for _, src := range []schemas.Source{schemas.SourceAgent, schemas.SourceEstimator, schemas.SourceDriver, schemas.SourceMerchant, schemas.SourcePlatform} {
			var best *schemas.Event
			for _, e := range valid {
				if e.Source == src && e.ETA != nil && (best == nil || e.SourceSeq > best.SourceSeq ||
					e.SourceSeq == best.SourceSeq && e.ETA.After(*best.ETA)) {
					best = e
				}
			}
			if best != nil {
				eta := best.ETA.UTC()
				v.ETA = &eta
				break
			}
		}
	}
	// Rule 12: entity ids.
	pick := func(get func(*schemas.Event) string) string {
		for _, src := range []schemas.Source{schemas.SourceAgent, schemas.SourcePlatform, schemas.SourceMerchant, schemas.SourceDriver, schemas.SourceEstimator} {
			var best *schemas.Event
			for _, e := range valid {
				if e.Source == src && get(e) != "" && (best == nil || e.SourceSeq > best.SourceSeq ||
					e.SourceSeq == best.SourceSeq && get(e) > get(best)) {
					best = e
				}
			}
			if best != nil {
				return get(best)
			}
		}
		return ""
	}
	v.CustomerID = pick(func(e *schemas.Event) string { return e.CustomerID })
	v.RestaurantID = pick(func(e *schemas.Event) string { return e.RestaurantID })
	v.DasherID = pick(func(e *schemas.Event) string { return e.DasherID })
	// Rule 13: milestones.
	var ms []schemas.Status
	switch a := schemas.Status(auth); {
	case a == schemas.StatusDelivered:
		ms = []schemas.Status{schemas.StatusPickedUp, schemas.StatusDelivered}
	case a == schemas.StatusCancelled:
		ms = []schemas.Status{schemas.StatusCancelled}
	case a != "" && lifecycleStage(a) >= lifecycleStage(schemas.StatusPickedUp):
		ms = []schemas.Status{schemas.StatusPickedUp}
	}
	return answer{v, ms}
}

// specBeats orders agent overrides (rule 8): higher source_seq, then for a reused
// source_seq the higher rank, then the greater observed vector in source order.
func specBeats(a, b *schemas.Event) bool {
	if a.SourceSeq != b.SourceSeq {
		return a.SourceSeq > b.SourceSeq
	}
	if specRank(a.Status) != specRank(b.Status) {
		return specRank(a.Status) > specRank(b.Status)
	}
	for _, src := range schemas.Sources {
		if a.Observed[src] != b.Observed[src] {
			return a.Observed[src] > b.Observed[src]
		}
	}
	return false
}

// TestPropertyMatchesRulesTable: the resolver, fed a set in any arrival order with
// duplicates, answers what the rules table of doc.go says about that set.
func TestPropertyMatchesRulesTable(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		set := genEvents(t, genOptions{agents: true, estimator: true})
		got := answerOf(first(fold(genArrival(t, set, "arrival"))))
		want := specResolve(set)
		if !sameAnswer(got, want) {
			t.Fatalf("resolver and rules table disagree:\n resolver %+v\n table    %+v", got, want)
		}
	})
}
