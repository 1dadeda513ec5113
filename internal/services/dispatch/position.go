package dispatch

import (
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"strings"
	"time"
)

// LocationsPrefix starts the firehose subjects: dashers.locations.<dasher_id>.
const LocationsPrefix = "dashers.locations."

// LocationsSubject is where dasher dasherID publishes its positions.
func LocationsSubject(dasherID string) string { return LocationsPrefix + dasherID }

var dasherIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidDasherID reports whether id can be a dasher id: the order id alphabet, so it
// is a valid subject token and KV key.
func ValidDasherID(id string) bool { return dasherIDPattern.MatchString(id) }

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

// wirePosition is the body of a location message: {"lat","lng","at","speed"}.
type wirePosition struct {
	Lat   *float64 `json:"lat"`
	Lng   *float64 `json:"lng"`
	At    *string  `json:"at"`
	Speed *float64 `json:"speed"`
}

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
	var w wirePosition
	if err := json.Unmarshal(body, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return Position{}, ReasonNonNumeric
		}
		return Position{}, ReasonMalformedJSON
	}
	if w.Lat == nil || w.Lng == nil || w.At == nil {
		return Position{}, ReasonMissingField
	}
	p := Position{Point: Point{Lat: *w.Lat, Lng: *w.Lng}}
	if w.Speed != nil {
		p.SpeedMPS = *w.Speed
	}
	switch {
	case !(p.Lat >= -90 && p.Lat <= 90):
		return Position{}, ReasonLatRange
	case !(p.Lng >= -180 && p.Lng <= 180):
		return Position{}, ReasonLngRange
	case !(p.SpeedMPS >= 0 && p.SpeedMPS <= MaxSpeedMPS) || math.IsNaN(p.SpeedMPS):
		return Position{}, ReasonSpeedRange
	}
	t, err := time.Parse(time.RFC3339Nano, *w.At)
	if err != nil {
		return Position{}, ReasonBadTime
	}
	if t.After(now.Add(MaxClockSkew)) {
		return Position{}, ReasonFuture
	}
	p.At = t
	return p, ""
}
