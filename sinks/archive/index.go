package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/retry"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// slotKey holds the one batch in progress (see the package doc).
const slotKey = "batch"

// Entry is an order's index entry: the parts of its history in the archive, oldest
// first. Usually one; a later part holds events that reached the WAL after the
// order was archived.
type Entry struct {
	OrderID string `json:"order_id"`
	Parts   []Part `json:"parts"`
}

// Part is one batch's share of an order: its WAL events with After < seq <= Upto.
type Part struct {
	Batch      string `json:"batch"`
	Day        string `json:"day"`
	After      uint64 `json:"after"`
	Upto       uint64 `json:"upto"`
	Events     int    `json:"events"`
	EventsFile string `json:"events_file"`
	OrdersFile string `json:"orders_file"`
}

// upto is the WAL sequence of the newest archived event, 0 for none.
func (e *Entry) upto() uint64 {
	if e == nil || len(e.Parts) == 0 {
		return 0
	}
	return e.Parts[len(e.Parts)-1].Upto
}

// before returns the parts that precede a part starting after after.
func (e *Entry) before(after uint64) []Part {
	if e == nil {
		return nil
	}
	var out []Part
	for _, p := range e.Parts {
		if p.Upto <= after {
			out = append(out, p)
		}
	}
	return out
}

func entryKey(orderID string) string { return "order." + orderID }

// Batch states, in order (see the package doc).
const (
	stateOpen      = "open"
	stateWriting   = "writing"
	stateCommitted = "committed"
)

// batch is the slot's value.
type batch struct {
	ID        string       `json:"id"`
	State     string       `json:"state"`
	CreatedAt time.Time    `json:"created_at"`
	Orders    []batchOrder `json:"orders,omitempty"`
}

// batchOrder is one order of a batch: its WAL range, how many events the range
// holds (checked when the files are built), and the day of its files.
type batchOrder struct {
	ID     string `json:"id"`
	After  uint64 `json:"after"`
	Upto   uint64 `json:"upto"`
	Events int    `json:"events"`
	Day    string `json:"day"`
}

// EventsFile and OrdersFile name a batch's files for one day.
func EventsFile(day, batchID string) string { return "events/day=" + day + "/" + batchID + ".parquet" }

// OrdersFile: see EventsFile.
func OrdersFile(day, batchID string) string { return "orders/day=" + day + "/" + batchID + ".parquet" }

// index reads and writes KV order_archive.
type index struct {
	kv jetstream.KeyValue
}

// openIndex binds to KV order_archive, which topology.Provision creates.
func openIndex(ctx context.Context, js jetstream.JetStream) (*index, error) {
	kv, err := js.KeyValue(ctx, topology.ArchiveBucket)
	if err != nil {
		return nil, fmt.Errorf("open KV bucket %s (run provisioning first): %w", topology.ArchiveBucket, err)
	}
	return &index{kv: kv}, nil
}

// entry returns the order's entry and its revision; nil, 0 when it has none.
func (x *index) entry(ctx context.Context, orderID string) (*Entry, uint64, error) {
	kve, err := x.kv.Get(ctx, entryKey(orderID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("archive index %s: %w", orderID, err)
	}
	var e Entry
	if err := json.Unmarshal(kve.Value(), &e); err != nil {
		return nil, 0, fmt.Errorf("archive index %s: %w", orderID, err)
	}
	return &e, kve.Revision(), nil
}

// errIndexMoved means an entry does not end where a batch expected: someone
// archived the order meanwhile. The slot makes this impossible; it is checked anyway
// because it is the one thing that would archive an event twice.
var errIndexMoved = errors.New("archive index moved under a batch")

// addPart appends the batch's part to the order's entry, once: a part of this batch
// already there (a batch finished twice) is left as it is.
func (x *index) addPart(ctx context.Context, orderID string, p Part) error {
	return retry.Do(ctx, retry.CompareAndSet, func(ctx context.Context, _ int) error {
		e, rev, err := x.entry(ctx, orderID)
		if err != nil {
			return retry.Permanent(err)
		}
		if e == nil {
			e = &Entry{OrderID: orderID}
		}
		for _, have := range e.Parts {
			if have.Batch == p.Batch {
				return nil
			}
		}
		if e.upto() != p.After {
			return retry.Permanent(fmt.Errorf("%w: %s ends at %d, batch %s starts after %d", errIndexMoved, orderID, e.upto(), p.Batch, p.After))
		}
		e.Parts = append(e.Parts, p)
		b, err := json.Marshal(e)
		if err != nil {
			return retry.Permanent(err)
		}
		if rev == 0 {
			_, err = x.kv.Create(ctx, entryKey(orderID), b)
		} else {
			_, err = x.kv.Update(ctx, entryKey(orderID), b, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("archive index %s: %w", orderID, err) // another archiver finishing the same batch: look again
		}
		if err != nil {
			return retry.Permanent(fmt.Errorf("archive index %s: %w", orderID, err))
		}
		return nil
	})
}

// slot returns the batch in progress and the slot's revision and creation time;
// nil when there is none.
func (x *index) slot(ctx context.Context) (*batch, uint64, time.Time, error) {
	kve, err := x.kv.Get(ctx, slotKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, time.Time{}, nil
	}
	if err != nil {
		return nil, 0, time.Time{}, fmt.Errorf("archive batch slot: %w", err)
	}
	var b batch
	if err := json.Unmarshal(kve.Value(), &b); err != nil {
		return nil, 0, time.Time{}, fmt.Errorf("archive batch slot: %w", err)
	}
	return &b, kve.Revision(), kve.Created(), nil
}

// openSlot takes the slot for b, or returns ok=false when another batch holds it.
func (x *index) openSlot(ctx context.Context, b *batch) (rev uint64, ok bool, err error) {
	v, err := json.Marshal(b)
	if err != nil {
		return 0, false, err
	}
	rev, err = x.kv.Create(ctx, slotKey, v)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("open archive batch slot: %w", err)
	}
	return rev, true, nil
}

// updateSlot moves the slot from rev to b. ok=false: the slot moved on (another
// archiver advanced or closed it); whoever moved it finishes the batch.
func (x *index) updateSlot(ctx context.Context, b *batch, rev uint64) (uint64, bool, error) {
	v, err := json.Marshal(b)
	if err != nil {
		return 0, false, err
	}
	rev, err = x.kv.Update(ctx, slotKey, v, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("archive batch slot: %w", err)
	}
	return rev, true, nil
}

// closeSlot releases the slot if it is still at rev.
func (x *index) closeSlot(ctx context.Context, rev uint64) error {
	err := x.kv.Delete(ctx, slotKey, jetstream.LastRevision(rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("close archive batch slot: %w", err)
	}
	return nil
}
