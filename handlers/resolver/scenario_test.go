package resolver

import (
	"maps"
	"slices"
	"testing"

	"github.com/orderflow/orderflow/schemas"
)

const (
	platform  = schemas.SourcePlatform
	merchant  = schemas.SourceMerchant
	driver    = schemas.SourceDriver
	estimator = schemas.SourceEstimator
	agent     = schemas.SourceAgent

	created    = schemas.StatusCreated
	confirmed  = schemas.StatusConfirmed
	preparing  = schemas.StatusPreparing
	ready      = schemas.StatusReadyForPickup
	pickedUp   = schemas.StatusPickedUp
	enRoute    = schemas.StatusEnRoute
	arrived    = schemas.StatusArrived
	delivered  = schemas.StatusDelivered
	cancelled  = schemas.StatusCancelled
	noStatus   = schemas.Status("")
	noSource   = schemas.Source("")
	notChanged = false
	changed    = true
)

// step is one arrival and what must follow from it.
type step struct {
	e        *schemas.Event
	outcome  Outcome
	reason   Reason
	changed  bool
	status   schemas.Status // the view's status after the step
	source   schemas.Source // the view's status_source after the step
	predicts bool           // the view's predicted after the step
}

// applied etc. build steps; the view columns say what the reader sees afterwards.
func want(e *schemas.Event, o Outcome, r Reason, ch bool, st schemas.Status, src schemas.Source) step {
	return step{e: e, outcome: o, reason: r, changed: ch, status: st, source: src}
}

func predicted(s step) step { s.predicts = true; return s }

