package dispatch

import (
	"encoding/json"
	"errors"
	"strconv"
)

// decodedPosition is a position body's fields; has* say which were present and not null.
type decodedPosition struct {
	lat, lng, speed                 float64
	at                              string
	hasLat, hasLng, hasAt, hasSpeed bool
}

// decodePosition reads a position body as json.Unmarshal into wirePosition would, and says
// why it could not: ReasonMalformedJSON for a syntax error, ReasonNonNumeric for a
// value of the wrong type (a number out of float64 range included).
//
// The firehose's bodies are all the same small flat object, and encoding/json's
// reflection was most of the cost of an update, so the common shape is read by
// hand: an object whose keys are lat, lng, at and speed (any order, any ASCII
// case, as encoding/json matches them), with numbers, plain strings, null, true or
// false as values. Anything else (escapes, non-ASCII bytes, other keys, nested
// values, a syntax error) goes to encoding/json, so the hand-written reader only
// has to be right on a subset of JSON; FuzzDecodePosition holds it to agreeing
// with encoding/json on every input.
func decodePosition(body []byte) (decodedPosition, Reason) {
	d := positionDecoder{b: body}
	switch d.decode() {
	case fastOK:
		return d.out, ""
	case fastTypeError:
		return decodedPosition{}, ReasonNonNumeric
	}
	return jsonDecodePosition(body)
}

// wirePosition is the body of a location message as encoding/json reads it.
type wirePosition struct {
	Lat   *float64 `json:"lat"`
	Lng   *float64 `json:"lng"`
	At    *string  `json:"at"`
	Speed *float64 `json:"speed"`
}

// jsonDecodePosition is decodePosition by encoding/json alone.
func jsonDecodePosition(body []byte) (decodedPosition, Reason) {
	var w wirePosition
	if err := json.Unmarshal(body, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return decodedPosition{}, ReasonNonNumeric
		}
		return decodedPosition{}, ReasonMalformedJSON
	}
	var out decodedPosition
	if w.Lat != nil {
		out.lat, out.hasLat = *w.Lat, true
	}
	if w.Lng != nil {
		out.lng, out.hasLng = *w.Lng, true
	}
	if w.Speed != nil {
		out.speed, out.hasSpeed = *w.Speed, true
	}
	if w.At != nil {
		out.at, out.hasAt = *w.At, true
	}
	return out, ""
}

type fastResult int

const (
	fastOK        fastResult = iota
	fastTypeError            // valid JSON, a known field of the wrong type
	fastGiveUp               // not the common shape: ask encoding/json
)

// positionDecoder is the hand-written reader's cursor over one body.
type positionDecoder struct {
	b   []byte
	i   int
	out decodedPosition
}

func (d *positionDecoder) decode() fastResult {
	for _, c := range d.b {
		if c >= 0x80 || c == '\\' {
			return fastGiveUp
		}
	}
	typeErr := false
	d.space()
	if !d.eat('{') {
		return fastGiveUp
	}
	d.space()
	if d.eat('}') {
		return d.end(typeErr)
	}
	for {
		d.space()
		key, ok := d.str()
		if !ok {
			return fastGiveUp
		}
		d.space()
		if !d.eat(':') {
			return fastGiveUp
		}
		d.space()
		var r fastResult
		switch {
		case foldEqual(key, "lat"):
			r = d.number(&d.out.lat, &d.out.hasLat)
		case foldEqual(key, "lng"):
			r = d.number(&d.out.lng, &d.out.hasLng)
		case foldEqual(key, "speed"):
			r = d.number(&d.out.speed, &d.out.hasSpeed)
		case foldEqual(key, "at"):
			r = d.text()
		default:
			return fastGiveUp
		}
		switch r {
		case fastGiveUp:
			return fastGiveUp
		case fastTypeError:
			typeErr = true
		}
		d.space()
		if d.eat(',') {
			continue
		}
		if d.eat('}') {
			return d.end(typeErr)
		}
		return fastGiveUp
	}
}

// end accepts only trailing whitespace, as json.Unmarshal does.
func (d *positionDecoder) end(typeErr bool) fastResult {
	d.space()
	switch {
	case d.i != len(d.b):
		return fastGiveUp
	case typeErr:
		return fastTypeError
	}
	return fastOK
}

func (d *positionDecoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *positionDecoder) eat(c byte) bool {
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// str reads a string without escapes (the caller ruled them out) or control bytes.
func (d *positionDecoder) str() ([]byte, bool) {
	if !d.eat('"') {
		return nil, false
	}
	start := d.i
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			return d.b[start : d.i-1], true
		case c < 0x20:
			return nil, false
		}
		d.i++
	}
	return nil, false
}

// literal reads null, true or false; null says so.
func (d *positionDecoder) literal() (isNull bool, r fastResult) {
	for _, lit := range [...]string{"null", "true", "false"} {
		if len(d.b)-d.i >= len(lit) && string(d.b[d.i:d.i+len(lit)]) == lit {
			d.i += len(lit)
			return lit == "null", fastTypeError
		}
	}
	return false, fastGiveUp
}

// other reads a scalar that is not of the field's type: a string, true or false
// is a type error, null clears the field (as encoding/json sets a pointer to nil).
func (d *positionDecoder) other() (isNull bool, r fastResult) {
	if d.i < len(d.b) && d.b[d.i] == '"' {
		if _, ok := d.str(); !ok {
			return false, fastGiveUp
		}
		return false, fastTypeError
	}
	return d.literal()
}

func (d *positionDecoder) number(v *float64, has *bool) fastResult {
	start := d.i
	if !d.scanNumber() {
		d.i = start
		isNull, r := d.other()
		if isNull {
			*v, *has = 0, false
			return fastOK
		}
		return r
	}
	f, err := strconv.ParseFloat(string(d.b[start:d.i]), 64)
	if err != nil {
		return fastTypeError // out of range, as encoding/json reports it
	}
	*v, *has = f, true
	return fastOK
}

func (d *positionDecoder) text() fastResult {
	if d.i < len(d.b) && d.b[d.i] == '"' {
		s, ok := d.str()
		if !ok {
			return fastGiveUp
		}
		d.out.at, d.out.hasAt = string(s), true
		return fastOK
	}
	start := d.i
	if d.scanNumber() {
		return fastTypeError
	}
	d.i = start
	isNull, r := d.literal()
	if isNull {
		d.out.at, d.out.hasAt = "", false
		return fastOK
	}
	return r
}

// scanNumber moves past a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *positionDecoder) scanNumber() bool {
	b, i := d.b, d.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return false
		}
		i = j
	}
	d.i = i
	return true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// foldEqual reports whether ASCII key equals name (lower case) ignoring ASCII case,
// which is how encoding/json matches a field for ASCII keys.
func foldEqual(key []byte, name string) bool {
	if len(key) != len(name) {
		return false
	}
	for i := range key {
		c := key[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}
