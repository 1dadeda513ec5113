package resolver

// Decision is what the resolver recorded for one event: the timeline shows it so a
// reader can see why the current status won (DESIGN §3.6).
type Decision struct {
	Outcome Outcome
	Reason  Reason
	// Changed reports that the resolved answer (status, status_source, predicted, eta,
	// entity ids) changed. version and wal_seq are left out: they move on every event.
	Changed bool
	// Persist reports that anything a snapshot stores changed apart from wal_seq and
	// the retry ring: the answer, a version, or a summary future events resolve
	// against. A snapshot that skipped such a change would fold later events wrongly.
	Persist bool
}

// Outcome is the class of a decision, as the timeline's "decision" field shows it.
type Outcome string

// The outcomes of DESIGN §2. Outcome and reason describe the event's status claim;
// the eta and entity ids of every event that is not rejected are merged regardless.
const (
	// Applied: the event is new for its source and its status (if any) holds.
	Applied Outcome = "applied"
	// Duplicate: an exact retry of an event already folded in; it changed nothing.
	Duplicate Outcome = "duplicate"
	// Stale: source_seq <= version[source]: the source has already sent something newer.
	Stale Outcome = "stale"
	// Ignored: the event is new for its source (version advanced) but its status lost.
	Ignored Outcome = "ignored"
	// Rejected: the event breaks a rule about who may say what; it changed nothing.
	Rejected Outcome = "rejected"
)

// Reason is a stable snake_case code explaining a decision. Codes are a public
// contract: add new ones, never rename.
type Reason string

// Reasons, grouped by the outcome they go with.
const (
	// ReasonAdvanced (applied): an authoritative event raised the authoritative status
	// to its own status.
	ReasonAdvanced Reason = "advanced"
	// ReasonConfirmed (applied): an authoritative event repeated the authoritative
	// status that already held (another source, or the agent, had said it).
	ReasonConfirmed Reason = "confirmed"
	// ReasonPredicted (applied): an estimator prediction leads the view.
	ReasonPredicted Reason = "predicted"
	// ReasonOverride (applied): the agent event is the governing override and its
	// status holds.
	ReasonOverride Reason = "override"
	// ReasonFieldsOnly (applied): the event carries no status; its eta and entity ids
	// were merged.
	ReasonFieldsOnly Reason = "fields_only"

	// ReasonSameEventID (duplicate): same source, source_seq and event_id as an event
	// folded in recently.
	ReasonSameEventID Reason = "same_event_id"

	// ReasonOlderSourceSeq (stale): source_seq <= version[source] and the event
	// carried nothing that newer events of its source had not replaced.
	ReasonOlderSourceSeq Reason = "older_source_seq"
	// ReasonOlderSourceSeqMerged (stale): source_seq <= version[source], but the event
	// carried a claim or field no newer event of its source replaced (a late eta, or a
	// higher status the source later walked back), so it was merged: dropping it would
	// make the state depend on arrival order.
	ReasonOlderSourceSeqMerged Reason = "older_source_seq_merged"

	// ReasonRegression (ignored): an authoritative status behind the current
	// authoritative status (no regression without an override).
	ReasonRegression Reason = "regression"
	// ReasonTerminal (ignored): the order is delivered or cancelled; only an agent
	// override moves it. Also a cancel after delivered: delivered wins.
	ReasonTerminal Reason = "terminal"
	// ReasonSupersededByOverride (ignored): the governing agent override observed this
	// event (source_seq <= observed[source]) and replaced it.
	ReasonSupersededByOverride Reason = "superseded_by_override"
	// ReasonEstimatorBehindAuthoritative (ignored): a prediction not strictly later
	// than the authoritative status never overrides it.
	ReasonEstimatorBehindAuthoritative Reason = "estimator_behind_authoritative"
	// ReasonPredictionBehindEarlier (ignored): the estimator already predicted a later
	// stage; predictions do not walk back either.
	ReasonPredictionBehindEarlier Reason = "prediction_behind_earlier"
	// ReasonOverrideOutranked (ignored): an authoritative event the agent had not
	// observed outranks the override's status. The override still supersedes what it
	// observed.
	ReasonOverrideOutranked Reason = "override_outranked"

	// ReasonNotAllowedForSource (rejected): the source may not send this status
	// (DESIGN §2 "who may say what").
	ReasonNotAllowedForSource Reason = "not_allowed_for_source"
	// ReasonUnknownSource, ReasonUnknownStatus, ReasonInvalidSourceSeq,
	// ReasonOrderMismatch, ReasonMissingReason (rejected): schema validation normally
	// stops these upstream; the resolver checks again so Apply is total.
	ReasonUnknownSource    Reason = "unknown_source"
	ReasonUnknownStatus    Reason = "unknown_status"
	ReasonInvalidSourceSeq Reason = "invalid_source_seq"
	ReasonOrderMismatch    Reason = "order_mismatch"
	ReasonMissingReason    Reason = "missing_reason"
)
