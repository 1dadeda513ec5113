package fold

import (
	"strconv"
	"strings"

	"github.com/orderflow/orderflow/schemas"
)

// DLQ reason codes, stable: operators alert and filter on them.
const (
	ReasonPayloadTooLarge = "payload_too_large"
	ReasonInvalidSubject  = "invalid_subject"
	ReasonDuplicateHeader = "duplicate_header"
	ReasonReservedHeader  = "reserved_header"
	ReasonMalformedJSON   = "malformed_json"
	ReasonSourceMismatch  = "source_mismatch"
	ReasonOrderMismatch   = "order_id_mismatch"
	ReasonSchemaViolation = "schema_violation"
	ReasonHandlerPanic    = "handler_panic"
)

// Rejection says why a WAL record cannot be processed and goes to the DLQ.
type Rejection struct {
	Reason string // one of the Reason* codes
	Detail string // every problem, for humans
}

// Classify turns a stored WAL record into a valid event or a rejection. It is pure
// and total: any bytes and headers give one or the other, never a panic (a panic in
// decoding becomes a handler_panic rejection).
func Classify(rec Record) (ev *schemas.Event, rej *Rejection) {
	defer func() {
		if recover() != nil {
			ev, rej = nil, &Rejection{ReasonHandlerPanic, "decoding panicked on this event"}
		}
	}()
	return classify(rec.Subject, rec.Data, rec.Header)
}

func classify(walSubject string, data []byte, header map[string][]string) (*schemas.Event, *Rejection) {
	if len(data) > schemas.MaxEventBytes {
		return nil, &Rejection{ReasonPayloadTooLarge, "body exceeds the event size limit"}
	}
	for k, v := range header {
		// Two values for one header make the event ambiguous (which Nats-Msg-Id, which
		// trace?), and naive header decoders fail on them: keep them out of the lanes.
		if len(v) > 1 {
			return nil, &Rejection{ReasonDuplicateHeader, "header " + k + " appears " + strconv.Itoa(len(v)) + " times"}
		}
		// NATS adds Nats-* headers of its own when it hands a stored message over
		// (sequence, subject, time, pin): a producer's copy would be read as the
		// server's. Only the publish controls are a producer's to send.
		if ReservedHeader(k) {
			return nil, &Rejection{ReasonReservedHeader, "header " + k + " is reserved for the NATS server"}
		}
	}
	subject := schemas.ProducerSubject(walSubject)
	e, err := schemas.Decode(subject, data)
	if err == nil {
		return e, nil
	}
	ps, _ := err.(schemas.Problems)
	return nil, &Rejection{Reason: reasonOf(ps), Detail: err.Error()}
}

// ReservedHeader reports a Nats-* header a producer may not send: all but
// Nats-Msg-Id and the Nats-Expected-* publish conditions. Nats-Stream-Source is not
// a producer's either, but it is never one: JetStream refuses a publish carrying it
// and replaces it on every sourced message, so in the WAL it always names the region
// stream the event was replicated from (multi-region WALs carry it on every event).
func ReservedHeader(k string) bool {
	l := strings.ToLower(k)
	return strings.HasPrefix(l, "nats-") && l != "nats-msg-id" && !strings.HasPrefix(l, "nats-expected-") &&
		l != "nats-stream-source"
}

// reasonOf picks the most specific reason: a subject or identity problem outranks
// field problems, because it says the producer is misconfigured, not buggy.
func reasonOf(ps schemas.Problems) string {
	reason := ReasonSchemaViolation
	for _, p := range ps {
		switch {
		case p.Path == "subject":
			return ReasonInvalidSubject
		case p.Path == "/source" && strings.Contains(p.Message, "subject"):
			return ReasonSourceMismatch
		case p.Path == "/order_id" && strings.Contains(p.Message, "subject"):
			reason = ReasonOrderMismatch
		case p.Path == "" && strings.HasPrefix(p.Message, "invalid JSON"):
			reason = ReasonMalformedJSON
		}
	}
	return reason
}
