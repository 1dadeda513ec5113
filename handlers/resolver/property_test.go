package resolver

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/orderflow/orderflow/schemas"
)

// Each test is named after the DESIGN §3 invariant it checks.

// TestPropertyConvergence: §3.1. Any permutation of a set of events, with any
// duplicates, resolves to the same status, status_source, predicted, eta, version,
// entity ids and milestones.
func TestPropertyConvergence(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		set := genEvents(t, genOptions{agents: true, estimator: true})
		want := answerOf(first(fold(set)))
		for _, label := range []string{"a", "b"} {
			got := answerOf(first(fold(genArrival(t, set, label))))
			if !sameAnswer(got, want) {
				t.Fatalf("arrival %s resolves differently:\n got  %+v\n want %+v", label, got, want)
			}
		}
		// version is the highest source_seq among events that were not rejected.
		wantVersion := map[schemas.Source]uint64{}
		for _, e := range set {
			if e.Status == "" || allowedByDesign(e.Source, e.Status) {
				wantVersion[e.Source] = max(wantVersion[e.Source], e.SourceSeq)
			}
		}
		if !maps.Equal(want.View.Version, wantVersion) {
			t.Fatalf("version %v, want %v", want.View.Version, wantVersion)
		}
	})
}

// TestPropertyNoRegressionWithoutOverride: §3.2. Without agent events, in any arrival
// order, the status never moves back in the lifecycle; the only move out of a
// terminal status is cancelled -> delivered (delivered wins).
func TestPropertyNoRegressionWithoutOverride(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		arrival := genArrival(t, genEvents(t, genOptions{estimator: true}), "arrival")
		s := New(testOrder)
		prev := s.View().Status
		for k, e := range arrival {
			s.Apply(e, uint64(k+1))
			cur := s.View().Status
			if !forward(prev, cur) {
				t.Fatalf("event %d (%s %d %q) moved the status %q -> %q", k, e.Source, e.SourceSeq, e.Status, prev, cur)
			}
			prev = cur
		}
	})
}

// forward reports whether prev -> cur is allowed without an override.
func forward(prev, cur schemas.Status) bool {
	switch {
	case prev == cur || prev == "":
		return true
	case prev == schemas.StatusDelivered:
		return false
	case prev == schemas.StatusCancelled:
		return cur == schemas.StatusDelivered
	case cur == schemas.StatusCancelled:
		return true
	}
	return lifecycleStage(cur) > lifecycleStage(prev)
}

// TestPropertyTerminal: §3.3. Once delivered or cancelled, only an agent event moves
// the order to another status (or cancelled -> delivered, the fixed rule). Without
// agents the end state is decided by the set: delivered if any driver said it,
// else cancelled if anyone did.
func TestPropertyTerminal(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		agents := rapid.Bool().Draw(t, "agents")
		set := genEvents(t, genOptions{agents: agents, estimator: true})
		arrival := genArrival(t, set, "arrival")
		s := New(testOrder)
		prev := s.View().Status
		for k, e := range arrival {
			s.Apply(e, uint64(k+1))
			cur := s.View().Status
			if isTerminal(prev) && cur != prev && e.Source != schemas.SourceAgent &&
				(prev != schemas.StatusCancelled || cur != schemas.StatusDelivered) {
				t.Fatalf("%s event %d (seq %d %q) moved terminal %q -> %q", e.Source, k, e.SourceSeq, e.Status, prev, cur)
			}
			prev = cur
		}
		if agents {
			return
		}
		claimed := func(st schemas.Status) bool {
			return slices.ContainsFunc(set, func(e *schemas.Event) bool { return e.Status == st && allowedByDesign(e.Source, st) })
		}
		switch end := s.View().Status; {
		case claimed(schemas.StatusDelivered) && end != schemas.StatusDelivered:
			t.Fatalf("delivered was claimed, the order ended %q", end)
		case !claimed(schemas.StatusDelivered) && claimed(schemas.StatusCancelled) && end != schemas.StatusCancelled:
			t.Fatalf("cancelled was claimed, the order ended %q", end)
		case isTerminal(end) && !claimed(end):
			t.Fatalf("the order ended %q, which nobody claimed", end)
		}
	})
}

// TestPropertyIdempotence: §3.4. Applying again any event already folded in (a retry,
// a redelivery, a replay) changes nothing but wal_seq and is duplicate or stale; so is
// replaying the whole history.
func TestPropertyIdempotence(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		arrival := genArrival(t, genEvents(t, genOptions{agents: true, estimator: true}), "arrival")
		s := New(testOrder)
		wal := uint64(0)
		for k, e := range arrival {
			wal++
			s.Apply(e, wal)
			if !rapid.Bool().Draw(t, "retry") {
				continue
			}
			again := arrival[rapid.IntRange(0, k).Draw(t, "which")]
			before := *s
			wal++
			d := s.Apply(again, wal)
			if d.Changed || !(d.Outcome == Duplicate || d.Outcome == Rejected ||
				d.Outcome == Stale && d.Reason == ReasonOlderSourceSeq) {
				t.Fatalf("re-applying %s %d %q: %+v", again.Source, again.SourceSeq, again.Status, d)
			}
			if s.src != before.src || s.override != before.override || s.res != before.res || s.updatedAt != before.updatedAt {
				t.Fatalf("re-applying %s %d %q changed the state", again.Source, again.SourceSeq, again.Status)
			}
		}
		once := answerOf(s)
		for _, e := range arrival {
			wal++
			s.Apply(e, wal)
		}
		if twice := answerOf(s); !sameAnswer(once, twice) {
			t.Fatalf("replaying the history changed the answer:\n once  %+v\n twice %+v", once, twice)
		}
	})
}

