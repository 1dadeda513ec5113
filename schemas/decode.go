package schemas

import (
	"strconv"
	"time"
)

// Decode parses and validates one event published on subject, the hot path of the
// pipeline. It reports every problem at once (as Problems): malformed JSON, a body
// over MaxEventBytes, unknown, duplicate, missing or mistyped fields, out-of-range
// values, and a body whose source or order_id differs from the subject's. It reads
// the bytes in one pass instead of running a generic JSON Schema validator, which
// costs about fifteen times more (BenchmarkDecode). It never panics and keeps no reference to body.
func Decode(subject string, body []byte) (*Event, error) {
	src, orderID, err := ParseSubject(subject)
	var ps Problems
	if err != nil {
		ps = err.(Problems)
	}
	e := new(Event)
	e.decodeBody(body, orderID, &ps)
	// Only a well-formed body value is compared: a malformed one is reported already.
	if err == nil && e.Source.Valid() && e.Source != src {
		ps.add(fieldPaths[fSource], strconv.Quote(string(e.Source))+" differs from the subject's source "+strconv.Quote(string(src)))
	}
	if err == nil && ValidOrderID(e.OrderID) && e.OrderID != orderID {
		ps.add(fieldPaths[fOrderID], strconv.Quote(e.OrderID)+" differs from the subject's order id "+strconv.Quote(orderID))
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return e, nil
}

// decodeBody fills e from body and appends every problem with the body alone
// (no subject) to ps: exactly what event.schema.json decides, plus duplicate keys,
// invalid UTF-8 and the size limit, which JSON Schema cannot see. An order_id equal
// to knownOrderID shares its memory instead of allocating.
func (e *Event) decodeBody(body []byte, knownOrderID string, ps *Problems) {
	if len(body) > MaxEventBytes {
		ps.add("", "is "+strconv.Itoa(len(body))+" bytes, more than the "+strconv.Itoa(MaxEventBytes)+" allowed")
		return
	}
	d := decoder{scanner: scanner{data: body}, e: e, knownOrderID: knownOrderID}
	if !d.object() {
		ps.add("", "invalid JSON: "+d.errMsg+" at byte "+strconv.Itoa(d.pos))
		return
	}
	*ps = append(*ps, d.ps...)
	if !d.notObject {
		e.check(d.seen, d.done, ps)
	}
}

// decoder walks one event body; every method returns false only on a JSON syntax
// error, after which nothing else is reported.
type decoder struct {
	scanner
	e    *Event
	seen fieldSet // fields present in the body
	// done holds the fields the decoder already judged: those with a type problem,
	// and observed, which it checks entry by entry so one bad entry hides no other.
	done         fieldSet
	ps           Problems
	notObject    bool
	knownOrderID string
}

func (d *decoder) object() bool {
	d.ws()
	if d.peek() != '{' {
		if !d.value(0) || !d.end() {
			return false
		}
		d.notObject = true
		d.ps.add("", "must be a JSON object")
		return true
	}
	d.pos++
	ok := d.members(func(key []byte) bool {
		f, known := lookupField(key)
		switch {
		case !known:
			d.ps.add("/"+escapePointer(string(key)), "is not a known field")
			return d.value(0)
		case d.seen.has(f):
			d.ps.add(fieldPaths[f], "appears more than once")
			return d.value(0)
		}
		d.seen |= 1 << f
		return d.field(f)
	})
	return ok && d.end()
}

// members reads "key": value pairs up to the closing brace, calling member with
// the pos on the value.
func (d *decoder) members(member func(key []byte) bool) bool {
	d.ws()
	if d.peek() == '}' {
		d.pos++
		return true
	}
	for {
		d.ws()
		if d.peek() != '"' {
			return d.fail("expected a string key")
		}
		key, ok := d.str()
		if !ok {
			return false
		}
		d.ws()
		if d.peek() != ':' {
			return d.fail("expected ':'")
		}
		d.pos++
		d.ws()
		if !member(key) {
			return false
		}
		d.ws()
		switch d.peek() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			return true
		default:
			return d.fail("expected ',' or '}'")
		}
	}
}

func lookupField(key []byte) (field, bool) {
	switch string(key) {
	case "schema_version":
		return fSchemaVersion, true
	case "event_id":
		return fEventID, true
	case "order_id":
		return fOrderID, true
	case "source":
		return fSource, true
	case "source_seq":
		return fSourceSeq, true
	case "occurred_at":
		return fOccurredAt, true
	case "status":
		return fStatus, true
	case "eta":
		return fETA, true
	case "actor_id":
		return fActorID, true
	case "customer_id":
		return fCustomerID, true
	case "restaurant_id":
		return fRestaurantID, true
	case "dasher_id":
		return fDasherID, true
	case "reason":
		return fReason, true
	case "observed":
		return fObserved, true
	}
	return 0, false
}

