package dispatch

import (
	"math"
	"testing"
)

// FuzzDecodePosition holds the hand-written position reader to encoding/json: the
// same reason on every input and, when accepted, the same fields and values.
func FuzzDecodePosition(f *testing.F) {
	for _, s := range []string{
		`{"lat":52.52,"lng":13.405,"at":"2026-12-01T12:00:00Z","speed":7.5}`,
		`{"speed":0,"at":"2026-12-01T12:00:00.123456789+02:00","lng":-180,"lat":-90}`,
		" \t\r\n{ \"lat\" : 1e2 , \"lng\" :-0.5E-3,\"at\":\"x\" } \n",
		`{"LAT":1,"Lng":2,"aT":"x","SPEED":3}`,
		`{"lat":1,"lat":2,"lng":null,"lng":3,"at":"a","at":null}`,
		`{"lat":"1","lng":1,"at":"x"}`, `{"lat":true,"lng":1,"at":"x"}`, `{"lat":1,"lng":1,"at":5}`,
		`{"lat":1,"lng":1,"at":false}`, `{"lat":1e400,"lng":1,"at":"x"}`, `{"lat":1e-400,"lng":1,"at":"x"}`,
		`{"lat":-0,"lng":0.0,"at":""}`, `{"lat":01,"lng":1,"at":"x"}`, `{"lat":1.,"lng":1,"at":"x"}`,
		`{"lat":.5,"lng":1,"at":"x"}`, `{"lat":+1,"lng":1,"at":"x"}`, `{"lat":1e,"lng":1,"at":"x"}`,
		`{"lat":-,"lng":1,"at":"x"}`, `{"lat":NaN,"lng":1,"at":"x"}`, `{"lat":Infinity}`,
		`{"lat":1,"lng":1,"at":"x",}`, `{"lat":1 "lng":1}`, `{"lat":1,"lng":1,"at":"x"}x`,
		`{"lat":1,"lng":1,"at":"x"}{}`, `{}`, `{ }`, `null`, `[1]`, `1`, `"s"`, `true`, ``, ` `,
		`{"lat":[1],"lng":{},"at":1}`, `{"pad":"x","lat":1,"lng":1,"at":"x"}`, `{"lat":1,"lng":1,"at":"x","extra":{"a":[1,2]}}`,
		`{"l\u0061t":1,"lng":1,"at":"x"}`, `{"lat":1,"lng":1,"at":"2026-12-01T12:00:00\u005a"}`,
		"{\"lat\":1,\"lng\":1,\"at\":\"a\tb\"}", "{\"\u017fpeed\":1,\"lat\":1,\"lng\":1,\"at\":\"x\"}",
		"{\"lat\":1,\"lng\":1,\"at\":\"\xff\"}", `{"lat":1,"lng":1,"at":"x"`, `{"lat":1,"lng":1,"at":"x`,
		`{"lat":nul,"lng":1}`, `{"lat":null}`, `{"lat":truex}`, `{"lat":tru}`, `{"":1}`, `{"lat"}`, `{"lat":}`,
		`{"at":null,"at":"x","lat":1,"lng":2}`, `{"lat":1,"lng":2,"at":"x","speed":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, gr := decodePosition(body)
		want, wr := jsonDecodePosition(body)
		if gr != wr {
			t.Fatalf("%q: reason %q, encoding/json says %q", body, gr, wr)
		}
		if gr != "" {
			return
		}
		same := func(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }
		if got.hasLat != want.hasLat || got.hasLng != want.hasLng || got.hasAt != want.hasAt || got.hasSpeed != want.hasSpeed ||
			!same(got.lat, want.lat) || !same(got.lng, want.lng) || !same(got.speed, want.speed) || got.at != want.at {
			t.Fatalf("%q: decoded %+v, encoding/json says %+v", body, got, want)
		}
	})
}