func TestScenarios(t *testing.T) {
	tests := []struct {
		name       string
		steps      []step
		milestones []schemas.Status
	}{
		{
			name: "happy path",
			steps: []step{
				want(ev(platform, 1, created, withEntities("c1", "r1", "")), Applied, ReasonAdvanced, changed, created, platform),
				want(ev(merchant, 1, confirmed), Applied, ReasonAdvanced, changed, confirmed, merchant),
				want(ev(merchant, 2, preparing), Applied, ReasonAdvanced, changed, preparing, merchant),
				want(ev(merchant, 3, ready), Applied, ReasonAdvanced, changed, ready, merchant),
				want(ev(driver, 1, pickedUp, withEntities("", "", "d1")), Applied, ReasonAdvanced, changed, pickedUp, driver),
				want(ev(driver, 2, enRoute), Applied, ReasonAdvanced, changed, enRoute, driver),
				want(ev(driver, 3, arrived), Applied, ReasonAdvanced, changed, arrived, driver),
				want(ev(driver, 4, delivered), Applied, ReasonAdvanced, changed, delivered, driver),
			},
			milestones: []schemas.Status{pickedUp, delivered},
		},
		{
			name: "merchant forgets ready_for_pickup before the driver's picked_up",
			steps: []step{
				want(ev(platform, 1, created), Applied, ReasonAdvanced, changed, created, platform),
				want(ev(merchant, 1, confirmed), Applied, ReasonAdvanced, changed, confirmed, merchant),
				want(ev(merchant, 2, preparing), Applied, ReasonAdvanced, changed, preparing, merchant),
				want(ev(driver, 1, pickedUp), Applied, ReasonAdvanced, changed, pickedUp, driver),
				// The tablet remembers later: it is history now, not a step back.
				want(ev(merchant, 3, ready), Ignored, ReasonRegression, notChanged, pickedUp, driver),
			},
			milestones: []schemas.Status{pickedUp},
		},
		{
			name: "estimator predicts ahead of the driver",
			steps: []step{
				want(ev(platform, 1, created), Applied, ReasonAdvanced, changed, created, platform),
				want(ev(merchant, 1, ready), Applied, ReasonAdvanced, changed, ready, merchant),
				predicted(want(ev(estimator, 1, enRoute, withETA(30)), Applied, ReasonPredicted, changed, enRoute, estimator)),
				// The authoritative status moves under the prediction; readers see no change.
				predicted(want(ev(driver, 1, pickedUp), Applied, ReasonAdvanced, notChanged, enRoute, estimator)),
				// The driver catches up: same stage, so the fact replaces the prediction.
				want(ev(driver, 2, enRoute), Applied, ReasonAdvanced, changed, enRoute, driver),
				want(ev(estimator, 2, enRoute, withETA(25)), Ignored, ReasonEstimatorBehindAuthoritative, changed, enRoute, driver), // eta still merged
				predicted(want(ev(estimator, 3, arrived), Applied, ReasonPredicted, changed, arrived, estimator)),
				predicted(want(ev(estimator, 4, enRoute), Ignored, ReasonEstimatorBehindAuthoritative, notChanged, arrived, estimator)),
				predicted(want(ev(estimator, 5, noStatus, withETA(20)), Applied, ReasonFieldsOnly, changed, arrived, estimator)),
				want(ev(driver, 3, delivered), Applied, ReasonAdvanced, changed, delivered, driver),
				want(ev(estimator, 6, arrived), Ignored, ReasonTerminal, notChanged, delivered, driver),
				want(ev(estimator, 7, delivered), Rejected, ReasonNotAllowedForSource, notChanged, delivered, driver),
			},
			milestones: []schemas.Status{pickedUp, delivered},
		},
		{
			name: "duplicate retries",
			steps: []step{
				want(ev(platform, 1, created), Applied, ReasonAdvanced, changed, created, platform),
				want(ev(platform, 1, created), Duplicate, ReasonSameEventID, notChanged, created, platform),
				want(ev(driver, 1, pickedUp), Applied, ReasonAdvanced, changed, pickedUp, driver),
				want(ev(driver, 1, pickedUp), Duplicate, ReasonSameEventID, notChanged, pickedUp, driver),
				want(ev(platform, 1, created), Duplicate, ReasonSameEventID, notChanged, pickedUp, driver),
			},
			milestones: []schemas.Status{pickedUp},
		},
		{
			name: "a stale retry after a newer event",
			steps: []step{
				want(ev(driver, 1, pickedUp), Applied, ReasonAdvanced, changed, pickedUp, driver),
				want(ev(driver, 2, enRoute), Applied, ReasonAdvanced, changed, enRoute, driver),
				// The exact retry is recognised; the same seq under a new id is only stale.
				want(ev(driver, 1, pickedUp), Duplicate, ReasonSameEventID, notChanged, enRoute, driver),
				want(ev(driver, 1, pickedUp, withID("driver-1-retry")), Stale, ReasonOlderSourceSeq, notChanged, enRoute, driver),
				want(ev(driver, 2, arrived, withID("driver-2-bis")), Stale, ReasonOlderSourceSeqMerged, changed, arrived, driver),
			},
			milestones: []schemas.Status{pickedUp},
		},
		{
			name: "the estimator does not walk its prediction back",
			steps: []step{
				want(ev(merchant, 1, confirmed), Applied, ReasonAdvanced, changed, confirmed, merchant),
				predicted(want(ev(estimator, 1, enRoute), Applied, ReasonPredicted, changed, enRoute, estimator)),
				predicted(want(ev(estimator, 2, preparing), Ignored, ReasonPredictionBehindEarlier, notChanged, enRoute, estimator)),
				want(ev(merchant, 2, cancelled), Applied, ReasonAdvanced, changed, cancelled, merchant),
			},
			milestones: []schemas.Status{cancelled},
		},
		{
			name: "late eta fills what a newer event left out",
			steps: []step{
				predicted(want(ev(estimator, 2, preparing), Applied, ReasonPredicted, changed, preparing, estimator)),
				predicted(want(ev(estimator, 1, noStatus, withETA(40)), Stale, ReasonOlderSourceSeqMerged, changed, preparing, estimator)),
			},
		},
		{
			name: "cancel racing pickup, cancel first",
			steps: []step{
				want(ev(platform, 1, created), Applied, ReasonAdvanced, changed, created, platform),
				want(ev(merchant, 1, cancelled), Applied, ReasonAdvanced, changed, cancelled, merchant),
				want(ev(driver, 1, pickedUp), Ignored, ReasonTerminal, notChanged, cancelled, merchant),
			},
			milestones: []schemas.Status{cancelled},
		},
		{
			name: "cancel racing pickup, pickup first",
			steps: []step{
				want(ev(platform, 1, created), Applied, ReasonAdvanced, changed, created, platform),
				want(ev(driver, 1, pickedUp), Applied, ReasonAdvanced, changed, pickedUp, driver),
				want(ev(merchant, 1, cancelled), Applied, ReasonAdvanced, changed, cancelled, merchant),
				// Equal ranks: the fixed tie order (platform, merchant, driver) names the source.
				want(ev(platform, 2, cancelled), Applied, ReasonConfirmed, changed, cancelled, platform),
			},
			milestones: []schemas.Status{cancelled},
		},
		{
			name: "cancel racing delivery: delivered wins in both orders",
			steps: []step{
				want(ev(driver, 1, delivered), Applied, ReasonAdvanced, changed, delivered, driver),
				want(ev(platform, 1, cancelled), Ignored, ReasonTerminal, notChanged, delivered, driver),
			},
			milestones: []schemas.Status{pickedUp, delivered},
		},
		{
			name: "agent marks delivered when the driver app is offline",
			steps: []step{
				want(ev(platform, 1, created), Applied, ReasonAdvanced, changed, created, platform),
				want(ev(merchant, 1, ready), Applied, ReasonAdvanced, changed, ready, merchant),
				want(ev(driver, 1, pickedUp), Applied, ReasonAdvanced, changed, pickedUp, driver),
				want(ev(driver, 2, enRoute), Applied, ReasonAdvanced, changed, enRoute, driver),
				want(ev(agent, 1, delivered, withObserved(map[schemas.Source]uint64{platform: 1, merchant: 1, driver: 2})),
					Applied, ReasonOverride, changed, delivered, agent),
				// The app comes back and flushes its queue.
				want(ev(driver, 3, arrived), Ignored, ReasonTerminal, notChanged, delivered, agent),
				want(ev(driver, 4, delivered), Applied, ReasonConfirmed, notChanged, delivered, agent),
			},
			milestones: []schemas.Status{pickedUp, delivered},
		},
		{
			name: "agent reverts a mistaken delivered, a later driver delivered applies on top",
			steps: []step{
				want(ev(driver, 1, pickedUp), Applied, ReasonAdvanced, changed, pickedUp, driver),
				want(ev(driver, 2, delivered), Applied, ReasonAdvanced, changed, delivered, driver),
				want(ev(agent, 1, arrived, withObserved(map[schemas.Source]uint64{driver: 2})),
					Applied, ReasonOverride, changed, arrived, agent),
				want(ev(driver, 3, arrived), Applied, ReasonConfirmed, notChanged, arrived, agent),
				want(ev(driver, 4, delivered), Applied, ReasonAdvanced, changed, delivered, driver),
			},
			milestones: []schemas.Status{pickedUp, delivered},
		},
		{
			name: "the revert arrives before the delivered it observed",
			steps: []step{
				want(ev(agent, 1, arrived, withObserved(map[schemas.Source]uint64{driver: 2})),
					Applied, ReasonOverride, changed, arrived, agent),
				want(ev(driver, 1, pickedUp), Ignored, ReasonSupersededByOverride, notChanged, arrived, agent),
				want(ev(driver, 2, delivered), Ignored, ReasonSupersededByOverride, notChanged, arrived, agent),
				want(ev(driver, 3, enRoute), Ignored, ReasonRegression, notChanged, arrived, agent),
			},
			milestones: []schemas.Status{pickedUp},
		},
		{
			name: "a newer override replaces an older one",
			steps: []step{
				want(ev(driver, 2, delivered), Applied, ReasonAdvanced, changed, delivered, driver),
				want(ev(agent, 2, enRoute, withObserved(map[schemas.Source]uint64{driver: 2})),
					Applied, ReasonOverride, changed, enRoute, agent),
				// Older agent seq: stale, and its status no longer matters.
				want(ev(agent, 1, arrived, withObserved(map[schemas.Source]uint64{driver: 2})),
					Stale, ReasonOlderSourceSeq, notChanged, enRoute, agent),
			},
			milestones: []schemas.Status{pickedUp},
		},
		{
			name: "an override without observed can only move forward",
			steps: []step{
				want(ev(driver, 1, delivered), Applied, ReasonAdvanced, changed, delivered, driver),
				want(ev(agent, 1, arrived), Ignored, ReasonOverrideOutranked, notChanged, delivered, driver),
				want(ev(agent, 2, noStatus, withETA(5)), Applied, ReasonFieldsOnly, notChanged, delivered, driver), // eta hidden: terminal
			},
			milestones: []schemas.Status{pickedUp, delivered},
		},
		{
			name: "who may say what",
			steps: []step{
				want(ev(merchant, 1, delivered), Rejected, ReasonNotAllowedForSource, notChanged, noStatus, noSource),
				want(ev(platform, 1, pickedUp), Rejected, ReasonNotAllowedForSource, notChanged, noStatus, noSource),
				want(ev(driver, 1, cancelled), Rejected, ReasonNotAllowedForSource, notChanged, noStatus, noSource),
				want(ev(estimator, 1, confirmed), Rejected, ReasonNotAllowedForSource, notChanged, noStatus, noSource),
				want(ev(agent, 1, preparing, func(e *schemas.Event) { e.Reason = "" }), Rejected, ReasonMissingReason, notChanged, noStatus, noSource),
				want(ev("courier", 1, preparing), Rejected, ReasonUnknownSource, notChanged, noStatus, noSource),
				want(ev(merchant, 1, "baking"), Rejected, ReasonUnknownStatus, notChanged, noStatus, noSource),
				want(ev(merchant, 0, preparing), Rejected, ReasonInvalidSourceSeq, notChanged, noStatus, noSource),
				want(ev(merchant, 1, preparing, func(e *schemas.Event) { e.OrderID = "o-2" }), Rejected, ReasonOrderMismatch, notChanged, noStatus, noSource),
				// Rejected events did not advance the version: seq 1 is still new.
				want(ev(merchant, 1, preparing), Applied, ReasonAdvanced, changed, preparing, merchant),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(testOrder)
			var events []*schemas.Event
			for k, st := range tc.steps {
				d := s.Apply(st.e, uint64(k+1))
				v := s.View()
				if d.Outcome != st.outcome || d.Reason != st.reason || d.Changed != st.changed {
					t.Errorf("step %d (%s %d %q): decision %+v, want {%s %s %v}", k, st.e.Source, st.e.SourceSeq, st.e.Status,
						d, st.outcome, st.reason, st.changed)
				}
				if v.Status != st.status || v.StatusSource != st.source || v.Predicted != st.predicts {
					t.Errorf("step %d (%s %d %q): view %s/%s/predicted=%v, want %s/%s/predicted=%v", k, st.e.Source, st.e.SourceSeq,
						st.e.Status, v.Status, v.StatusSource, v.Predicted, st.status, st.source, st.predicts)
				}
				if v.WalSeq != uint64(k+1) {
					t.Errorf("step %d: wal_seq %d, want %d", k, v.WalSeq, k+1)
				}
				events = append(events, st.e)
			}
			if got := s.Milestones(); !slices.Equal(got, tc.milestones) {
				t.Errorf("milestones %v, want %v", got, tc.milestones)
			}
			// Whatever the table says step by step, the end state is the set's.
			slices.Reverse(events)
			r, _ := fold(events)
			if a, b := answerOf(s), answerOf(r); !sameAnswer(a, b) {
				t.Errorf("reversed arrival resolves differently:\n in order %+v\n reversed %+v", a, b)
			}
		})
	}
}

