package fold

import (
	"time"

	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/schemas"
)

// TimelineEvent is one event of an order with the decision it got.
type TimelineEvent struct {
	WalSeq     uint64         `json:"wal_seq"`
	EventID    string         `json:"event_id,omitempty"`
	Source     schemas.Source `json:"source,omitempty"`
	SourceSeq  uint64         `json:"source_seq,omitempty"`
	Status     schemas.Status `json:"status,omitempty"`
	ETA        *time.Time     `json:"eta,omitempty"`
	OccurredAt *time.Time     `json:"occurred_at,omitempty"`
	StoredAt   time.Time      `json:"stored_at"`
	Decision   string         `json:"decision"`
	Reason     string         `json:"reason"`
	// ActorID, Note and Observed are what the producer said about itself: who sent
	// the event, the reason a person wrote (the body's "reason", named apart from the
	// decision's reason code), and the version vector an agent had seen.
	ActorID  string                    `json:"actor_id,omitempty"`
	Note     string                    `json:"note,omitempty"`
	Observed map[schemas.Source]uint64 `json:"observed,omitempty"`
	// Detail explains an event set aside in the DLQ.
	Detail string `json:"detail,omitempty"`
}

// Step applies one WAL record to st and returns its timeline entry, with the
// decision the rules give it now. A record Classify rejects, or one the resolver
// panics on, leaves st as it was (for a panic: as the resolver left it) and is
// entered as rejected with the DLQ's reason.
func Step(st *resolver.State, rec Record) TimelineEvent {
	te := TimelineEvent{WalSeq: rec.Seq, StoredAt: rec.Time}
	ev, rej := Classify(rec)
	if rej != nil {
		te.Decision, te.Reason, te.Detail = string(resolver.Rejected), rej.Reason, rej.Detail
		return te
	}
	occurred := ev.OccurredAt
	te.EventID, te.Source, te.SourceSeq, te.Status, te.ETA, te.OccurredAt = ev.EventID, ev.Source, ev.SourceSeq, ev.Status, ev.ETA, &occurred
	te.ActorID, te.Note = ev.ActorID, ev.Reason
	if ev.Source == schemas.SourceAgent { // the resolver ignores observed on other events
		te.Observed = ev.Observed
	}
	d, ok := Apply(st, ev, rec.Seq)
	if !ok {
		te.Decision, te.Reason = string(resolver.Rejected), ReasonHandlerPanic
		return te
	}
	te.Decision, te.Reason = string(d.Outcome), string(d.Reason)
	return te
}