// field decodes the value of f. Type problems are reported here and mark f done;
// value rules are left to check, shared with Validate.
func (d *decoder) field(f field) bool {
	e := d.e
	switch f {
	case fSchemaVersion, fSourceSeq:
		v, ok, syntaxOK := d.integer()
		if !ok {
			d.badField(f, fieldPaths[f], "must be an integer")
		} else {
			if f == fSchemaVersion {
				e.SchemaVersion = int(v)
			} else {
				e.SourceSeq = uint64(max(v, 0)) // check says ">= 1" for 0 and below
			}
		}
		return syntaxOK
	case fOccurredAt, fETA:
		s, ok, syntaxOK := d.text(f)
		if !ok {
			return syntaxOK
		}
		t, ok := parseTime(s)
		if !ok {
			d.badField(f, fieldPaths[f], "must be an RFC 3339 date-time")
			return true
		}
		if y := t.UTC().Year(); y < 0 || y > 9999 {
			// Valid text, but an instant RFC 3339 cannot write in UTC, which is how
			// orderflow stores and re-encodes times.
			d.badField(f, fieldPaths[f], "must be an instant within years 0000..9999 in UTC")
			return true
		}
		if f == fOccurredAt {
			e.OccurredAt = t
		} else {
			e.ETA = &t
		}
		return true
	case fObserved:
		return d.observed()
	}
	s, ok, syntaxOK := d.text(f)
	if !ok {
		return syntaxOK
	}
	switch f {
	case fEventID:
		e.EventID = string(s)
	case fOrderID:
		e.OrderID = d.knownOrderID
		if string(s) != d.knownOrderID {
			e.OrderID = string(s)
		}
	case fSource:
		e.Source = internSource(s)
	case fStatus:
		e.Status = internStatus(s)
	case fActorID:
		e.ActorID = string(s)
	case fCustomerID:
		e.CustomerID = string(s)
	case fRestaurantID:
		e.RestaurantID = string(s)
	case fDasherID:
		e.DasherID = string(s)
	case fReason:
		e.Reason = string(s)
	}
	return true
}

func (d *decoder) badField(f field, path, msg string) {
	d.done |= 1 << f
	d.ps.add(path, msg)
}

// text reads a string value (ok), or reports a type problem and skips the value.
func (d *decoder) text(f field) (s []byte, ok, syntaxOK bool) {
	if d.peek() != '"' {
		d.badField(f, fieldPaths[f], "must be a string")
		return nil, false, d.value(0)
	}
	s, syntaxOK = d.str()
	return s, syntaxOK, syntaxOK
}

// integer reads a value that must be a JSON number whose value is an integer (1,
// 1.0 and 1e0 alike, as in JSON Schema), clamped to ±(MaxCounter+1); ok is false
// for any other value, which it skips.
func (d *decoder) integer() (v int64, ok, syntaxOK bool) {
	if c := d.peek(); c != '-' && (c < '0' || c > '9') {
		return 0, false, d.value(0)
	}
	n, syntaxOK := d.num()
	if !syntaxOK {
		return 0, false, false
	}
	v, ok = integerValue(n)
	return v, ok, true
}

func (d *decoder) observed() bool {
	if d.peek() != '{' {
		d.badField(fObserved, fieldPaths[fObserved], "must be an object")
		return d.value(0)
	}
	d.pos++
	d.done |= 1 << fObserved
	var seen uint8
	return d.members(func(key []byte) bool {
		path := func() string { return fieldPaths[fObserved] + "/" + escapePointer(string(key)) }
		src := internSource(key)
		i := sourceIndex(src)
		switch {
		case i < 0:
			d.ps.add(path(), msgSources)
			return d.value(0)
		case seen&(1<<i) != 0:
			d.ps.add(path(), "appears more than once")
			return d.value(0)
		}
		seen |= 1 << i
		v, ok, syntaxOK := d.integer()
		switch {
		case !ok:
			d.ps.add(path(), "must be an integer")
		case v < 0:
			d.ps.add(path(), "must be >= 0")
		case v > MaxCounter:
			d.ps.add(path(), msgMaxCount)
		default:
			if d.e.Observed == nil {
				d.e.Observed = make(map[Source]uint64, len(Sources))
			}
			d.e.Observed[src] = uint64(v)
		}
		return syntaxOK
	})
}

