package fold_test

import (
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/schemas"
)

// walSubject is the stored subject of an event published by src for order id.
func walSubject(src schemas.Source, id string) string {
	return schemas.WALPrefix + ".3." + string(src) + "." + id
}

const createdBody = `{"schema_version":1,"event_id":"o-1-platform-1","order_id":"o-1","source":"platform","source_seq":1,` +
	`"occurred_at":"2026-11-28T12:00:00Z","status":"created","customer_id":"c-1","restaurant_id":"r-1"}`

func TestClassifyAccepts(t *testing.T) {
	rec := fold.Record{Seq: 7, Subject: walSubject(schemas.SourcePlatform, "o-1"), Data: []byte(createdBody),
		Header: map[string][]string{"Nats-Msg-Id": {"o-1-platform-1"}, "Nats-Expected-Last-Sequence": {"6"}, "Traceparent": {"x"}}}
	ev, rej := fold.Classify(rec)
	if rej != nil {
		t.Fatalf("rejected a valid event: %+v", rej)
	}
	want := schemas.Event{SchemaVersion: 1, EventID: "o-1-platform-1", OrderID: "o-1", Source: schemas.SourcePlatform,
		SourceSeq: 1, OccurredAt: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), Status: schemas.StatusCreated,
		CustomerID: "c-1", RestaurantID: "r-1"}
	if ev.EventID != want.EventID || ev.OrderID != want.OrderID || ev.Source != want.Source || ev.SourceSeq != want.SourceSeq ||
		!ev.OccurredAt.Equal(want.OccurredAt) || ev.Status != want.Status || ev.CustomerID != want.CustomerID || ev.RestaurantID != want.RestaurantID {
		t.Fatalf("decoded %+v, want %+v", *ev, want)
	}
}

// TestClassifyRejections: every DLQ reason Classify gives, from the input that
// earns it. handler_panic has no input that decodes to it (the decoder is fuzzed
// never to panic); Step's panic test covers the resolver's side.
func TestClassifyRejections(t *testing.T) {
	body := func(from, to string) []byte { return []byte(strings.Replace(createdBody, from, to, 1)) }
	good := walSubject(schemas.SourcePlatform, "o-1")
	tests := []struct {
		name    string
		subject string
		data    []byte
		header  map[string][]string
		reason  string
		detail  string // a part of the detail
	}{
		{"too large", good, append([]byte(createdBody), make([]byte, schemas.MaxEventBytes)...), nil, fold.ReasonPayloadTooLarge, "size limit"},
		{"unknown source token", walSubject("courier", "o-1"), []byte(createdBody), nil, fold.ReasonInvalidSubject, "source token"},
		{"bad order id token", walSubject(schemas.SourcePlatform, "o 1"), []byte(createdBody), nil, fold.ReasonInvalidSubject, "order id token"},
		{"not a WAL or producer subject", "elsewhere.o-1", []byte(createdBody), nil, fold.ReasonInvalidSubject, "orders.events."},
		{"duplicate header", good, []byte(createdBody), map[string][]string{"Nats-Msg-Id": {"a", "b"}}, fold.ReasonDuplicateHeader, "appears 2 times"},
		{"reserved header", good, []byte(createdBody), map[string][]string{"Nats-Sequence": {"1"}}, fold.ReasonReservedHeader, "Nats-Sequence"},
		{"reserved header, any case", good, []byte(createdBody), map[string][]string{"nats-pin-id": {"x"}}, fold.ReasonReservedHeader, "reserved"},
		{"malformed JSON", good, []byte(`{"schema_version":1,`), nil, fold.ReasonMalformedJSON, "invalid JSON"},
		{"not JSON at all", good, []byte("hello"), nil, fold.ReasonMalformedJSON, "invalid JSON"},
		{"source differs from subject", good, body(`"source":"platform"`, `"source":"driver"`), nil, fold.ReasonSourceMismatch, "subject"},
		{"order id differs from subject", good, body(`"order_id":"o-1"`, `"order_id":"o-2"`), nil, fold.ReasonOrderMismatch, "subject"},
		{"unknown status", good, body(`"status":"created"`, `"status":"eaten"`), nil, fold.ReasonSchemaViolation, "/status"},
		{"missing event id", good, body(`"event_id":"o-1-platform-1",`, ``), nil, fold.ReasonSchemaViolation, "/event_id"},
		{"zero source_seq", good, body(`"source_seq":1`, `"source_seq":0`), nil, fold.ReasonSchemaViolation, "/source_seq"},
		{"unknown schema version", good, body(`"schema_version":1`, `"schema_version":2`), nil, fold.ReasonSchemaViolation, "/schema_version"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, rej := fold.Classify(fold.Record{Seq: 1, Subject: tc.subject, Data: tc.data, Header: tc.header})
			if rej == nil {
				t.Fatalf("accepted %+v, want rejection %s", ev, tc.reason)
			}
			if ev != nil {
				t.Fatalf("a rejection came with an event %+v", ev)
			}
			if rej.Reason != tc.reason || !strings.Contains(rej.Detail, tc.detail) {
				t.Fatalf("got %s (%s), want %s with %q in the detail", rej.Reason, rej.Detail, tc.reason, tc.detail)
			}
		})
	}
}

