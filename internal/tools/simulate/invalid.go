package simulate

import (
	"strconv"
	"strings"

	"github.com/orderflow/orderflow/schemas"
)

// Kinds of invalid input, the value of Message.Invalid. Each must end in the DLQ.
const (
	InvalidMalformedJSON  = "malformed_json"  // the body is not JSON (a truncated write)
	InvalidSchema         = "schema"          // JSON that breaks the event schema
	InvalidSourceMismatch = "source_mismatch" // the body's source differs from the subject's
	InvalidOversize       = "oversize"        // the body exceeds Config.MaxBodyBytes (schemas.MaxEventBytes)
)

// InvalidKinds lists every kind, in a fixed order.
var InvalidKinds = []string{InvalidMalformedJSON, InvalidSchema, InvalidSourceMismatch, InvalidOversize}

// invalid derives one bad message from a valid event. It targets its own order id
// (badID), never a real order's: if a lenient pipeline let it through anyway, it
// could not move a real order's status or source_seq, so convergence checks on the
// valid orders stay meaningful in DLQ tests.
func (b *builder) invalid(badID string, e schemas.Event) Message {
	e.OrderID = badID
	e.EventID = badID + "-" + string(e.Source) + "-" + strconv.FormatUint(e.SourceSeq, 10)
	m := Message{Subject: schemas.Subject(e.Source, badID), MsgID: e.EventID}
	switch m.Invalid = InvalidKinds[b.bad.IntN(len(InvalidKinds))]; m.Invalid {
	case InvalidMalformedJSON:
		body := mustJSON(e)
		m.Body = body[:len(body)/2]
	case InvalidSchema:
		switch b.bad.IntN(6) {
		case 0:
			e.SourceSeq = 0
		case 1:
			e.Status = "teleported"
		case 2:
			e.SchemaVersion = schemas.SchemaVersion + 1
		case 3:
			e.EventID = ""
		case 4: // an agent override without a reason
			e.Source, e.Status, e.Reason = schemas.SourceAgent, schemas.StatusDelivered, ""
			m.Subject = schemas.Subject(e.Source, badID)
		case 5:
			e.OrderID = badID + "y" // differs from the subject token
		}
		m.Body = mustJSON(e)
	case InvalidSourceMismatch:
		other := schemas.Sources[(sourceIndex(e.Source)+1+b.bad.IntN(len(schemas.Sources)-1))%len(schemas.Sources)]
		m.Subject = schemas.Subject(other, badID)
		m.Body = mustJSON(e)
	case InvalidOversize:
		e.Reason = strings.Repeat("x", b.cfg.MaxBodyBytes)
		m.Body = mustJSON(e)
	}
	return m
}
