package resolver

import (
	"encoding/json"
	"strconv"
	"time"
)

// The snapshot is written once per durable change of every order, so it is encoded
// by hand: the bytes are exactly those json.Marshal gives for the snapshot struct
// (TestPropertyFastEncodingMatchesJSON checks this on random folds), at a fraction
// of the reflection's cost and allocations.

// sortedSources are the source indexes in the order json.Marshal sorts map keys.
var sortedSources = [numSources]int{srcAgent, srcDriver, srcEstimator, srcMerchant, srcPlatform}

// appendSnapshot appends the snapshot encoding of s.
func (s *State) appendSnapshot(b []byte) []byte {
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, SnapshotVersion, 10)
	b = append(b, `,"order_id":`...)
	b = AppendJSONString(b, s.orderID)
	b = append(b, `,"status":`...)
	b = AppendJSONString(b, string(s.res.status.status()))
	b = append(b, `,"status_source":`...)
	b = AppendJSONString(b, string(sourceNameOf(s.res.statusSrc)))
	b = append(b, `,"predicted":`...)
	b = strconv.AppendBool(b, s.res.predicted)
	if s.res.hasETA {
		b = append(b, `,"eta":`...)
		b = appendTime(b, s.res.eta)
	}
	b = append(b, `,"version":{`...)
	first := true
	for _, i := range sortedSources {
		if v := s.src[i].version; v > 0 {
			b = appendKey(b, &first, string(sourceName[i]))
			b = strconv.AppendUint(b, v, 10)
		}
	}
	b = append(b, `},"wal_seq":`...)
	b = strconv.AppendUint(b, s.walSeq, 10)
	b = append(b, `,"updated_at":`...)
	b = appendTime(b, s.updatedAt)
	for k, name := range [numIDs]string{idCustomer: "customer_id", idRestaurant: "restaurant_id", idDasher: "dasher_id"} {
		if v := s.res.ids[k]; v != "" {
			b = append(b, `,"`...)
			b = append(b, name...)
			b = append(b, `":`...)
			b = AppendJSONString(b, v)
		}
	}
	b = append(b, `,"r":{`...)
	firstR := true
	firstSrc := true
	for _, i := range sortedSources {
		ss := &s.src[i]
		if ss.claims.n == 0 && ss.eta.seq == 0 && ss.ids[idCustomer].seq == 0 && ss.ids[idRestaurant].seq == 0 && ss.ids[idDasher].seq == 0 {
			continue
		}
		if firstSrc {
			b = appendKey(b, &firstR, "src")
			b = append(b, '{')
		}
		b = appendKey(b, &firstSrc, string(sourceName[i]))
		b = ss.appendSnap(b)
	}
	if !firstSrc {
		b = append(b, '}')
	}
	if o := s.override; o.seq > 0 {
		b = appendKey(b, &firstR, "override")
		b = append(b, `{"seq":`...)
		b = strconv.AppendUint(b, o.seq, 10)
		b = append(b, `,"status":`...)
		b = AppendJSONString(b, string(o.rank.status()))
		firstObs := true
		for _, i := range sortedSources {
			if v := o.observed[i]; v > 0 {
				if firstObs {
					b = append(b, `,"observed":{`...)
				}
				b = appendKey(b, &firstObs, string(sourceName[i]))
				b = strconv.AppendUint(b, v, 10)
			}
		}
		if !firstObs {
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	if s.recent.n > 0 {
		b = appendKey(b, &firstR, "recent")
		b = append(b, '[')
		start := (s.recent.next - s.recent.n + recentSize) % recentSize
		for k := range s.recent.n {
			e := s.recent.e[(start+k)%recentSize]
			if k > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"source":`...)
			b = AppendJSONString(b, string(sourceName[e.src]))
			b = append(b, `,"seq":`...)
			b = strconv.AppendUint(b, e.seq, 10)
			b = append(b, `,"event_id":`...)
			b = AppendJSONString(b, e.id)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, "}}"...)
}

// appendSnap appends one source's summary (snapSource).
func (ss *sourceState) appendSnap(b []byte) []byte {
	b = append(b, '{')
	first := true
	if ss.claims.n > 0 {
		b = appendKey(b, &first, "claims")
		b = append(b, '[')
		for k, c := range ss.claims.c[:ss.claims.n] {
			if k > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"seq":`...)
			b = strconv.AppendUint(b, c.seq, 10)
			b = append(b, `,"status":`...)
			b = AppendJSONString(b, string(c.rank.status()))
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if ss.eta.seq > 0 {
		b = appendKey(b, &first, "eta")
		b = append(b, `{"seq":`...)
		b = strconv.AppendUint(b, ss.eta.seq, 10)
		b = append(b, `,"at":`...)
		b = appendTime(b, ss.eta.at)
		b = append(b, '}')
	}
	for k, name := range [numIDs]string{idCustomer: "customer_id", idRestaurant: "restaurant_id", idDasher: "dasher_id"} {
		if f := ss.ids[k]; f.seq > 0 {
			b = appendKey(b, &first, name)
			b = append(b, `{"seq":`...)
			b = strconv.AppendUint(b, f.seq, 10)
			b = append(b, `,"id":`...)
			b = AppendJSONString(b, f.v)
			b = append(b, '}')
		}
	}
	return append(b, '}')
}

// timesEncodable reports whether every time in the state has a year MarshalJSON
// accepts; otherwise the reflective encoder reports the error.
func (s *State) timesEncodable() bool {
	ok := func(t time.Time) bool { y := t.Year(); return y >= 0 && y <= 9999 }
	if !ok(s.updatedAt) || (s.res.hasETA && !ok(s.res.eta)) {
		return false
	}
	for i := range s.src {
		if s.src[i].eta.seq > 0 && !ok(s.src[i].eta.at) {
			return false
		}
	}
	return true
}

// appendKey appends `"key":`, preceded by a comma unless it is the object's first.
func appendKey(b []byte, first *bool, key string) []byte {
	if !*first {
		b = append(b, ',')
	}
	*first = false
	b = append(b, '"')
	b = append(b, key...)
	return append(b, `":`...)
}

// AppendJSONString appends s as json.Marshal quotes it: plain printable ASCII
// directly, anything that needs escaping (quotes, control and HTML characters,
// non-ASCII) through encoding/json itself, so the rules cannot drift.
func AppendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendTime appends t as time.Time's MarshalJSON does (RFC 3339 with nanoseconds),
// for the years it accepts (timesEncodable).
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}