// TestPropertyEstimatorPrecedence: §3.5. A prediction shows only while it is strictly
// later than a non-terminal authoritative status, and is then marked predicted. The
// estimator never changes the authoritative outcome: dropping all its events leaves
// the authoritative status and milestones as they were.
func TestPropertyEstimatorPrecedence(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		set := genEvents(t, genOptions{agents: rapid.Bool().Draw(t, "agents"), estimator: true})
		arrival := genArrival(t, set, "arrival")
		s := New(testOrder)
		for k, e := range arrival {
			s.Apply(e, uint64(k+1))
			v := s.View()
			auth := s.res.auth.status()
			if v.Predicted != (v.StatusSource == schemas.SourceEstimator) {
				t.Fatalf("predicted=%v with status_source %q", v.Predicted, v.StatusSource)
			}
			if v.Predicted && (isTerminal(auth) || auth != "" && lifecycleStage(v.Status) <= lifecycleStage(auth)) {
				t.Fatalf("prediction %q leads authoritative %q", v.Status, auth)
			}
			if !v.Predicted && v.Status != auth {
				t.Fatalf("status %q is neither predicted nor the authoritative %q", v.Status, auth)
			}
		}
		without := slices.DeleteFunc(slices.Clone(arrival), func(e *schemas.Event) bool {
			return e.Source == schemas.SourceEstimator
		})
		r, _ := fold(without)
		if r.res.auth != s.res.auth || r.res.authSrc != s.res.authSrc || !slices.Equal(r.Milestones(), s.Milestones()) {
			t.Fatalf("the estimator changed the authoritative outcome: %q/%d without, %q/%d with",
				r.res.auth.status(), r.res.authSrc, s.res.auth.status(), s.res.authSrc)
		}
		if v := s.View(); !v.Predicted && v.Status != r.View().Status {
			t.Fatalf("unpredicted status %q differs from %q without the estimator", v.Status, r.View().Status)
		}
	})
}

// TestPropertyEveryEventGetsADecision: §3.6. Every event gets one documented outcome
// with a reason documented for it; rejection follows DESIGN §2 exactly; events that
// cannot have had an effect do not claim one.
func TestPropertyEveryEventGetsADecision(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		arrival := genArrival(t, genEvents(t, genOptions{agents: true, estimator: true}), "arrival")
		_, ds := fold(arrival)
		for k, d := range ds {
			e := arrival[k]
			if !slices.Contains(reasonsFor[d.Outcome], d.Reason) {
				t.Fatalf("event %d (%s %d %q): undocumented decision %+v", k, e.Source, e.SourceSeq, e.Status, d)
			}
			invalid := e.Status != "" && !allowedByDesign(e.Source, e.Status)
			if invalid != (d.Outcome == Rejected) {
				t.Fatalf("event %d (%s %d %q): %+v, rejection expected: %v", k, e.Source, e.SourceSeq, e.Status, d, invalid)
			}
			if d.Changed && (d.Outcome == Duplicate || d.Outcome == Rejected || d.Reason == ReasonOlderSourceSeq) {
				t.Fatalf("event %d (%s %d %q): %+v claims a change", k, e.Source, e.SourceSeq, e.Status, d)
			}
			if e.Status == "" && d.Outcome != Stale && d.Outcome != Duplicate && d.Reason != ReasonFieldsOnly {
				t.Fatalf("event %d (%s %d) without status: %+v", k, e.Source, e.SourceSeq, d)
			}
		}
	})
}

// TestPropertySnapshotRoundTrip: §4. Writing the snapshot mid-stream, reading it back
// and folding on gives the same decisions, answer and snapshot bytes as folding
// without the round trip; the snapshot shows the HTTP answer at its top level.
func TestPropertySnapshotRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		arrival := genArrival(t, genEvents(t, genOptions{agents: true, estimator: true}), "arrival")
		cut := rapid.IntRange(0, len(arrival)).Draw(t, "cut")
		direct, ds := fold(arrival)
		prefix, _ := fold(arrival[:cut])
		b := mustMarshal(t, prefix)
		resumed, err := UnmarshalSnapshot(b)
		if err != nil {
			t.Fatalf("unmarshal %s: %v", b, err)
		}
		if again := mustMarshal(t, resumed); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n %s\n %s", b, again)
		}
		checkTopLevelIsView(t, prefix, b)
		for k := cut; k < len(arrival); k++ {
			if d := resumed.Apply(arrival[k], uint64(k+1)); d != ds[k] {
				t.Fatalf("event %d after the round trip: %+v, without: %+v", k, d, ds[k])
			}
		}
		if a, b := mustMarshal(t, resumed), mustMarshal(t, direct); !bytes.Equal(a, b) {
			t.Fatalf("end states differ:\n resumed %s\n direct  %s", a, b)
		}
	})
}

