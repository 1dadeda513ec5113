package dispatch

import (
	"testing"
	"time"
)

func TestParseLocation(t *testing.T) {
	now := t0
	ok := `{"lat":52.52,"lng":13.405,"at":"2026-12-01T12:00:00Z","speed":7.5}`
	cases := []struct {
		name, subject, body string
		want                Reason
	}{
		{"valid", "dashers.locations.d-1", ok, ""},
		{"valid without speed", "dashers.locations.d-1", `{"lat":-90,"lng":180,"at":"2026-12-01T11:00:00Z"}`, ""},
		{"subject", "dashers.locations.d.1", ok, ReasonInvalidSubject},
		{"empty id", "dashers.locations.", ok, ReasonInvalidSubject},
		{"other subject", "orders.events.platform.o1", ok, ReasonInvalidSubject},
		{"not json", "dashers.locations.d1", `lat=1`, ReasonMalformedJSON},
		{"truncated", "dashers.locations.d1", `{"lat":1,`, ReasonMalformedJSON},
		{"string lat", "dashers.locations.d1", `{"lat":"52.5","lng":13.4,"at":"2026-12-01T12:00:00Z"}`, ReasonNonNumeric},
		{"NaN as text", "dashers.locations.d1", `{"lat":NaN,"lng":13.4,"at":"2026-12-01T12:00:00Z"}`, ReasonMalformedJSON},
		{"missing at", "dashers.locations.d1", `{"lat":1,"lng":1}`, ReasonMissingField},
		{"null lng", "dashers.locations.d1", `{"lat":1,"lng":null,"at":"2026-12-01T12:00:00Z"}`, ReasonMissingField},
		{"lat", "dashers.locations.d1", `{"lat":90.0001,"lng":1,"at":"2026-12-01T12:00:00Z"}`, ReasonLatRange},
		{"lng", "dashers.locations.d1", `{"lat":1,"lng":-180.5,"at":"2026-12-01T12:00:00Z"}`, ReasonLngRange},
		{"huge", "dashers.locations.d1", `{"lat":1e400,"lng":1,"at":"2026-12-01T12:00:00Z"}`, ReasonNonNumeric},
		{"speed", "dashers.locations.d1", `{"lat":1,"lng":1,"at":"2026-12-01T12:00:00Z","speed":-1}`, ReasonSpeedRange},
		{"time", "dashers.locations.d1", `{"lat":1,"lng":1,"at":"yesterday"}`, ReasonBadTime},
		{"future", "dashers.locations.d1", `{"lat":1,"lng":1,"at":"2026-12-01T12:01:00Z"}`, ReasonFuture},
		{"too large", "dashers.locations.d1", `{"lat":1,"lng":1,"at":"2026-12-01T12:00:00Z","pad":"` + string(make([]byte, 600)) + `"}`, ReasonTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, got := ParseLocation(c.subject, []byte(c.body), now)
			if got != c.want {
				t.Fatalf("reason %q, want %q", got, c.want)
			}
		})
	}
	id, p, _ := ParseLocation("dashers.locations.d-1", []byte(ok), now)
	if id != "d-1" || p.Lat != 52.52 || p.Lng != 13.405 || p.SpeedMPS != 7.5 || !p.At.Equal(now) {
		t.Fatalf("parsed %s %+v", id, p)
	}
	back, r := ParsePosition(EncodePosition(p), now)
	if r != "" || back != p {
		t.Fatalf("round trip: %+v %q, want %+v", back, r, p)
	}
}

func FuzzParseLocation(f *testing.F) {
	f.Add([]byte(`{"lat":52.52,"lng":13.405,"at":"2026-12-01T12:00:00Z","speed":7.5}`))
	f.Add([]byte(`{"lat":[1],"lng":{},"at":1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, p, r := ParseLocation("dashers.locations.d1", body, t0)
		if r == "" && !p.Valid() {
			t.Fatalf("accepted an invalid position %+v", p)
		}
	})
}

func TestDeadBand(t *testing.T) {
	d := DefaultDeadBand
	last := Position{Point: Point{Lat: 10, Lng: 10}, At: t0, SpeedMPS: 8}
	move := func(m float64, s time.Duration, speed float64) Position {
		return Position{Point: Destination(last.Point, 45, m), At: t0.Add(s), SpeedMPS: speed}
	}
	cases := []struct {
		name string
		cur  Position
		want bool
	}{
		{"first", move(0, 0, 0), true},
		{"parked", move(5, 5*time.Second, 8), false},
		{"moved", move(30, 2*time.Second, 8), true},
		{"stopped", move(2, time.Second, 0), true},
		{"heartbeat", move(0, 15*time.Second, 8), true},
	}
	for _, c := range cases {
		l := last
		if c.name == "first" {
			l = Position{}
		}
		if got := d.ShouldSend(l, c.cur); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
