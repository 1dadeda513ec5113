package resolver

import (
	"time"

	"github.com/orderflow/orderflow/schemas"
)

// State is the resolved state of one order: commutative per-source summaries of every
// event folded in (see doc.go), the answer resolved from them, and bookkeeping
// (wal_seq, updated_at, recent event ids). Its JSON form is the snapshot
// (MarshalSnapshot). The zero State is not usable: call New. A State belongs to the
// one lane that owns its order, so it is not safe for concurrent use.
type State struct {
	orderID  string
	src      [numSources]sourceState
	override override
	recent   recentEvents
	walSeq   uint64
	// updatedAt is the occurred_at of the event that last changed the answer.
	// Informative only: producers' clocks never order anything.
	updatedAt time.Time
	// res caches resolve(): it changes only when a summary does.
	res resolved
}

// sourceState summarises everything one source said. Each field is a join (max by
// some order), so merging events in any order, any number of times, gives the same
// summary: this is what makes the resolved state independent of arrival order.
type sourceState struct {
	version uint64 // highest source_seq seen: the source's logical clock
	claims  claims
	eta     stampedTime
	ids     [numIDs]stampedString
}

// override is the governing agent override: the status-carrying agent event with the
// highest agent source_seq, with the version vector it observed.
type override struct {
	seq      uint64 // 0: no override
	rank     rank
	observed [numSources]uint64
}

// beats orders overrides. Ties on seq only happen when an agent tool reuses a
// source_seq; the rest of the order keeps the choice independent of arrival order.
func (o *override) beats(p *override) bool {
	if o.seq != p.seq {
		return o.seq > p.seq
	}
	if o.rank != p.rank {
		return o.rank > p.rank
	}
	for i := range o.observed {
		if o.observed[i] != p.observed[i] {
			return o.observed[i] > p.observed[i]
		}
	}
	return false
}

// resolved is the answer computed from the summaries.
type resolved struct {
	// auth is the authoritative status (agent override plus platform, merchant,
	// driver), whatever the estimator predicts; milestones follow it.
	auth    rank
	authSrc int
	// status is what readers see: auth, or a prediction leading it.
	status    rank
	statusSrc int
	predicted bool
	hasETA    bool
	eta       time.Time
	ids       [numIDs]string
}

// sameAnswer compares the public answer, leaving out auth (it shows only through
// status and milestones).
func (r *resolved) sameAnswer(o *resolved) bool {
	return r.status == o.status && r.statusSrc == o.statusSrc && r.predicted == o.predicted &&
		r.hasETA == o.hasETA && r.eta.Equal(o.eta) && r.ids == o.ids
}

// New returns the state of an order no event has touched yet.
func New(orderID string) *State {
	s := &State{}
	s.reset(orderID)
	return s
}

func (s *State) reset(orderID string) {
	*s = State{orderID: orderID}
	s.res = s.resolve()
}

// OrderID is the order this state belongs to.
func (s *State) OrderID() string { return s.orderID }

// WalSeq is the last WAL sequence folded in; a reader resumes the WAL after it.
func (s *State) WalSeq() uint64 { return s.walSeq }

// Terminal reports that the order is delivered or cancelled (the snapshot store gives
// terminal snapshots a TTL).
func (s *State) Terminal() bool { return s.res.status.terminal() }

// Apply folds one event that the WAL stored at walSeq and returns the recorded
// decision. e has passed schema validation; Apply re-checks what it relies on, so it
// never panics and rejects rather than guesses. It does not allocate.
func (s *State) Apply(e *schemas.Event, walSeq uint64) Decision {
	// Every event advances wal_seq, whatever its decision: it has been folded in.
	s.walSeq = max(s.walSeq, walSeq)
	i := sourceIndex(e.Source)
	r := rankOf(e.Status)
	if reason := s.reject(e, i, r); reason != "" {
		return Decision{Outcome: Rejected, Reason: reason}
	}
	before := s.res
	version := s.src[i].version
	merged := s.merge(e, i, r)
	if merged {
		s.res = s.resolve()
	}
	d := s.decide(e, i, r, version, merged, &before)
	if d.Changed = !s.res.sameAnswer(&before); d.Changed {
		s.updatedAt = e.OccurredAt.UTC()
	}
	d.Persist = d.Changed || merged || s.src[i].version != version
	if d.Outcome != Duplicate {
		s.recent.add(i, e.SourceSeq, e.EventID)
	}
	return d
}