func checkTopLevelIsView(t *rapid.T, s *State, snap []byte) {
	var top, view map[string]json.RawMessage
	if err := json.Unmarshal(snap, &top); err != nil {
		t.Fatal(err)
	}
	vb, _ := json.Marshal(s.View())
	if err := json.Unmarshal(vb, &view); err != nil {
		t.Fatal(err)
	}
	for k, v := range view {
		if !bytes.Equal(top[k], v) {
			t.Fatalf("snapshot %q = %s, the HTTP answer says %s", k, top[k], v)
		}
	}
	if string(top["v"]) != "1" {
		t.Fatalf("snapshot v = %s", top["v"])
	}
}

func mustMarshal(t *rapid.T, s *State) []byte {
	b, err := s.MarshalSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func first[A, B any](a A, _ B) A { return a }

func TestSnapshotRejectsUnknownVersion(t *testing.T) {
	for _, b := range []string{`{"v":2,"order_id":"o-1"}`, `{"order_id":"o-1"}`} {
		if _, err := UnmarshalSnapshot([]byte(b)); err == nil || !errors.Is(err, ErrSnapshotVersion) {
			t.Errorf("%s: err %v, want ErrSnapshotVersion", b, err)
		}
	}
	for _, b := range []string{`{"v":1}`, `{"v":1,"order_id":"o-1","version":{"courier":1}}`,
		`{"v":1,"order_id":"o-1","version":{"driver":1},"r":{"src":{"driver":{"claims":[{"seq":1,"status":"created"}]}}}}`,
		`{"v":1,"order_id":"o-1","r":{"src":{"driver":{"claims":[{"seq":1,"status":"arrived"}]}}}}`} {
		if _, err := UnmarshalSnapshot([]byte(b)); err == nil {
			t.Errorf("%s decoded", b)
		}
	}
}

// TestGeneratorCoversEveryReason guards the property tests themselves: the generated
// contention must reach every decision a valid event can get, or a property could
// pass by never meeting the case it is about.
func TestGeneratorCoversEveryReason(t *testing.T) {
	seen := map[Reason]int{}
	sizes := 0
	rapid.Check(t, func(t *rapid.T) {
		for range 30 { // more draws than the default 100 checks: some reasons are rare
			arrival := genArrival(t, genEvents(t, genOptions{agents: true, estimator: true}), "arrival")
			_, ds := fold(arrival)
			for _, d := range ds {
				seen[d.Reason]++
			}
			sizes += len(arrival)
		}
	})
	for _, rs := range reasonsFor {
		for _, r := range rs {
			switch r {
			case ReasonUnknownSource, ReasonUnknownStatus, ReasonInvalidSourceSeq, ReasonOrderMismatch, ReasonMissingReason:
				continue // schema validation's job; the scenarios cover them
			}
			if seen[r] == 0 {
				t.Errorf("no generated event was decided %q", r)
			}
		}
	}
	t.Logf("%d events, reasons %v", sizes, seen)
}

// TestPropertyFastEncodingMatchesJSON: the hand-written snapshot encoder gives the
// bytes json.Marshal gives for the snapshot struct, at every step of random folds.
func TestPropertyFastEncodingMatchesJSON(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		arrival := genArrival(t, genEvents(t, genOptions{agents: true, estimator: true}), "arrival")
		s := New(testOrder)
		for k, e := range arrival {
			s.Apply(e, uint64(k+1))
			checkFastEncoding(t, s)
		}
	})
}

// TestFastEncodingEscapesLikeJSON feeds the encoder strings that need escaping.
func TestFastEncodingEscapesLikeJSON(t *testing.T) {
	for _, v := range []string{`q"uote`, `back\slash`, "<b>&amp;", "tab\there", "é ü", "\u2028", "bad\xffutf8", "nl\n", "\x7f"} {
		s := New("o-" + v)
		e := &schemas.Event{EventID: "e-" + v, OrderID: "o-" + v, Source: schemas.SourcePlatform, SourceSeq: 1,
			Status: schemas.StatusCreated, OccurredAt: time.Date(2026, 1, 5, 18, 0, 0, 123, time.UTC), CustomerID: v}
		s.Apply(e, 1)
		checkFastEncoding(t, s)
	}
}

func checkFastEncoding(t interface {
	Helper()
	Fatal(...any)
	Fatalf(string, ...any)
}, s *State) {
	t.Helper()
	want, err := json.Marshal(s.snapshotValue())
	if err != nil {
		t.Fatal(err)
	}
	if got := s.appendSnapshot(nil); !bytes.Equal(got, want) {
		t.Fatalf("fast encoding differs:\n got  %s\n want %s", got, want)
	}
}