func sourceIndex(s Source) int {
	for i, v := range Sources {
		if v == s {
			return i
		}
	}
	return -1
}

// internSource returns the constant for a known source, so decoding allocates nothing for it.
func internSource(b []byte) Source {
	for _, s := range Sources {
		if string(s) == string(b) {
			return s
		}
	}
	return Source(b)
}

// internStatus returns the constant for a known status, so decoding allocates nothing for it.
func internStatus(b []byte) Status {
	for _, s := range Statuses {
		if string(s) == string(b) {
			return s
		}
	}
	return Status(b)
}

// integerValue returns the integer value of a JSON number (grammar already checked)
// clamped to ±(MaxCounter+1), and false when it has a fractional part. It is exact
// for any notation, where strconv.ParseFloat would round.
func integerValue(n []byte) (int64, bool) {
	neg := n[0] == '-'
	if neg {
		n = n[1:]
	}
	i := 0
	for i < len(n) && n[i] >= '0' && n[i] <= '9' {
		i++
	}
	intPart, n := n[:i], n[i:]
	var frac []byte
	if len(n) > 0 && n[0] == '.' {
		j := 1
		for j < len(n) && n[j] >= '0' && n[j] <= '9' {
			j++
		}
		frac, n = n[1:j], n[j:]
	}
	exp := 0
	if len(n) > 0 { // e or E, sign, digits
		n = n[1:]
		expNeg := n[0] == '-'
		if n[0] == '-' || n[0] == '+' {
			n = n[1:]
		}
		for _, c := range n {
			exp = min(exp*10+int(c-'0'), 1<<20) // saturate: beyond any body's digit count
		}
		if expNeg {
			exp = -exp
		}
	}
	// The digits intPart+frac, digit k having place value 10^(len(intPart)-1-k+exp).
	digit := func(k int) byte {
		if k < len(intPart) {
			return intPart[k]
		}
		return frac[k-len(intPart)]
	}
	total := len(intPart) + len(frac)
	first, last := -1, -1
	for k := range total {
		if digit(k) != '0' {
			if first < 0 {
				first = k
			}
			last = k
		}
	}
	if first < 0 {
		return 0, true
	}
	place := func(k int) int { return len(intPart) - 1 - k + exp }
	if place(last) < 0 {
		return 0, false
	}
	const limit = MaxCounter + 1
	var v int64 = limit
	if place(first) < 16 { // below 10^16, so it fits in int64
		v = 0
		for k := first; k <= last; k++ {
			v = v*10 + int64(digit(k)-'0')
		}
		for range place(last) {
			v *= 10
		}
		v = min(v, limit)
	}
	if neg {
		v = -v
	}
	return v, true
}

// parseTime reads an RFC 3339 date-time exactly as the JSON Schema "date-time"
// format does: 't' or 'T', 'z' or 'Z' or a ±hh:mm offset, any number of fraction
// digits (kept to the nanosecond), and a leap second only at 23:59 UTC, held at
// 23:59:59.999999999 because time.Time cannot represent it. The producer's offset is
// kept, so the event re-encodes to the same instant and text.
func parseTime(b []byte) (time.Time, bool) {
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != 't') || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	sec, ok6 := digits(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 || day < 1 ||
		day > daysIn(month, year) || hour > 23 || minute > 59 || sec > 60 {
		return time.Time{}, false
	}
	rest := b[19:]
	nsec := 0
	if rest[0] == '.' {
		k := 1
		for ; k < len(rest) && rest[k] >= '0' && rest[k] <= '9'; k++ {
			if k <= 9 {
				nsec = nsec*10 + int(rest[k]-'0')
			}
		}
		if k == 1 {
			return time.Time{}, false
		}
		for i := k; i <= 9; i++ {
			nsec *= 10
		}
		rest = rest[k:]
	}
	offset := 0 // minutes east of UTC
	switch {
	case len(rest) == 1 && (rest[0] == 'Z' || rest[0] == 'z'):
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, ok1 := digits(rest[1:3])
		om, ok2 := digits(rest[4:6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return time.Time{}, false
		}
		offset = oh*60 + om
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, false
	}
	if sec == 60 {
		if (hour*60+minute-offset+24*60)%(24*60) != 23*60+59 {
			return time.Time{}, false
		}
		sec, nsec = 59, 999999999
	}
	loc := time.UTC
	if offset != 0 {
		loc = time.FixedZone("", offset*60)
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nsec, loc), true
}

func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
