package fold

import (
	"errors"
	"fmt"

	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/schemas"
)

// PanicError says the resolver panicked on the event at Seq: the order's state may
// be damaged. The lanes set such an event aside and rebuild the order without it;
// a reader does the same by folding the order again with Seq skipped (Rebuild).
type PanicError struct {
	OrderID string
	Seq     uint64
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("resolver panicked on event %d of order %s", e.Seq, e.OrderID)
}

// Catchup folds stored records into order states the way every reader that
// catches up on the WAL does (the read path after a snapshot, the API's watch,
// verify, replay, the sinks' and the lanes' rebuilds): a record Classify rejects
// is left out, as the lanes set it aside, and so is one the state already holds
// (at or below its wal_seq: a read that overlaps a snapshot); every other one goes
// through Apply.
// Its Record method has the shape of the callbacks the WAL readers take.
type Catchup struct {
	// State returns the state an event of orderID folds into (Into: always one).
	State func(orderID string) *resolver.State
	// Skip lists records to leave out: those the resolver panicked on in an earlier
	// pass (see Rebuild).
	Skip map[uint64]bool
	// Then, when set, sees every applied event with its order's state after it and
	// the decision. An error it returns stops the fold and is returned as it is
	// (e.g. a snapshot that cannot be encoded after the event).
	Then func(st *resolver.State, rec Record, ev *schemas.Event, d resolver.Decision) error
}

// Into returns a Catchup folding one order's records into st, leaving out those
// in skip (nil: none).
func Into(st *resolver.State, skip map[uint64]bool) *Catchup {
	return &Catchup{State: func(string) *resolver.State { return st }, Skip: skip}
}

// Record folds one stored record. It returns a *PanicError when the resolver
// panicked, or Then's error; any other record, folded or left out, returns nil.
func (c *Catchup) Record(rec Record) error {
	ev, rej := Classify(rec)
	if rej != nil {
		return nil
	}
	return c.Event(rec, ev)
}

// Event folds an event already classified from rec (a simulator's oracle passes
// a record holding only the sequence the event gets).
func (c *Catchup) Event(rec Record, ev *schemas.Event) error {
	if c.Skip[rec.Seq] {
		return nil
	}
	st := c.State(ev.OrderID)
	if st != nil && rec.Seq <= st.WalSeq() { // (a nil state panics in Apply, safely)
		return nil
	}
	d, ok := Apply(st, ev, rec.Seq)
	if !ok {
		return &PanicError{OrderID: ev.OrderID, Seq: rec.Seq}
	}
	if c.Then != nil {
		return c.Then(st, rec, ev, d)
	}
	return nil
}

// Rebuild runs pass, one fold from the start into fresh states that leaves out
// the records in skip, until a pass ends without a resolver panic: each panic adds
// its record to skip and starts over. The result is the state the lanes reach,
// since they set such an event aside. It returns pass's error, if any other.
func Rebuild(pass func(skip map[uint64]bool) error) error {
	skip := map[uint64]bool{}
	for {
		err := pass(skip)
		var p *PanicError
		if !errors.As(err, &p) || skip[p.Seq] {
			return err
		}
		skip[p.Seq] = true
	}
}
