package schemas

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func validEvent() *Event {
	eta := time.Date(2025, 3, 1, 12, 35, 0, 0, time.UTC)
	return &Event{
		SchemaVersion: SchemaVersion, EventID: "evt-1", OrderID: "ord_1", Source: SourceAgent,
		SourceSeq: 7, OccurredAt: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), Status: StatusCancelled,
		ETA: &eta, ActorID: "agent-1", CustomerID: "c", RestaurantID: "r", DasherID: "d",
		Reason: "customer asked", Observed: map[Source]uint64{SourceDriver: 3, SourcePlatform: 0},
	}
}

func paths(ps Problems) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Path)
	}
	return out
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(e *Event)
		paths []string
	}{
		{"valid", func(e *Event) {}, nil},
		{"zero event", func(e *Event) { *e = Event{} },
			[]string{"/schema_version", "/event_id", "/order_id", "/source", "/source_seq", "/occurred_at", ""}},
		{"schema version", func(e *Event) { e.SchemaVersion = 2 }, []string{"/schema_version"}},
		{"invalid UTF-8 id", func(e *Event) { e.EventID = "evt-\xff" }, []string{"/event_id"}},
		{"U+FFFD is a character", func(e *Event) { e.EventID = "evt-\uFFFD" }, nil},
		{"control character", func(e *Event) { e.DasherID = "d\x00" }, []string{"/dasher_id"}},
		{"65 code points", func(e *Event) { e.ActorID = strings.Repeat("é", 65) }, []string{"/actor_id"}},
		{"64 code points", func(e *Event) { e.ActorID = strings.Repeat("é", 64) }, nil},
		{"order id", func(e *Event) { e.OrderID = "a/b" }, []string{"/order_id"}},
		{"source", func(e *Event) { e.Source = "courier" }, []string{"/source"}},
		{"status", func(e *Event) { e.Status = "lost" }, []string{"/status"}},
		{"seq too large", func(e *Event) { e.SourceSeq = MaxCounter + 1 }, []string{"/source_seq"}},
		{"year 10000", func(e *Event) { e.OccurredAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, []string{"/occurred_at"}},
		{"offset with seconds", func(e *Event) {
			t := e.ETA.In(time.FixedZone("", 30))
			e.ETA = &t
		}, []string{"/eta"}},
		{"eta only", func(e *Event) { e.Status = "" }, nil},
		{"neither status nor eta", func(e *Event) { e.Status, e.ETA = "", nil }, []string{""}},
		{"agent without reason", func(e *Event) { e.Reason = "" }, []string{"/reason"}},
		{"driver without reason", func(e *Event) { e.Source, e.Reason = SourceDriver, "" }, nil},
		{"observed", func(e *Event) { e.Observed = map[Source]uint64{"x/y": 1, "a": 1, SourceDriver: MaxCounter + 1} },
			[]string{"/observed/a", "/observed/x~1y", "/observed/driver"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := validEvent()
			tt.edit(e)
			if got := paths(e.Validate()); !slices.Equal(got, tt.paths) {
				t.Fatalf("paths %q, want %q: %v", got, tt.paths, e.Validate())
			}
		})
	}
}

func TestValidateAgreesWithDecode(t *testing.T) {
	e := validEvent()
	body, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(Subject(e.Source, e.OrderID), body)
	if err != nil {
		t.Fatal(err)
	}
	if !eventsEqual(got, e) {
		t.Fatalf("decoded %+v, want %+v", got, e)
	}
}

func TestSubject(t *testing.T) {
	s := Subject(SourceMerchant, "ord-9_Z")
	if s != "orders.events.merchant.ord-9_Z" {
		t.Fatalf("Subject = %q", s)
	}
	src, id, err := ParseSubject(s)
	if err != nil || src != SourceMerchant || id != "ord-9_Z" {
		t.Fatalf("ParseSubject = %q %q %v", src, id, err)
	}
	for _, bad := range []string{
		"", "orders.events.", "orders.events.merchant", "orders.events.merchant.", "orders.events.Merchant.o",
		"orders.events.merchant.o.p", "orders.events.merchant.o*", "orders.events.merchant." + strings.Repeat("o", 65),
		"x.orders.events.merchant.o", "orders.events.*.o", "orders.events.merchant.>",
	} {
		_, _, err := ParseSubject(bad)
		if ps, ok := err.(Problems); !ok || len(ps) != 1 || ps[0].Path != "subject" {
			t.Errorf("ParseSubject(%q) = %v, want one subject problem", bad, err)
		}
	}
}

