package archive

import (
	"context"

	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/services/orders"
	"github.com/orderflow/orderflow/schemas"
)

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
func (a *Archiver) Lookup(ctx context.Context, orderID string) (*Order, bool, error) {
	// The subject parser is the one validator of order ids; an invalid id is not a KV key.
	if _, _, err := schemas.ParseSubject(schemas.Subject(schemas.SourcePlatform, orderID)); err != nil {
		return nil, false, nil
	}
	e, _, err := a.idx.entry(ctx, orderID)
	if err != nil || e == nil || len(e.Parts) == 0 {
		return nil, false, err
	}
	f, err := a.history(ctx, orderID, e.Parts, true)
	if err != nil {
		return nil, false, err
	}
	files := map[string]string{}
	for _, p := range e.Parts {
		files[p.Batch] = p.EventsFile
	}
	o := &Order{OrderID: orderID, Archived: true, Current: f.st.View(), Parts: e.Parts, WalSeq: e.upto()}
	o.Events = make([]Event, len(f.rows))
	for i, r := range f.rows {
		o.Events[i] = Event{TimelineEvent: orders.TimelineEvent{
			WalSeq: r.WalSeq, EventID: r.EventID, Source: schemas.Source(r.Source), SourceSeq: r.SourceSeq,
			Status: schemas.Status(r.Status), ETA: r.ETA, OccurredAt: r.OccurredAt, StoredAt: r.StoredAt,
			Decision: r.Decision, Reason: r.Reason, Detail: r.Detail,
		}, File: files[r.BatchID]}
	}
	return o, true, nil
}

// ReadOrder reads one order's events as the WAL held them before any purge, with
// after < seq <= upto (upto 0: to the end): its archived events, then those still
// in the WAL. It makes the archive the history of readers that refold orders (the
// ClickHouse sink's clickhouse.OrderLog), so a late event of an archived order is
// judged on its whole history. Cost: one KV read, and the files of archived orders.
func (a *Archiver) ReadOrder(ctx context.Context, orderID string, after, upto uint64, fn func(wal.Record) error) error {
	e, _, err := a.idx.entry(ctx, orderID)
	if err != nil {
		return err
	}
	last := after
	if e != nil && len(e.Parts) > 0 && e.upto() > after {
		rows, err := a.partRows(ctx, orderID, e.Parts)
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
	return a.log.ReadOrder(ctx, orderID, last, upto, fn)
}
