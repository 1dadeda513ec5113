package archive

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/services/orders"
	"github.com/orderflow/orderflow/schemas"
)

// Reader answers reads of archived orders from the index (KV order_archive) and the
// files, and the WAL for what came after: everything a status lookup or a refolding
// sink needs, and nothing that writes. An Archiver holds one; OpenReader gives one
// alone, without the archiver's binding to the WAL consumers, the lane checkpoints
// and the snapshots.
type Reader struct {
	idx   *index
	store Store
	log   *wal.Log
}

// OpenReader binds to the archive index (provisioned with the topology) and the
// WAL, and opens the store at location for reading: unlike the archiver, it never
// creates the directory (an archive that is not there is an error).
func OpenReader(ctx context.Context, js jetstream.JetStream, location string) (*Reader, error) {
	store, err := openStoreForRead(ctx, location)
	if err != nil {
		return nil, err
	}
	return newReader(ctx, js, store)
}

func newReader(ctx context.Context, js jetstream.JetStream, store Store) (*Reader, error) {
	r := &Reader{store: store}
	var err error
	if r.idx, err = openIndex(ctx, js); err != nil {
		return nil, err
	}
	if r.log, err = wal.Open(ctx, js); err != nil {
		return nil, err
	}
	return r, nil
}

// Store is where the archive's files are.
func (r *Reader) Store() Store { return r.store }

// Order is an archived order as Lookup answers it.
type Order struct {
	OrderID string `json:"order_id"`
	// Archived is always true: it tells whoever serves the answer where it came from.
	Archived bool `json:"archived"`
	// Current is the view of every archived event, folded by the resolver's rules.
	Current resolver.View `json:"current"`
	// Events are the archived events in WAL order, as the timeline shows them.
	Events []Event `json:"events"`
	// Parts say where the events are, oldest first.
	Parts []Part `json:"parts"`
	// WalSeq is the newest archived event. WAL events after it reached the WAL after
	// the order was archived and are not in the archive (yet).
	WalSeq uint64 `json:"archived_wal_seq"`
}

// Event is one archived event with its decision: a timeline entry, as the live
// timeline API shows it, plus the file it is in.
type Event struct {
	orders.TimelineEvent
	File string `json:"file"`
}

// Lookup answers an archived order from the index and its events files; found is
// false when the order was never archived (or its id cannot be an order id). The
// view is refolded from the archived bodies, so it follows the same rules as the
// pipeline. Cost: one KV read and, per part, one file read.
func (r *Reader) Lookup(ctx context.Context, orderID string) (*Order, bool, error) {
	// An invalid id is not a KV key.
	if !schemas.ValidOrderID(orderID) {
		return nil, false, nil
	}
	e, _, err := r.idx.entry(ctx, orderID)
	if err != nil || e == nil || len(e.Parts) == 0 {
		return nil, false, err
	}
	f, err := r.history(ctx, orderID, e.Parts, true)
	if err != nil {
		return nil, false, err
	}
	files := map[string]string{}
	for _, p := range e.Parts {
		files[p.Batch] = p.EventsFile
	}
	o := &Order{OrderID: orderID, Archived: true, Current: f.st.View(), Parts: e.Parts, WalSeq: e.upto()}
	o.Events = make([]Event, len(f.rows))
	for i, row := range f.rows {
		o.Events[i] = Event{TimelineEvent: orders.TimelineEvent{
			WalSeq: row.WalSeq, EventID: row.EventID, Source: schemas.Source(row.Source), SourceSeq: row.SourceSeq,
			Status: schemas.Status(row.Status), ETA: row.ETA, OccurredAt: row.OccurredAt, StoredAt: row.StoredAt,
			Decision: row.Decision, Reason: row.Reason, Detail: row.Detail,
		}, File: files[row.BatchID]}
	}
	return o, true, nil
}

// ReadOrder reads one order's events as the WAL held them before any purge, with
// after < seq <= upto (upto 0: to the end): its archived events, then those still
// in the WAL. It makes the archive the history of readers that refold orders (the
// ClickHouse sink's clickhouse.OrderLog), so a late event of an archived order is
// judged on its whole history. Cost: one KV read, and the files of archived orders.
func (r *Reader) ReadOrder(ctx context.Context, orderID string, after, upto uint64, fn func(wal.Record) error) error {
	e, _, err := r.idx.entry(ctx, orderID)
	if err != nil {
		return err
	}
	last := after
	if e != nil && len(e.Parts) > 0 && e.upto() > after {
		rows, err := r.partRows(ctx, orderID, e.Parts)
		if err != nil {
			return err
		}
		for i := range rows {
			if rows[i].WalSeq <= after {
				continue
			}
			if upto != 0 && rows[i].WalSeq > upto {
				return nil
			}
			rec, err := rows[i].record()
			if err != nil {
				return err
			}
			if err := fn(rec); err != nil {
				return err
			}
			last = rec.Seq
		}
	}
	if upto != 0 && last >= upto {
		return nil
	}
	return r.log.ReadOrder(ctx, orderID, last, upto, fn)
}

// history folds the order's archived parts.
func (r *Reader) history(ctx context.Context, id string, parts []Part, keep bool) (*folder, error) {
	f := newFolder(id, keep)
	rows, err := r.partRows(ctx, id, parts)
	if err != nil {
		return nil, err
	}
	for i := range rows {
		rec, err := rows[i].record()
		if err != nil {
			return nil, err
		}
		f.add(rec)
		if keep {
			f.rows[len(f.rows)-1].BatchID = rows[i].BatchID
		}
	}
	return f, nil
}

// partRows reads the order's archived events, in WAL order, checking each part is
// whole.
func (r *Reader) partRows(ctx context.Context, id string, parts []Part) ([]EventRow, error) {
	var out []EventRow
	for _, p := range parts {
		b, err := r.store.Get(ctx, p.EventsFile)
		if err != nil {
			return nil, fmt.Errorf("archived events of %s: %w", id, err)
		}
		rows, err := decode[EventRow](b)
		if err != nil {
			return nil, fmt.Errorf("archived events of %s: read %s: %w", id, p.EventsFile, err)
		}
		n := 0
		for _, r := range rows {
			if r.OrderID == id && r.WalSeq > p.After && r.WalSeq <= p.Upto {
				out = append(out, r)
				n++
			}
		}
		if n != p.Events {
			return nil, fmt.Errorf("archived events of %s: %s holds %d, the index says %d", id, p.EventsFile, n, p.Events)
		}
	}
	slices.SortFunc(out, func(x, y EventRow) int { return cmp.Compare(x.WalSeq, y.WalSeq) })
	return out, nil
}
