package schemas

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// FuzzDecode checks, on any subject and body: no panic; every error is a non-empty
// Problems with well-formed paths; an accepted event passes Validate and survives
// json.Marshal and Decode unchanged; and the Go validator agrees with
// event.schema.json on the body, except where the schema cannot see (duplicate keys,
// broken Unicode, size) or the reference validator is laxer than RFC 3339.
func FuzzDecode(f *testing.F) {
	for _, x := range loadExamples(f) {
		f.Add(x.Subject, x.Body(f))
	}
	f.Fuzz(func(t *testing.T, subject string, body []byte) {
		e, err := Decode(subject, body)
		if err != nil {
			ps, ok := err.(Problems)
			if !ok || len(ps) == 0 || e != nil {
				t.Fatalf("error %T %v with event %v", err, err, e)
			}
			for _, p := range ps {
				if p.Path != "" && p.Path != "subject" && !strings.HasPrefix(p.Path, "/") || p.Message == "" {
					t.Fatalf("malformed problem %#v", p)
				}
			}
		} else {
			if ps := e.Validate(); ps != nil && !(e.OccurredAt.IsZero() && len(ps) == 1 && ps[0].Path == "/occurred_at") {
				// (Validate reads a zero OccurredAt as missing; a body may spell it out.)
				t.Fatalf("accepted event fails Validate: %v", ps)
			}
			again, err := json.Marshal(e)
			if err != nil {
				t.Fatalf("marshal accepted event: %v", err)
			}
			e2, err := Decode(subject, again)
			if err != nil {
				t.Fatalf("re-decode %s: %v", again, err)
			}
			if !eventsEqual(e, e2) {
				t.Fatalf("round trip changed the event:\n%+v\n%+v", e, e2)
			}
		}
		compareWithSchema(t, body)
	})
}

var (
	hugeExponent = regexp.MustCompile(`[eE][-+]?[0-9]{4,}`)
	beyondSchema = []string{"appears more than once", "UTF-8", "surrogate", "bytes, more than", "in UTC"}
)

func compareWithSchema(t *testing.T, body []byte) {
	if len(body) > MaxEventBytes || hugeExponent.Match(body) {
		return // the reference validator's big.Rat would take seconds
	}
	ps := bodyProblems(body)
	schemaOK, schemaErr := schemaAccepts(t, body)
	switch {
	case schemaOK == (len(ps) == 0):
	case len(ps) == 0:
		t.Fatalf("Go accepts what the schema rejects: %v", schemaErr)
	default:
		for _, p := range ps {
			if !containsAny(p.Message, beyondSchema) && !(strings.Contains(p.Message, "date-time") && laxDateTime(body, p.Path)) {
				t.Fatalf("Go rejects what the schema accepts: %v", ps)
			}
		}
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// laxDateTime reports whether the timestamp at path has a sign where RFC 3339 wants a
// digit, which the reference validator's strconv.Atoi lets through ("+1:00:00").
func laxDateTime(body []byte, path string) bool {
	var m map[string]any
	if json.Unmarshal(body, &m) != nil {
		return false
	}
	s, _ := m[strings.TrimPrefix(path, "/")].(string)
	return len(s) >= 20 && strings.ContainsAny(s[11:19], "+-")
}
