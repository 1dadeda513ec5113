package archive

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/wal"
)

// EventRow is one WAL event of an archived order, as the events table stores it.
// Subject, Headers and Body are the stored message byte for byte, so the archive
// can be folded again by the same rules (and is the source of truth for reads);
// the other columns are decoded for analysts. Timestamps are microseconds, which
// every Parquet reader understands.
type EventRow struct {
	OrderID    string     `parquet:"order_id"`
	WalSeq     uint64     `parquet:"wal_seq"`
	StoredAt   time.Time  `parquet:"stored_at,timestamp(microsecond)"`
	Subject    string     `parquet:"subject"`
	EventID    string     `parquet:"event_id"`
	Source     string     `parquet:"source"`
	SourceSeq  uint64     `parquet:"source_seq"`
	Status     string     `parquet:"status"`
	OccurredAt *time.Time `parquet:"occurred_at,optional,timestamp(microsecond)"`
	ETA        *time.Time `parquet:"eta,optional,timestamp(microsecond)"`
	Decision   string     `parquet:"decision"`
	Reason     string     `parquet:"reason"`
	// Detail explains a rejected event (why it went to the DLQ).
	Detail  string `parquet:"detail"`
	Headers string `parquet:"headers,json"`
	Body    []byte `parquet:"body"`
	BatchID string `parquet:"batch_id"`
}

// OrderRow is an archived order's final state, as the orders table stores it: the
// view of the whole history archived so far (all parts).
type OrderRow struct {
	OrderID      string     `parquet:"order_id"`
	Status       string     `parquet:"status"`
	StatusSource string     `parquet:"status_source"`
	Predicted    bool       `parquet:"predicted"`
	ETA          *time.Time `parquet:"eta,optional,timestamp(microsecond)"`
	// Version is the per-source version vector, as JSON ({"driver":4,...}).
	Version      string    `parquet:"version,json"`
	UpdatedAt    time.Time `parquet:"updated_at,timestamp(microsecond)"`
	CustomerID   string    `parquet:"customer_id"`
	RestaurantID string    `parquet:"restaurant_id"`
	DasherID     string    `parquet:"dasher_id"`
	// TerminalAt is the WAL time of the event that made the order terminal; its UTC
	// day is the file's day= partition.
	TerminalAt time.Time `parquet:"terminal_at,timestamp(microsecond)"`
	// FirstWalSeq..WalSeq is the WAL range of this part's events.
	FirstWalSeq uint64    `parquet:"first_wal_seq"`
	WalSeq      uint64    `parquet:"wal_seq"`
	Events      int64     `parquet:"events"`
	BatchID     string    `parquet:"batch_id"`
	ArchivedAt  time.Time `parquet:"archived_at,timestamp(microsecond)"`
}

// record turns a row back into the WAL record it came from.
func (r *EventRow) record() (wal.Record, error) {
	rec := wal.Record{Seq: r.WalSeq, Subject: r.Subject, Data: r.Body, Time: r.StoredAt}
	if r.Headers != "" {
		if err := json.Unmarshal([]byte(r.Headers), &rec.Header); err != nil {
			return rec, fmt.Errorf("archived event %s@%d: headers: %w", r.OrderID, r.WalSeq, err)
		}
	}
	return rec, nil
}

// folder folds one order's records in WAL order and records each one's decision,
// as the timeline does: decisions are recomputed by the rules, never trusted from
// storage.
type folder struct {
	id         string
	st         *resolver.State
	keep       bool // keep rows (building files, lookups) or only the state (scanning)
	rows       []EventRow
	count      int // records folded
	first      uint64
	last       uint64
	lastAt     time.Time
	terminalAt time.Time // WAL time of the event that last made the order terminal
}

func newFolder(id string, keep bool) *folder {
	return &folder{id: id, st: resolver.New(id), keep: keep}
}

func (f *folder) add(rec wal.Record) {
	if f.count == 0 {
		f.first = rec.Seq
	}
	f.count++
	f.last, f.lastAt = rec.Seq, rec.Time
	was := f.st.Terminal()
	te := fold.Step(f.st, rec)
	if !was && f.st.Terminal() {
		f.terminalAt = rec.Time
	}
	if !f.keep {
		return
	}
	row := EventRow{
		OrderID: f.id, WalSeq: rec.Seq, StoredAt: rec.Time.UTC(), Subject: rec.Subject, Body: rec.Data,
		EventID: te.EventID, Source: string(te.Source), SourceSeq: te.SourceSeq, Status: string(te.Status),
		OccurredAt: utcPtr(te.OccurredAt), ETA: utcPtr(te.ETA), Decision: te.Decision, Reason: te.Reason, Detail: te.Detail,
	}
	if len(rec.Header) > 0 {
		h, _ := json.Marshal(rec.Header) // a map of strings always marshals
		row.Headers = string(h)
	}
	f.rows = append(f.rows, row)
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// orderRow is the orders-table row of a part covering the folder's rows from index
// from on.
func (f *folder) orderRow(from int, batch string, archivedAt time.Time) OrderRow {
	v := f.st.View()
	version, _ := json.Marshal(v.Version)
	part := f.rows[from:]
	return OrderRow{
		OrderID: v.OrderID, Status: string(v.Status), StatusSource: string(v.StatusSource), Predicted: v.Predicted,
		ETA: utcPtr(v.ETA), Version: string(version), UpdatedAt: v.UpdatedAt.UTC(),
		CustomerID: v.CustomerID, RestaurantID: v.RestaurantID, DasherID: v.DasherID,
		TerminalAt:  f.terminalAt.UTC(),
		FirstWalSeq: part[0].WalSeq, WalSeq: part[len(part)-1].WalSeq, Events: int64(len(part)),
		BatchID: batch, ArchivedAt: archivedAt.UTC(),
	}
}

// encode writes rows as one Parquet file (zstd: raw JSON bodies compress well).
func encode[T any](rows []T) ([]byte, error) {
	var buf bytes.Buffer
	if err := parquet.Write(&buf, rows, parquet.Compression(&parquet.Zstd)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decode reads every row of a Parquet file.
func decode[T any](b []byte) ([]T, error) {
	return parquet.Read[T](bytes.NewReader(b), int64(len(b)))
}
