package schemas

import (
	_ "embed"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// EventJSONSchema is event.schema.json, the published contract for producers and
// tools that are not written in Go. The Go validator mirrors it by hand because a
// generic validator is too slow for the hot path; the tests hold the two together.
// Treat it as read-only.
//
//go:embed event.schema.json
var EventJSONSchema []byte

// MaxEventBytes bounds a body before it is parsed, so a hostile or broken producer
// cannot make the pipeline hold or scan megabytes per message.
const MaxEventBytes = 64 << 10

// MaxCounter is the largest source_seq or observed value: 2^53-1, the largest
// integer every JSON implementation (JavaScript producers included) reads exactly.
const MaxCounter = 1<<53 - 1

// Size limits of the free-text fields, in Unicode code points as JSON Schema counts them.
const (
	MaxIDLen     = 64   // event_id and the entity ids: they become headers, keys and URL segments
	MaxReasonLen = 1024 // reason: a sentence for a human, not a document
)

// Problem is one reason an event is invalid, located so a producer can fix it.
type Problem struct {
	// Path is a JSON pointer into the body ("/source_seq", "/observed/driver"),
	// "" for the body as a whole, or "subject" for the NATS subject.
	Path string
	// Message says what is wrong, for humans (logs, DLQ headers, CLI output).
	Message string
}

// String renders the problem as "path: message".
func (p Problem) String() string {
	path := p.Path
	if path == "" {
		path = "(body)"
	}
	return path + ": " + p.Message
}

// Problems lists every problem found in one event, so a producer fixes them in one
// round trip instead of one per retry. Every error Decode returns is a Problems.
// A nil or empty Problems means valid; convert it to error only when it is not empty.
type Problems []Problem

// Error lists every problem, in the order found.
func (ps Problems) Error() string {
	var b strings.Builder
	b.WriteString("invalid event: ")
	for i, p := range ps {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

func (ps *Problems) add(path, msg string) { *ps = append(*ps, Problem{Path: path, Message: msg}) }

// field is one property of the event body; fieldSet is a set of them.
type field uint8

type fieldSet uint16

const (
	fSchemaVersion field = iota
	fEventID
	fOrderID
	fSource
	fSourceSeq
	fOccurredAt
	fStatus
	fETA
	fActorID
	fCustomerID
	fRestaurantID
	fDasherID
	fReason
	fObserved
	numFields
)

// fieldNames are the JSON names, indexed by field; paths are their JSON pointers.
var (
	fieldNames = [numFields]string{
		"schema_version", "event_id", "order_id", "source", "source_seq", "occurred_at", "status",
		"eta", "actor_id", "customer_id", "restaurant_id", "dasher_id", "reason", "observed",
	}
	fieldPaths = func() (p [numFields]string) {
		for i, n := range fieldNames {
			p[i] = "/" + n
		}
		return p
	}()
)

const required = 1<<fSchemaVersion | 1<<fEventID | 1<<fOrderID | 1<<fSource | 1<<fSourceSeq | 1<<fOccurredAt

func (s fieldSet) has(f field) bool { return s&(1<<f) != 0 }

var (
	msgSources    = "must be one of " + joinStrings(Sources)
	msgStatuses   = "must be one of " + joinStrings(Statuses)
	msgMaxCount   = "must be <= " + strconv.Itoa(MaxCounter)
	msgID         = "must be 1.." + strconv.Itoa(MaxIDLen) + " characters with no control characters"
	msgReason     = "must be 1.." + strconv.Itoa(MaxReasonLen) + " characters"
	msgNeedStatus = "must have status or eta (or both)" // or, from the platform, dasher_id alone
)

func joinStrings[S ~string](v []S) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = string(x)
	}
	return strings.Join(s, ", ")
}

// Validate checks an event built in Go (orderflow publish, tests) against the same
// rules Decode applies to bodies, so nothing invalid is ever sent. Zero values stand
// for absent fields: an empty string, SourceSeq 0, a zero OccurredAt, a nil ETA, an
// empty Observed. It returns nil when the event is valid.
func (e *Event) Validate() Problems {
	var seen fieldSet
	set := func(f field, present bool) {
		if present {
			seen |= 1 << f
		}
	}
	set(fSchemaVersion, e.SchemaVersion != 0)
	set(fEventID, e.EventID != "")
	set(fOrderID, e.OrderID != "")
	set(fSource, e.Source != "")
	set(fSourceSeq, e.SourceSeq != 0)
	set(fOccurredAt, !e.OccurredAt.IsZero())
	set(fStatus, e.Status != "")
	set(fETA, e.ETA != nil)
	set(fActorID, e.ActorID != "")
	set(fCustomerID, e.CustomerID != "")
	set(fRestaurantID, e.RestaurantID != "")
	set(fDasherID, e.DasherID != "")
	set(fReason, e.Reason != "")
	set(fObserved, len(e.Observed) > 0)
	var ps Problems
	e.check(seen, 0, &ps)
	return ps
}

// check applies the value rules of the schema to the fields in seen, skipping those in
// done (already judged while decoding), and appends what is wrong to ps.
func (e *Event) check(seen, done fieldSet, ps *Problems) {
	for f := range numFields {
		if !seen.has(f) {
			if required&(1<<f) != 0 {
				ps.add(fieldPaths[f], "is required")
			}
			continue
		}
		if done.has(f) {
			continue
		}
		path := fieldPaths[f]
		switch f {
		case fSchemaVersion:
			if e.SchemaVersion != SchemaVersion {
				ps.add(path, "must be 1")
			}
		case fEventID:
			checkText(ps, path, e.EventID, MaxIDLen, true)
		case fOrderID:
			if !ValidOrderID(e.OrderID) {
				ps.add(path, msgOrderID)
			}
		case fSource:
			if !e.Source.Valid() {
				ps.add(path, msgSources)
			}
		case fSourceSeq:
			if e.SourceSeq < 1 {
				ps.add(path, "must be >= 1")
			} else if e.SourceSeq > MaxCounter {
				ps.add(path, msgMaxCount)
			}
		case fOccurredAt:
			checkTime(ps, path, e.OccurredAt)
		case fStatus:
			if !e.Status.Valid() {
				ps.add(path, msgStatuses)
			}
		case fETA:
			checkTime(ps, path, *e.ETA)
		case fActorID:
			checkText(ps, path, e.ActorID, MaxIDLen, true)
		case fCustomerID:
			checkText(ps, path, e.CustomerID, MaxIDLen, true)
		case fRestaurantID:
			checkText(ps, path, e.RestaurantID, MaxIDLen, true)
		case fDasherID:
			checkText(ps, path, e.DasherID, MaxIDLen, true)
		case fReason:
			checkText(ps, path, e.Reason, MaxReasonLen, false)
		case fObserved:
			e.checkObserved(ps)
		}
	}
	// A platform event may carry only dasher_id: a dispatch assignment, which
	// changes who delivers the order, not its status.
	assignment := seen.has(fSource) && e.Source == SourcePlatform && seen.has(fDasherID)
	if !seen.has(fStatus) && !seen.has(fETA) && !assignment {
		ps.add("", msgNeedStatus)
	}
	if seen.has(fSource) && e.Source == SourceAgent && !seen.has(fReason) {
		ps.add(fieldPaths[fReason], "is required for agent events")
	}
}

func (e *Event) checkObserved(ps *Problems) {
	var unknown []string
	for k := range e.Observed {
		if !k.Valid() {
			unknown = append(unknown, string(k))
		}
	}
	slices.Sort(unknown) // map order is random; problems are not
	for _, k := range unknown {
		ps.add(fieldPaths[fObserved]+"/"+escapePointer(k), msgSources)
	}
	for _, src := range Sources {
		if v, ok := e.Observed[src]; ok && v > MaxCounter {
			ps.add(fieldPaths[fObserved]+"/"+string(src), msgMaxCount)
		}
	}
}

// checkText enforces 1..max code points, valid UTF-8 (a Go string may hold anything;
// JSON would silently replace bad bytes) and, for ids, no control characters.
func checkText(ps *Problems, path, s string, max int, id bool) {
	n := 0
	for i := 0; i < len(s); n++ {
		r, size := utf8.DecodeRuneInString(s[i:])
		if size == 1 && r == utf8.RuneError || id && (r < 0x20 || r == 0x7f) {
			n = -1
			break
		}
		i += size
	}
	if n < 1 || n > max {
		if id {
			ps.add(path, msgID)
		} else {
			ps.add(path, msgReason)
		}
	}
}

// checkTime rejects what RFC 3339 cannot write: decoded times always pass, a
// time built in Go may not.
func checkTime(ps *Problems, path string, t time.Time) {
	_, off := t.Zone()
	if y, u := t.Year(), t.UTC().Year(); y < 0 || y > 9999 || u < 0 || u > 9999 || off%60 != 0 || off <= -24*3600 || off >= 24*3600 {
		ps.add(path, "must be an RFC 3339 date-time (year 0000..9999, offset in whole minutes)")
	}
}

// escapePointer escapes a property name as a JSON pointer token (RFC 6901).
func escapePointer(s string) string {
	if !strings.ContainsAny(s, "~/") {
		return s
	}
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}
