package console

import (
	"strings"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/resolver"
)

// reasonWords explains every reason code a timeline can show: the resolver's
// (handlers/resolver/decision.go) and the DLQ's (handlers/fold). A test checks that
// no code is missing.
var reasonWords = map[string]string{
	string(resolver.ReasonAdvanced):                     "Moved the order forward to this status.",
	string(resolver.ReasonConfirmed):                    "Repeated the status that already held (another source, or an agent, had said it first).",
	string(resolver.ReasonPredicted):                    "An estimate from the estimation service; it shows while no source has confirmed this stage or a later one.",
	string(resolver.ReasonOverride):                     "A support agent's correction. Its status holds over every event the agent had seen; events the agent had not seen still count.",
	string(resolver.ReasonFieldsOnly):                   "Carried no status: only its ETA or customer, restaurant or dasher id was taken.",
	string(resolver.ReasonSameEventID):                  "A retry of an event already counted; it changed nothing.",
	string(resolver.ReasonOlderSourceSeq):               "Arrived after a newer event from the same source and carried nothing new; it changed nothing.",
	string(resolver.ReasonOlderSourceSeqMerged):         "Arrived after a newer event from the same source, but carried something the newer one left out (an ETA, an id, or a status the source later walked back), so that part was kept.",
	string(resolver.ReasonRegression):                   "Behind the current status. Statuses never move backwards unless a support agent corrects them.",
	string(resolver.ReasonTerminal):                     "The order was already delivered or cancelled; only a support agent can move it now. (A cancel after delivery loses: the goods were handed over.)",
	string(resolver.ReasonSupersededByOverride):         "A support agent's correction had seen this event and replaced it.",
	string(resolver.ReasonEstimatorBehindAuthoritative): "A prediction that was not ahead of the confirmed status, so the confirmed status stands.",
	string(resolver.ReasonPredictionBehindEarlier):      "The estimation service had already predicted a later stage; predictions do not move back.",
	string(resolver.ReasonOverrideOutranked):            "A support agent's correction, but a later event the agent had not seen moved the order further. The correction still replaces what the agent had seen.",
	string(resolver.ReasonNotAllowedForSource):          "This source may not send this status (for example, a driver cannot confirm an order); it changed nothing.",
	string(resolver.ReasonUnknownSource):                "The source is not one orderflow knows; it changed nothing.",
	string(resolver.ReasonUnknownStatus):                "The status is not one orderflow knows; it changed nothing.",
	string(resolver.ReasonInvalidSourceSeq):             "Its sequence number is invalid (it must be 1 or more); it changed nothing.",
	string(resolver.ReasonOrderMismatch):                "It names another order; it changed nothing.",
	string(resolver.ReasonMissingReason):                "An agent event without a written reason; it changed nothing.",

	fold.ReasonPayloadTooLarge: "Set aside: the event is larger than orderflow accepts.",
	fold.ReasonInvalidSubject:  "Set aside: it was published to a subject that names no valid source and order.",
	fold.ReasonDuplicateHeader: "Set aside: it carried a header twice.",
	fold.ReasonReservedHeader:  "Set aside: it carried a header reserved for NATS itself.",
	fold.ReasonMalformedJSON:   "Set aside: its body is not valid JSON.",
	fold.ReasonSourceMismatch:  "Set aside: its body names another source than the subject it was published to.",
	fold.ReasonOrderMismatch:   "Set aside: its body names another order than the subject it was published to.",
	fold.ReasonSchemaViolation: "Set aside: its body breaks the event schema (see the detail).",
	fold.ReasonHandlerPanic:    "Set aside: processing it failed unexpectedly; operators are alerted by the DLQ.",
}

// explain is the plain-words explanation of a reason code.
func explain(reason string) string {
	if w, ok := reasonWords[reason]; ok {
		return w
	}
	return "Reason code " + reason + "."
}

// words turns a snake_case code (a status, a milestone kind) into words.
func words(code string) string { return strings.ReplaceAll(code, "_", " ") }