func TestIntegerValue(t *testing.T) {
	const lim = MaxCounter + 1
	tests := []struct {
		in   string
		v    int64
		isOK bool
	}{
		{"0", 0, true}, {"-0", 0, true}, {"7", 7, true}, {"-7", -7, true},
		{"1.0", 1, true}, {"1.000", 1, true}, {"1.5", 0, false}, {"0.1", 0, false},
		{"1e0", 1, true}, {"1E2", 100, true}, {"1e+2", 100, true}, {"100e-2", 1, true}, {"150e-2", 0, false},
		{"0.5e1", 5, true}, {"0.05e1", 0, false}, {"0e-999999999", 0, true}, {"0.000", 0, true},
		{"9007199254740991", MaxCounter, true}, {"9007199254740992", lim, true},
		{"-9007199254740993", -lim, true}, {"1e16", lim, true}, {"1e999999999999", lim, true},
		{"1e-999999999999", 0, false}, {"123456789012345678901234567890", lim, true},
		{"9007199254740991.0000000000000000001", 0, false}, {"0.9007199254740991e16", MaxCounter, true},
	}
	for _, tt := range tests {
		v, ok := integerValue([]byte(tt.in))
		if v != tt.v || ok != tt.isOK {
			t.Errorf("integerValue(%s) = %d %v, want %d %v", tt.in, v, ok, tt.v, tt.isOK)
		}
	}
}

func TestParseTime(t *testing.T) {
	good := map[string]string{ // input: the instant in UTC, RFC 3339 with nanoseconds
		"2025-03-01T12:00:00Z":                 "2025-03-01T12:00:00Z",
		"2025-03-01t12:00:00z":                 "2025-03-01T12:00:00Z",
		"2025-03-01T12:00:00.5+01:30":          "2025-03-01T10:30:00.5Z",
		"2025-03-01T12:00:00.1234567891-00:00": "2025-03-01T12:00:00.123456789Z",
		"2024-02-29T00:00:00Z":                 "2024-02-29T00:00:00Z",
		"2000-02-29T00:00:00Z":                 "2000-02-29T00:00:00Z",
		"0000-01-01T00:00:00+23:59":            "-0001-12-31T00:01:00Z",
		"2016-12-31T23:59:60Z":                 "2016-12-31T23:59:59.999999999Z",
		"2017-01-01T00:59:60+01:00":            "2016-12-31T23:59:59.999999999Z",
	}
	for in, want := range good {
		got, ok := parseTime([]byte(in))
		if !ok || got.UTC().Format(time.RFC3339Nano) != want {
			t.Errorf("parseTime(%s) = %v %v, want %s", in, got.UTC().Format(time.RFC3339Nano), ok, want)
		}
	}
	for _, in := range []string{
		"", "2025-03-01", "2025-03-01T12:00:00", "2025-03-01 12:00:00Z", "2025-03-01T12:00:00.Z",
		"2025-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2025-04-31T00:00:00Z", "2025-13-01T00:00:00Z",
		"2025-00-01T00:00:00Z", "2025-03-00T00:00:00Z", "2025-03-01T24:00:00Z", "2025-03-01T12:60:00Z",
		"2025-03-01T12:00:61Z", "2025-03-01T12:59:60Z", "2025-03-01T12:00:00+24:00", "2025-03-01T12:00:00+01:60",
		"2025-03-01T12:00:00+0100", "2025-03-01T12:00:00UTC", "+025-03-01T12:00:00Z", "2025-03-01T12:00:00Zx",
		"2025-03-01T12:00:00.1.2Z", "2025-3-01T12:00:00Z", "2025-03-01T1:00:00Z",
	} {
		if got, ok := parseTime([]byte(in)); ok {
			t.Errorf("parseTime(%q) = %v, want an error", in, got)
		}
	}
}