func TestReservedHeader(t *testing.T) {
	for h, want := range map[string]bool{
		"Nats-Msg-Id": false, "nats-msg-id": false, "Nats-Expected-Stream": false, "Nats-Expected-Last-Subject-Sequence": false,
		"Nats-Sequence": true, "Nats-Subject": true, "Nats-Time-Stamp": true, "Nats-Pin-Id": true, "NATS-STREAM": true,
		"Traceparent": false, "X-Nats": false, "Nats-Stream-Source": false, "nats-stream-source": false,
	} {
		if got := fold.ReservedHeader(h); got != want {
			t.Errorf("ReservedHeader(%q) = %v, want %v", h, got, want)
		}
	}
}

var reasons = map[string]bool{
	fold.ReasonPayloadTooLarge: true, fold.ReasonInvalidSubject: true, fold.ReasonDuplicateHeader: true,
	fold.ReasonReservedHeader: true, fold.ReasonMalformedJSON: true, fold.ReasonSourceMismatch: true,
	fold.ReasonOrderMismatch: true, fold.ReasonSchemaViolation: true,
}

// TestClassifyTotal: any bytes, subject and headers give an event or a rejection
// with a known reason, never both, never neither, and never a decoder panic (which
// Classify would turn into handler_panic).
func TestClassifyTotal(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rec := fold.Record{
			Seq:     rapid.Uint64().Draw(t, "seq"),
			Subject: rapid.OneOf(rapid.String(), rapid.Just(walSubject(schemas.SourceDriver, "o-1"))).Draw(t, "subject"),
			Data: rapid.OneOf(
				rapid.SliceOf(rapid.Byte()),
				rapid.Map(rapid.IntRange(0, len(createdBody)), func(n int) []byte { return []byte(createdBody[:n]) }),
				rapid.Map(rapid.SliceOf(rapid.SampledFrom([]string{`{`, `}`, `"status"`, `:`, `,`, `"x"`, `1`, `[`, `]`, `null`, `\u0000`, `"source_seq"`, `1e999`})),
					func(parts []string) []byte { return []byte(strings.Join(parts, "")) }),
			).Draw(t, "data"),
			Header: rapid.MapOf(rapid.String(), rapid.SliceOfN(rapid.String(), 0, 3)).Draw(t, "header"),
		}
		ev, rej := fold.Classify(rec)
		switch {
		case (ev == nil) == (rej == nil):
			t.Fatalf("event %v and rejection %v", ev, rej)
		case rej != nil && !reasons[rej.Reason]:
			t.Fatalf("reason %q (%s)", rej.Reason, rej.Detail)
		case ev != nil && (!ev.Source.Valid() || ev.EventID == ""):
			t.Fatalf("accepted an invalid event %+v", ev)
		}
	})
}

// TestStepPanic: an event the resolver panics on is entered as rejected with the
// handler_panic reason.
func TestStepPanic(t *testing.T) {
	rec := fold.Record{Seq: 3, Subject: walSubject(schemas.SourcePlatform, "o-1"), Data: []byte(createdBody)}
	te := fold.Step(nil, rec) // a nil state makes the resolver panic
	if te.Decision != string(resolver.Rejected) || te.Reason != fold.ReasonHandlerPanic || te.EventID != "o-1-platform-1" || te.WalSeq != 3 {
		t.Fatalf("got %+v", te)
	}
	if _, ok := fold.Apply(nil, &schemas.Event{OrderID: "o-1"}, 1); ok {
		t.Fatal("Apply reported success on a panic")
	}
}