func TestViewFields(t *testing.T) {
	s, _ := fold([]*schemas.Event{
		ev(platform, 1, created, withEntities("c1", "r1", ""), withETA(45)),
		ev(driver, 3, pickedUp, withEntities("", "", "d7")),
		ev(estimator, 2, enRoute, withETA(30)),
		ev(agent, 1, noStatus, withEntities("", "", "d8")),
	})
	v := s.View()
	if v.OrderID != testOrder || v.Status != enRoute || v.StatusSource != estimator || !v.Predicted {
		t.Fatalf("view %+v", v)
	}
	if v.ETA == nil || !v.ETA.Equal(t0.Add(30*60e9)) {
		t.Errorf("eta %v: the estimator's eta beats the platform's", v.ETA)
	}
	if v.CustomerID != "c1" || v.RestaurantID != "r1" || v.DasherID != "d8" {
		t.Errorf("ids %q %q %q: the agent's dasher correction wins", v.CustomerID, v.RestaurantID, v.DasherID)
	}
	want := map[schemas.Source]uint64{platform: 1, driver: 3, estimator: 2, agent: 1}
	if !maps.Equal(v.Version, want) {
		t.Errorf("version %v, want %v", v.Version, want)
	}
	if v.WalSeq != 4 || !v.UpdatedAt.Equal(t0.Add(1*60e9)) {
		t.Errorf("wal_seq %d updated_at %v: the agent (seq 1) changed the dasher last", v.WalSeq, v.UpdatedAt)
	}
}