func TestDecodeEdges(t *testing.T) {
	good := `{"schema_version":1,"event_id":"e","order_id":"o","source":"driver","source_seq":1,"occurred_at":"2025-03-01T12:00:00Z","status":"arrived"}`
	const subject = "orders.events.driver.o"
	tests := []struct {
		name  string
		body  string
		paths []string
	}{
		{"good", good, nil},
		{"padded to the limit", good + strings.Repeat(" ", MaxEventBytes-len(good)), nil},
		{"over the limit", good + strings.Repeat(" ", MaxEventBytes-len(good)+1), []string{""}},
		{"invalid UTF-8", strings.Replace(good, `"e"`, "\"e\xff\"", 1), []string{""}},
		{"escaped key", strings.Replace(good, `"status"`, `"st\u0061tus"`, 1), nil},
		{"escaped control character", strings.Replace(good, `"e"`, `"e\n"`, 1), []string{"/event_id"}},
		{"raw control character", strings.Replace(good, `"e"`, "\"e\n\"", 1), []string{""}},
		{"deep nesting in an unknown field", strings.Replace(good, `{`, `{"x":`+strings.Repeat("[", 100)+strings.Repeat("]", 100)+`,`, 1), []string{""}},
		{"nesting in an unknown field", strings.Replace(good, `{`, `{"a/~b":[{"c":[true,false,null,-1.5e3,"s"]}],`, 1), []string{"/a~1~0b"}},
		{"null body", `null`, []string{""}},
		{"trailing comma", strings.Replace(good, `}`, `,}`, 1), []string{""}},
		{"leading zero", strings.Replace(good, `"source_seq":1`, `"source_seq":01`, 1), []string{""}},
		{"observed duplicate", strings.Replace(good, `{`, `{"observed":{"driver":1,"driver":2},`, 1), []string{"/observed/driver"}},
		{"observed too large", strings.Replace(good, `{`, `{"observed":{"driver":1e16},`, 1), []string{"/observed/driver"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(subject, []byte(tt.body))
			var ps Problems
			if err != nil {
				ps = err.(Problems)
			}
			if got := paths(ps); !slices.Equal(got, tt.paths) {
				t.Fatalf("paths %q, want %q: %v", got, tt.paths, err)
			}
		})
	}
}

func TestProblemsError(t *testing.T) {
	err := error(Problems{{"", "must have status or eta (or both)"}, {"/reason", "is required for agent events"}})
	want := "invalid event: (body): must have status or eta (or both); /reason: is required for agent events"
	if err.Error() != want {
		t.Fatalf("%q", err.Error())
	}
}

// eventsEqual compares events field by field, times as instants in the same offset.
func eventsEqual(a, b *Event) bool {
	sameTime := func(x, y time.Time) bool {
		_, ox := x.Zone()
		_, oy := y.Zone()
		return x.Equal(y) && ox == oy
	}
	if !sameTime(a.OccurredAt, b.OccurredAt) || (a.ETA == nil) != (b.ETA == nil) || a.ETA != nil && !sameTime(*a.ETA, *b.ETA) {
		return false
	}
	x, y := *a, *b
	x.OccurredAt, y.OccurredAt, x.ETA, y.ETA = time.Time{}, time.Time{}, nil, nil
	return reflect.DeepEqual(x, y)
}

func BenchmarkDecode(b *testing.B) {
	body := []byte(`{"schema_version":1,"event_id":"01JNB8ZQ4V3M6K9X2T7R5W1Y0C","order_id":"ord_8f3a2c","source":"driver",` +
		`"source_seq":12,"occurred_at":"2025-03-01T12:00:00.123Z","status":"picked_up","eta":"2025-03-01T12:35:00+01:00",` +
		`"actor_id":"dasher-7","dasher_id":"dasher-7","observed":{"platform":1,"merchant":4}}`)
	subject := "orders.events.driver.ord_8f3a2c"
	b.Run("Decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, err := Decode(subject, body); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The baselines: what encoding/json alone costs (no validation), and the generic
	// JSON Schema validator this package avoids on the hot path.
	b.Run("encoding-json-unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var e Event
			if err := json.Unmarshal(body, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("jsonschema-validate", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if ok, err := schemaAccepts(b, body); !ok {
				b.Fatal(err)
			}
		}
	})
	bad := bytes.Replace(body, []byte(`"source_seq":12`), []byte(`"source_seq":0,"x":1`), 1)
	b.Run("Decode-invalid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Decode(subject, bad); err == nil {
				b.Fatal("accepted")
			}
		}
	})
}