// reject returns why e cannot be folded in at all, or "".
func (s *State) reject(e *schemas.Event, i int, r rank) Reason {
	switch {
	case i == srcNone:
		return ReasonUnknownSource
	case e.OrderID != s.orderID:
		return ReasonOrderMismatch
	case e.SourceSeq == 0:
		return ReasonInvalidSourceSeq
	case e.Status != "" && r == rankNone:
		return ReasonUnknownStatus
	case i == srcAgent && e.Reason == "":
		return ReasonMissingReason
	case r != rankNone && !mayClaim[i].has(r):
		return ReasonNotAllowedForSource
	}
	return ""
}

// merge joins e into its source's summary (and the override) and reports whether any
// claim or field changed. Stale events are merged too: every merge is idempotent and
// a lower source_seq can only fill what newer events left out, so merging them is
// harmless, and skipping them would make the state depend on arrival order.
func (s *State) merge(e *schemas.Event, i int, r rank) bool {
	ss := &s.src[i]
	seq := e.SourceSeq
	ss.version = max(ss.version, seq)
	changed := false
	if r != rankNone {
		if i == srcAgent {
			o := override{seq: seq, rank: r}
			for src, v := range e.Observed {
				if j := sourceIndex(src); j != srcNone {
					o.observed[j] = v
				}
			}
			if o.beats(&s.override) {
				s.override = o
				changed = true
			}
		} else {
			changed = ss.claims.add(seq, r)
		}
	}
	if e.ETA != nil {
		changed = ss.eta.merge(seq, e.ETA.UTC()) || changed
	}
	changed = ss.ids[idCustomer].merge(seq, e.CustomerID) || changed
	changed = ss.ids[idRestaurant].merge(seq, e.RestaurantID) || changed
	changed = ss.ids[idDasher].merge(seq, e.DasherID) || changed
	return changed
}

// resolve computes the answer from the summaries alone, so it is a function of the set
// of events folded in. The rules table in doc.go is this function in prose.
func (s *State) resolve() resolved {
	res := resolved{authSrc: srcNone, statusSrc: srcNone}
	var observed [numSources]uint64 // no override: it observed nothing
	if s.override.seq > 0 {
		observed = s.override.observed
		res.auth, res.authSrc = s.override.rank, srcAgent
	}
	// Claims the override did not observe apply on top of it by rank; strictly
	// greater, so ties stay with the override, then with the earlier source.
	for _, i := range authoritative {
		if r := s.src[i].claims.maxAfter(observed[i]); r > res.auth {
			res.auth, res.authSrc = r, i
		}
	}
	res.status, res.statusSrc = res.auth, res.authSrc
	if !res.auth.terminal() {
		if p := s.src[srcEstimator].claims.maxAfter(observed[srcEstimator]); p > res.auth {
			res.status, res.statusSrc, res.predicted = p, srcEstimator, true
		}
	}
	if !res.status.terminal() {
		for _, i := range etaPrecedence {
			if f := &s.src[i].eta; f.seq > 0 {
				res.hasETA, res.eta = true, f.at
				break
			}
		}
	}
	for k := range res.ids {
		for _, i := range idPrecedence {
			if f := &s.src[i].ids[k]; f.seq > 0 {
				res.ids[k] = f.v
				break
			}
		}
	}
	return res
}

