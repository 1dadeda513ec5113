package fold_test

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/schemas"
)

// drawRecords stores a simulated workload as the WAL would (retries dropped by
// message id), with some records damaged: cut bodies, random bytes, stray headers.
func drawRecords(t *rapid.T) []fold.Record {
	msgs, _, err := simulate.Generate(simulate.Config{
		Seed: rapid.Int64().Draw(t, "seed"), Orders: rapid.IntRange(1, 8).Draw(t, "orders"),
		InvalidRate: 0.05, Interleave: rapid.IntRange(1, 8).Draw(t, "interleave"),
	})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	seen := map[string]bool{}
	var recs []fold.Record
	for _, m := range msgs {
		if seen[m.MsgID] {
			continue
		}
		seen[m.MsgID] = true
		seq := uint64(len(recs) + 1)
		rec := fold.Record{
			Seq: seq, Subject: schemas.WALPrefix + ".0." + strings.TrimPrefix(m.Subject, schemas.SubjectPrefix),
			Data: m.Body, Header: map[string][]string{"Nats-Msg-Id": {m.MsgID}}, Time: base.Add(time.Duration(seq) * time.Second),
		}
		switch rapid.IntRange(0, 9).Draw(t, "damage") {
		case 0:
			rec.Data = rec.Data[:rapid.IntRange(0, len(rec.Data)).Draw(t, "cut")]
		case 1:
			rec.Data = rapid.SliceOf(rapid.Byte()).Draw(t, "bytes")
		case 2:
			rec.Header[rapid.SampledFrom([]string{"Nats-Sequence", "Nats-Msg-Id", "X-Trace"}).Draw(t, "header")] = []string{"1", "2"}
		}
		recs = append(recs, rec)
	}
	return recs
}

// orderOf is the order a record's subject names: Step needs its state before
// Classify has said what the record is.
func orderOf(rec fold.Record) string {
	return rec.Subject[strings.LastIndexByte(rec.Subject, '.')+1:]
}

// TestStepIsClassifyThenApply: over random WAL records, Step never panics, gives
// each record the decision Classify and Apply give it, carries the event's fields,
// and leaves every order in the state Classify and Apply reach.
func TestStepIsClassifyThenApply(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		recs := drawRecords(t)
		stepped := map[string]*resolver.State{}
		applied := map[string]*resolver.State{}
		state := func(m map[string]*resolver.State, id string) *resolver.State {
			if m[id] == nil {
				m[id] = resolver.New(id)
			}
			return m[id]
		}
		for _, rec := range recs {
			te := fold.Step(state(stepped, orderOf(rec)), rec)
			if te.WalSeq != rec.Seq || !te.StoredAt.Equal(rec.Time) {
				t.Fatalf("record %d: entry %+v", rec.Seq, te)
			}
			ev, rej := fold.Classify(rec)
			if rej != nil {
				if te.Decision != string(resolver.Rejected) || te.Reason != rej.Reason || te.Detail != rej.Detail || te.EventID != "" {
					t.Fatalf("record %d: step %+v, classify rejected %+v", rec.Seq, te, rej)
				}
				continue
			}
			d, ok := fold.Apply(state(applied, ev.OrderID), ev, rec.Seq)
			if !ok {
				t.Fatalf("record %d: the resolver panicked", rec.Seq)
			}
			if te.Decision != string(d.Outcome) || te.Reason != string(d.Reason) || te.EventID != ev.EventID ||
				te.Source != ev.Source || te.SourceSeq != ev.SourceSeq || te.Status != ev.Status || !te.OccurredAt.Equal(ev.OccurredAt) {
				t.Fatalf("record %d: step %+v, apply %+v of %+v", rec.Seq, te, d, ev)
			}
		}
		for id, st := range applied {
			if got, want := views(stepped[id]), views(st); got != want {
				t.Fatalf("order %s: step reached %s, apply %s", id, got, want)
			}
		}
	})
}

func views(st *resolver.State) string {
	b, _ := json.Marshal(st.View())
	return string(b)
}

