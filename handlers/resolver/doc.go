// Package resolver owns status resolution: it folds the events of one order, from its
// five sources, into one resolved state, and records for every event a decision with
// a reason (DESIGN §3). It is pure: no I/O, no clock, no randomness.
//
// # Why the state converges
//
// The WAL order is the arrival order, and producer races, retries and replays change
// it. So the state is not "the last thing that happened": it is a set of per-source
// summaries, each a join (a max under some fixed order), and the answer is computed
// from the summaries alone. Folding the same set of events in any order, with any
// number of duplicates, gives the same summaries and so the same answer. An event
// with an old source_seq is still labelled stale, but its claims are merged too:
// merging is idempotent, a lower source_seq can only fill what newer events of its
// source left out, and dropping it would make the answer depend on which arrived
// first. Decisions explain what each event did when it arrived, so they may differ
// between arrival orders; the state never does.
//
// # Rules
//
// The resolver implements exactly this table (resolve, decide and rules.go):
//
//	| # | rule                  | behaviour |
//	|---|-----------------------|-----------|
//	| 1 | lifecycle             | created < confirmed < preparing < ready_for_pickup < picked_up < en_route < arrived < delivered; delivered and cancelled are terminal |
//	| 2 | rank (claims meeting) | the lifecycle with cancelled after arrived: ... < arrived < cancelled < delivered. Cancelled beats every non-terminal status whichever arrives first (cancel racing pickup => cancelled); delivered beats cancelled because the goods were handed over (the one terminal -> terminal move, seen only in the arrival order cancel-then-deliver) |
//	| 3 | who may say what      | platform: created, cancelled. merchant: confirmed, preparing, ready_for_pickup, cancelled. driver: picked_up, en_route, arrived, delivered. estimator: predictions preparing..arrived, and eta. agent: any status (with a reason). Anything else is rejected (not_allowed_for_source) and changes nothing, not even version |
//	| 4 | version               | version[source] = the highest source_seq among the source's events that were not rejected |
//	| 5 | duplicate             | source_seq <= version[source], the same (source, source_seq, event_id) is among the last 8 events folded in, and it changed nothing => duplicate |
//	| 6 | stale                 | any other source_seq <= version[source] => stale. Its claims and fields are merged anyway; that is a no-op unless newer events of its source left them out (older_source_seq_merged) |
//	| 7 | source summary        | per source: version; its status claims as a staircase answering "the highest rank claimed with source_seq > v"; eta and each entity id from its highest-source_seq event that carried one (a reused source_seq keeps the later eta / the greater id) |
//	| 8 | governing override    | the status-carrying agent event with the highest agent source_seq; older overrides are replaced whole. It covers source s up to observed[s]. A missing observed, or a source missing from it, covers nothing: an agent that shows no proof of what it saw can only move the order forward. observed on non-agent events is ignored |
//	| 9 | authoritative status  | start from the override's status (it may be backwards, e.g. revert delivered to arrived); for platform, merchant and driver take the highest rank claimed with source_seq > observed[s]; the highest rank wins, ties go to the override, then platform, merchant, driver. Without an override: the highest-ranked authoritative claim |
//	| 10| prediction            | the estimator's highest claim with source_seq > observed[estimator] leads (status = it, predicted = true, status_source = estimator) only while the authoritative status is not terminal and the prediction is strictly later; it never overrides an authoritative status of the same or a later stage |
//	| 11| eta                   | from the first of agent, estimator, driver, merchant, platform that sent one: its highest-source_seq eta; omitted while the status is terminal |
//	| 12| entity ids            | customer_id, restaurant_id, dasher_id each from the first of agent, platform, merchant, driver, estimator that sent it: its highest-source_seq value |
//	| 13| milestones            | judged on the authoritative status, never a prediction: picked_up from picked_up through delivered; delivered; cancelled (alone) |
//	| 14| wal_seq, updated_at   | wal_seq = the highest WAL sequence folded in, whatever the decision. updated_at = occurred_at of the event that last changed the answer (status, status_source, predicted, eta, ids): informative, never used to order anything |
//
// # Decisions
//
// Every event gets exactly one decision; the first matching row wins. Outcome and
// reason describe the event's status claim; the eta and entity ids of an event that
// is not rejected are merged whatever its outcome.
//
//	| outcome   | reason                          | when |
//	|-----------|---------------------------------|------|
//	| rejected  | unknown_source, order_mismatch, invalid_source_seq, unknown_status, missing_reason | schema validation failed upstream to catch it (Apply re-checks) |
//	| rejected  | not_allowed_for_source          | the source may not send this status (rule 3) |
//	| stale     | older_source_seq_merged         | source_seq <= version[source], and merging it changed a summary (rule 6) |
//	| duplicate | same_event_id                   | source_seq <= version[source], an exact retry of a recent event (rule 5) |
//	| stale     | older_source_seq                | source_seq <= version[source] otherwise |
//	| applied   | fields_only                     | no status: eta / entity ids only |
//	| applied   | override                        | agent: its status is the authoritative status |
//	| ignored   | override_outranked              | agent: a claim it had not observed outranks its status (it still supersedes what it observed) |
//	| ignored   | superseded_by_override          | source_seq <= observed[source] of the governing override |
//	| applied   | predicted                       | estimator: its prediction leads |
//	| ignored   | terminal                        | estimator: the authoritative status is terminal |
//	| ignored   | estimator_behind_authoritative  | estimator: its stage is not strictly later than the authoritative status |
//	| ignored   | prediction_behind_earlier       | estimator: it already predicted a later stage |
//	| applied   | advanced                        | its status is now the authoritative status, which it raised |
//	| applied   | confirmed                       | its status is the authoritative status, which already held |
//	| ignored   | terminal                        | the authoritative status is terminal (includes cancelled after delivered) |
//	| ignored   | regression                      | its status is behind the authoritative status |
package resolver