// decide explains what e did. version is its source's version before e; before is
// the answer before e. Decisions may depend on arrival order; the state never does.
func (s *State) decide(e *schemas.Event, i int, r rank, version uint64, merged bool, before *resolved) Decision {
	seq := e.SourceSeq
	res := &s.res
	switch {
	case seq <= version && merged:
		return Decision{Outcome: Stale, Reason: ReasonOlderSourceSeqMerged}
	case seq <= version && s.recent.has(i, seq, e.EventID):
		return Decision{Outcome: Duplicate, Reason: ReasonSameEventID}
	case seq <= version:
		return Decision{Outcome: Stale, Reason: ReasonOlderSourceSeq}
	case r == rankNone:
		return Decision{Outcome: Applied, Reason: ReasonFieldsOnly}
	case i == srcAgent:
		// A new agent seq is always the governing override; ties in rank went to it.
		if res.authSrc == srcAgent {
			return Decision{Outcome: Applied, Reason: ReasonOverride}
		}
		return Decision{Outcome: Ignored, Reason: ReasonOverrideOutranked}
	case s.override.seq > 0 && seq <= s.override.observed[i]:
		return Decision{Outcome: Ignored, Reason: ReasonSupersededByOverride}
	case i == srcEstimator:
		switch {
		case res.predicted && res.status == r:
			return Decision{Outcome: Applied, Reason: ReasonPredicted}
		case res.auth.terminal():
			return Decision{Outcome: Ignored, Reason: ReasonTerminal}
		case r <= res.auth:
			return Decision{Outcome: Ignored, Reason: ReasonEstimatorBehindAuthoritative}
		}
		return Decision{Outcome: Ignored, Reason: ReasonPredictionBehindEarlier}
	case r == res.auth:
		if before.auth != r {
			return Decision{Outcome: Applied, Reason: ReasonAdvanced}
		}
		return Decision{Outcome: Applied, Reason: ReasonConfirmed}
	case res.auth.terminal():
		return Decision{Outcome: Ignored, Reason: ReasonTerminal}
	}
	return Decision{Outcome: Ignored, Reason: ReasonRegression}
}

// View is the public answer of GET /v1/orders/{id}.
type View struct {
	OrderID      string                    `json:"order_id"`
	Status       schemas.Status            `json:"status"`
	StatusSource schemas.Source            `json:"status_source"`
	Predicted    bool                      `json:"predicted"`
	ETA          *time.Time                `json:"eta,omitempty"`
	Version      map[schemas.Source]uint64 `json:"version"`
	WalSeq       uint64                    `json:"wal_seq"`
	UpdatedAt    time.Time                 `json:"updated_at"`
	CustomerID   string                    `json:"customer_id,omitempty"`
	RestaurantID string                    `json:"restaurant_id,omitempty"`
	DasherID     string                    `json:"dasher_id,omitempty"`
}

// View returns the public answer. Status is "" until some event claims one.
// Version lists the sources that sent at least one event that was not rejected.
func (s *State) View() View {
	v := View{
		OrderID:      s.orderID,
		Status:       s.res.status.status(),
		StatusSource: sourceNameOf(s.res.statusSrc),
		Predicted:    s.res.predicted,
		Version:      make(map[schemas.Source]uint64, numSources),
		WalSeq:       s.walSeq,
		UpdatedAt:    s.updatedAt,
		CustomerID:   s.res.ids[idCustomer],
		RestaurantID: s.res.ids[idRestaurant],
		DasherID:     s.res.ids[idDasher],
	}
	if s.res.hasETA {
		eta := s.res.eta
		v.ETA = &eta
	}
	for i, ss := range s.src {
		if ss.version > 0 {
			v.Version[sourceName[i]] = ss.version
		}
	}
	return v
}

// Milestones returns the milestones reached, in lifecycle order, judged on the
// authoritative status: a prediction is not a fact, so it never bills or notifies.
// picked_up counts from picked_up on, delivered included; a cancelled order reports
// only cancelled.
func (s *State) Milestones() []schemas.Status {
	switch a := s.res.auth; {
	case a == rankDelivered:
		return []schemas.Status{schemas.StatusPickedUp, schemas.StatusDelivered}
	case a == rankCancelled:
		return []schemas.Status{schemas.StatusCancelled}
	case a >= rankPickedUp:
		return []schemas.Status{schemas.StatusPickedUp}
	}
	return nil
}