// TestCatchupIsStep: Catchup folds exactly the events Step applies, into the same
// states, and shows Then every applied event with its decision.
func TestCatchupIsStep(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		recs := drawRecords(t)
		stepped := map[string]*resolver.State{}
		caught := map[string]*resolver.State{}
		var want, got []string
		c := &fold.Catchup{
			State: func(id string) *resolver.State {
				if caught[id] == nil {
					caught[id] = resolver.New(id)
				}
				return caught[id]
			},
			Then: func(st *resolver.State, rec fold.Record, ev *schemas.Event, d resolver.Decision) error {
				if st != caught[ev.OrderID] {
					t.Fatalf("record %d: Then got another state than the order's", rec.Seq)
				}
				got = append(got, ev.EventID+" "+string(d.Outcome)+" "+string(d.Reason))
				return nil
			},
		}
		for _, rec := range recs {
			if err := c.Record(rec); err != nil {
				t.Fatalf("record %d: %v", rec.Seq, err)
			}
			id := orderOf(rec)
			if stepped[id] == nil {
				stepped[id] = resolver.New(id)
			}
			if te := fold.Step(stepped[id], rec); te.Decision != string(resolver.Rejected) {
				want = append(want, te.EventID+" "+te.Decision+" "+te.Reason)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("catchup applied\n%v\nstep applied\n%v", got, want)
		}
		for id, st := range caught {
			if views(st) != views(stepped[id]) {
				t.Fatalf("order %s: catchup %s, step %s", id, views(st), views(stepped[id]))
			}
		}
	})
}

func createdRecord(seq uint64) fold.Record {
	return fold.Record{Seq: seq, Subject: walSubject(schemas.SourcePlatform, "o-1"), Data: []byte(createdBody)}
}

// TestCatchupPanicAndRebuild: a resolver panic is reported with its order and
// record, and Rebuild folds again without that record until a pass completes.
func TestCatchupPanicAndRebuild(t *testing.T) {
	c := fold.Into(nil, nil) // a nil state makes the resolver panic
	err := c.Record(createdRecord(5))
	var p *fold.PanicError
	if !errors.As(err, &p) || p.Seq != 5 || p.OrderID != "o-1" {
		t.Fatalf("got %v, want a panic on record 5 of o-1", err)
	}
	if err := fold.Into(nil, map[uint64]bool{5: true}).Record(createdRecord(5)); err != nil {
		t.Fatalf("a skipped record was folded: %v", err)
	}

	// The second record makes the resolver panic once it is reached (a nil state
	// stands in for a resolver bug).
	var passes []map[uint64]bool
	var st *resolver.State
	err = fold.Rebuild(func(skip map[uint64]bool) error {
		passes = append(passes, maps.Clone(skip))
		st = resolver.New("o-1")
		states := []*resolver.State{st, nil}
		for i, rec := range []fold.Record{createdRecord(1), createdRecord(2)} {
			c := fold.Into(states[i], skip)
			if err := c.Record(rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []map[uint64]bool{{}, {2: true}}; !reflect.DeepEqual(passes, want) {
		t.Fatalf("passes skipped %v, want %v", passes, want)
	}
	if v := st.View(); v.Status != schemas.StatusCreated || v.WalSeq != 1 {
		t.Fatalf("rebuilt %+v", v)
	}

	// A record that panics even when skipped cannot be left out: Rebuild gives up.
	calls := 0
	err = fold.Rebuild(func(map[uint64]bool) error { calls++; return &fold.PanicError{OrderID: "o-1", Seq: 9} })
	if !errors.As(err, &p) || p.Seq != 9 || calls != 2 {
		t.Fatalf("got %v after %d passes", err, calls)
	}
	other := errors.New("WAL unreachable")
	if err := fold.Rebuild(func(map[uint64]bool) error { return other }); err != other {
		t.Fatalf("got %v, want the pass's own error", err)
	}
}

// TestCatchupFromASnapshot: records the state already holds are left out (a read
// that overlaps the snapshot), newer ones are folded, and Then's error stops the fold.
func TestCatchupFromASnapshot(t *testing.T) {
	st := resolver.New("o-1")
	c := fold.Into(st, nil)
	if err := c.Record(createdRecord(4)); err != nil {
		t.Fatal(err)
	}
	var then []uint64
	stop := errors.New("cannot encode")
	c.Then = func(_ *resolver.State, rec fold.Record, _ *schemas.Event, _ resolver.Decision) error {
		then = append(then, rec.Seq)
		return stop
	}
	if err := c.Record(createdRecord(3)); err != nil || len(then) != 0 {
		t.Fatalf("a record below the state's wal_seq: err %v, folded %v", err, then)
	}
	confirmed := fold.Record{Seq: 6, Subject: walSubject(schemas.SourceMerchant, "o-1"),
		Data: []byte(strings.NewReplacer(`"platform"`, `"merchant"`, `platform-1`, `merchant-1`, `"created"`, `"confirmed"`).Replace(createdBody))}
	if err := c.Record(confirmed); err != stop || !slices.Equal(then, []uint64{6}) {
		t.Fatalf("got %v after %v, want Then's error after record 6", err, then)
	}
	if v := st.View(); v.Status != schemas.StatusConfirmed || v.WalSeq != 6 {
		t.Fatalf("state %+v, want confirmed at 6", v)
	}
}
