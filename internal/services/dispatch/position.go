package dispatch

import (
	"encoding/json"
	"math"
	"strings"
	"time"

	"github.com/orderflow/orderflow/schemas"
)

// LocationsPrefix starts the firehose subjects: dashers.locations.<dasher_id>.
const LocationsPrefix = "dashers.locations."

// LocationsSubject is where dasher dasherID publishes its positions.
func LocationsSubject(dasherID string) string { return LocationsPrefix + dasherID }

// ValidDasherID reports whether id can be a dasher id: the order id rule
// (schemas.ValidOrderID), so it is a valid subject token and KV key.
func ValidDasherID(id string) bool { return schemas.ValidOrderID(id) }

// Limits of an accepted position.
const (
	// MaxLocationBytes bounds a position message before it is parsed.
	MaxLocationBytes = 512
	// MaxClockSkew is how far in the future a device clock may be.
	MaxClockSkew = 30 * time.Second
	// MaxSpeedMPS is faster than any delivery vehicle (360 km/h): a GPS glitch.
	MaxSpeedMPS = 100
)

// Reason says why a position was dropped; it is the value of the reason label of
// orderflow_dasher_locations_rejected_total.
type Reason string

// Reasons a position is dropped.
const (
	ReasonInvalidSubject Reason = "invalid_subject"
	ReasonTooLarge       Reason = "too_large"
	ReasonMalformedJSON  Reason = "malformed_json"
	ReasonNonNumeric     Reason = "non_numeric"
	ReasonMissingField   Reason = "missing_field"
	ReasonLatRange       Reason = "lat_out_of_range"
	ReasonLngRange       Reason = "lng_out_of_range"
	ReasonSpeedRange     Reason = "speed_out_of_range"
	ReasonBadTime        Reason = "bad_time"
	ReasonFuture         Reason = "from_the_future"
)

// Reasons lists every Reason, so metrics can start each at zero.
var Reasons = []Reason{ReasonInvalidSubject, ReasonTooLarge, ReasonMalformedJSON, ReasonNonNumeric,
	ReasonMissingField, ReasonLatRange, ReasonLngRange, ReasonSpeedRange, ReasonBadTime, ReasonFuture}

// EncodePosition is the body a dasher publishes.
func EncodePosition(p Position) []byte {
	b, _ := json.Marshal(map[string]any{"lat": p.Lat, "lng": p.Lng, "at": p.At.UTC().Format(time.RFC3339Nano), "speed": p.SpeedMPS})
	return b
}

// ParseLocation reads one firehose message. now bounds `at` from above. It never
// panics; a rejected message yields the reason it was dropped.
func ParseLocation(subject string, body []byte, now time.Time) (string, Position, Reason) {
	id, ok := strings.CutPrefix(subject, LocationsPrefix)
	if !ok || !ValidDasherID(id) {
		return "", Position{}, ReasonInvalidSubject
	}
	p, r := ParsePosition(body, now)
	return id, p, r
}

// ParsePosition reads a position body; see ParseLocation.
func ParsePosition(body []byte, now time.Time) (Position, Reason) {
	if len(body) > MaxLocationBytes {
		return Position{}, ReasonTooLarge
	}
	w, reason := decodePosition(body)
	if reason != "" {
		return Position{}, reason
	}
	if !w.hasLat || !w.hasLng || !w.hasAt {
		return Position{}, ReasonMissingField
	}
	p := Position{Point: Point{Lat: w.lat, Lng: w.lng}, SpeedMPS: w.speed}
	switch {
	case !(p.Lat >= -90 && p.Lat <= 90):
		return Position{}, ReasonLatRange
	case !(p.Lng >= -180 && p.Lng <= 180):
		return Position{}, ReasonLngRange
	case !(p.SpeedMPS >= 0 && p.SpeedMPS <= MaxSpeedMPS) || math.IsNaN(p.SpeedMPS):
		return Position{}, ReasonSpeedRange
	}
	t, err := time.Parse(time.RFC3339Nano, w.at)
	if err != nil {
		return Position{}, ReasonBadTime
	}
	if t.After(now.Add(MaxClockSkew)) {
		return Position{}, ReasonFuture
	}
	p.At = t
	return p, ""
}
