package resolver

import "time"

// claim is one status claim: at source_seq seq, the source said rank.
type claim struct {
	seq  uint64
	rank rank
}

// claims is the suffix-max staircase of one source's status claims: the claims no
// other claim beats in both seq and rank, sorted by seq ascending, so ranks strictly
// descend. It answers "the highest rank this source claimed after seq v" for any v,
// which is all that resolution needs (v is an override's observed[source], or 0), and
// it holds at most one claim per rank however many events arrive.
type claims struct {
	n int
	c [numRanks]claim
}

// add merges a claim and reports whether the staircase changed. add is commutative and
// idempotent: the staircase depends only on the set of claims added.
func (f *claims) add(seq uint64, r rank) bool {
	for _, c := range f.c[:f.n] {
		if c.seq >= seq && c.rank >= r {
			return false // a claim at least as new says at least as much
		}
	}
	// Drop the claims the new one beats in both seq and rank, insert it in seq order.
	var out [numRanks]claim
	n, inserted := 0, false
	for _, c := range f.c[:f.n] {
		if c.seq <= seq && c.rank <= r {
			continue
		}
		if !inserted && c.seq > seq {
			out[n], n, inserted = claim{seq, r}, n+1, true
		}
		out[n], n = c, n+1
	}
	if !inserted {
		out[n], n = claim{seq, r}, n+1
	}
	f.c, f.n = out, n
	return true
}

// maxAfter returns the highest rank claimed with seq > v, or rankNone.
func (f *claims) maxAfter(v uint64) rank {
	for _, c := range f.c[:f.n] {
		if c.seq > v {
			return c.rank
		}
	}
	return rankNone
}

// stampedTime is a last-writer-wins register ordered by source_seq; a reused
// source_seq keeps the later time, so the choice never depends on arrival order.
type stampedTime struct {
	seq uint64 // 0: never set
	at  time.Time
}

func (f *stampedTime) merge(seq uint64, at time.Time) bool {
	if seq > f.seq || seq == f.seq && at.After(f.at) {
		f.seq, f.at = seq, at
		return true
	}
	return false
}

// stampedString is stampedTime for entity ids; "" means the event did not carry one.
type stampedString struct {
	seq uint64
	v   string
}

func (f *stampedString) merge(seq uint64, v string) bool {
	if v != "" && (seq > f.seq || seq == f.seq && v > f.v) {
		f.seq, f.v = seq, v
		return true
	}
	return false
}

// recentSize bounds the exact-retry record: retries come soon after the original, and
// an id that fell out is still recognised as stale, with the same (lack of) effect.
const recentSize = 8

// recentEvents remembers the last events folded in, to tell an exact retry (duplicate)
// from a different event with an old source_seq (stale). It only labels decisions.
type recentEvents struct {
	e    [recentSize]seenEvent
	n    int // number of entries, up to recentSize
	next int // slot of the next entry
}

type seenEvent struct {
	src int
	seq uint64
	id  string
}

func (r *recentEvents) add(src int, seq uint64, id string) {
	r.e[r.next] = seenEvent{src, seq, id}
	r.next = (r.next + 1) % recentSize
	r.n = min(r.n+1, recentSize)
}

func (r *recentEvents) has(src int, seq uint64, id string) bool {
	for _, e := range r.e[:r.n] {
		if e.src == src && e.seq == seq && e.id == id {
			return true
		}
	}
	return false
}

// oldestFirst returns the entries from the oldest to the newest.
func (r *recentEvents) oldestFirst() []seenEvent {
	out := make([]seenEvent, 0, r.n)
	start := (r.next - r.n + recentSize) % recentSize
	for k := range r.n {
		out = append(out, r.e[(start+k)%recentSize])
	}
	return out
}
