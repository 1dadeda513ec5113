package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"pgregory.net/rapid"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// memWAL is an in-memory WAL: records[i] has sequence i+1.
type memWAL struct{ records []wal.Record }

func (w *memWAL) ReadOrder(ctx context.Context, id string, after, upto uint64, fn func(wal.Record) error) error {
	for _, r := range w.records {
		if _, tok := subjectTokens(r.Subject); tok != id || r.Seq <= after || upto != 0 && r.Seq > upto {
			continue
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// walOf stores msgs as JetStream would: producer retries dropped by message id,
// subjects partitioned.
func walOf(msgs []simulate.Message) *memWAL {
	w := &memWAL{}
	seen := map[string]bool{}
	base := time.Date(2026, 1, 5, 12, 0, 0, 0, time.UTC)
	for _, m := range msgs {
		if seen[m.MsgID] {
			continue
		}
		seen[m.MsgID] = true
		src, id, _ := strings.Cut(strings.TrimPrefix(m.Subject, "orders.events."), ".")
		seq := uint64(len(w.records) + 1)
		w.records = append(w.records, wal.Record{
			Seq:     seq,
			Subject: fmt.Sprintf("%s.%d.%s.%s", topology.WALPrefix, wal.Partition(id, 4), src, id),
			Data:    m.Body,
			Header:  nats.Header{nats.MsgIdHdr: []string{m.MsgID}},
			Time:    base.Add(time.Duration(seq) * 100 * time.Millisecond),
		})
	}
	return w
}

// withDasherChanges inserts agent corrections that reassign orders to other
// dashers (the simulator never does), so the index tombstones are exercised.
func withDasherChanges(t *rapid.T, msgs []simulate.Message) []simulate.Message {
	for j := range rapid.IntRange(0, 6).Draw(t, "dasher changes") {
		i := rapid.IntRange(0, len(msgs)-1).Draw(t, "after")
		if msgs[i].Invalid != "" {
			continue
		}
		id := msgs[i].Event.OrderID
		ev := schemas.Event{SchemaVersion: 1, EventID: fmt.Sprintf("%s-fix-%d", id, j), OrderID: id,
			Source: schemas.SourceAgent, SourceSeq: uint64(100 + j), OccurredAt: msgs[i].Event.OccurredAt,
			Status: schemas.StatusCreated, Reason: "reassigned", DasherID: fmt.Sprintf("dx-%d", j%3)}
		body, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		m := simulate.Message{Subject: schemas.Subject(ev.Source, id), MsgID: ev.EventID, Body: body, Event: ev}
		at := rapid.IntRange(i+1, len(msgs)).Draw(t, "at")
		msgs = append(msgs[:at], append([]simulate.Message{m}, msgs[at:]...)...)
	}
	return msgs
}

// TestFoldMatchesTimeline: whatever the cache size, the starting point (a restart
// mid-WAL), the chunking (prefetch rounds) and the batch boundaries, every event's
// decision equals the timeline's and each order's last row equals its resolved state.
func TestFoldMatchesTimeline(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		msgs, _, err := simulate.Generate(simulate.Config{
			Seed: rapid.Int64().Draw(t, "seed"), Orders: rapid.IntRange(1, 60).Draw(t, "orders"),
			InvalidRate: 0.02, Interleave: rapid.IntRange(1, 30).Draw(t, "interleave"),
		})
		if err != nil {
			t.Fatal(err)
		}
		msgs = withDasherChanges(t, msgs)
		w := walOf(msgs)
		n := len(w.records)
		start := rapid.IntRange(1, n).Draw(t, "start")
		cache := rapid.IntRange(1, 40).Draw(t, "cache")
		chunk := rapid.IntRange(1, 50).Draw(t, "chunk")
		batchSize := rapid.IntRange(1, 200).Draw(t, "batch")

		// The oracle: the timeline's fold over the whole WAL.
		want := map[uint64][2]string{}
		states := map[string]*resolver.State{}
		for _, r := range w.records {
			ev, rej := fold.Classify(r)
			if rej != nil {
				want[r.Seq] = [2]string{"rejected", rej.Reason}
				continue
			}
			if states[ev.OrderID] == nil {
				states[ev.OrderID] = resolver.New(ev.OrderID)
			}
			d := states[ev.OrderID].Apply(ev, r.Seq)
			want[r.Seq] = [2]string{string(d.Outcome), string(d.Reason)}
		}

		var lookups atomic.Uint64
		f := newFolder(w, cache, 3, time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), &lookups)
		f.reset(start == 1)
		var batches []*batch
		b := &batch{}
		for i := start - 1; i < n; i += chunk {
			recs := w.records[i:min(n, i+chunk)]
			var ups []lookup
			for _, r := range recs {
				if ev, rej := fold.Classify(r); rej == nil {
					ups = append(ups, lookup{ev.OrderID, r.Seq})
				}
			}
			f.prefetch(context.Background(), ups)
			for _, r := range recs {
				ev, rej := fold.Classify(r)
				if err := f.fold(context.Background(), r, ev, rej, b); err != nil {
					t.Fatal(err)
				}
				if b.events.len() >= batchSize {
					f.seal(b)
					batches = append(batches, b)
					b = &batch{}
				}
			}
		}
		f.seal(b)
		batches = append(batches, b)
		if start == 1 && lookups.Load() > 0 && cache >= len(states) {
			t.Fatalf("%d WAL lookups reading from the start with nothing evicted", lookups.Load())
		}

		lastRow := map[string]uint64{}
		live := map[string]map[string]bool{} // kind/key -> orders whose newest row is active
		newest := map[string]uint64{}
		for _, b := range batches {
			for i, seq := range b.events.walSeq {
				if got := [2]string{b.events.decision[i], b.events.reason[i]}; got != want[seq] {
					t.Fatalf("wal_seq %d: decision %v, timeline %v", seq, got, want[seq])
				}
			}
			for i, id := range b.orders.orderID {
				if b.orders.version[i] < lastRow[id] {
					t.Fatalf("order %s: version went back", id)
				}
				lastRow[id] = b.orders.version[i]
			}
			for k := range numKinds {
				r := &b.index[k]
				for i, id := range r.orderID {
					key := []string{r.customerID[i], r.restaurantID[i], r.dasherID[i]}[k]
					slot := strconv.Itoa(k) + "/" + key + "/" + id
					if r.version[i] < newest[slot] {
						continue
					}
					newest[slot] = r.version[i]
					if live[slot] == nil {
						live[slot] = map[string]bool{}
					}
					live[slot][id] = r.active[i] == 1
				}
			}
		}
		// Each order's newest row is its final state.
		for _, b := range batches {
			for i, id := range b.orders.orderID {
				if b.orders.version[i] != lastRow[id] {
					continue
				}
				v := states[id].View()
				if b.orders.status[i] != string(v.Status) || b.orders.customerID[i] != v.CustomerID ||
					b.orders.dasherID[i] != v.DasherID || b.orders.version[i] != v.WalSeq {
					t.Fatalf("order %s: last row %s/%s/%s@%d, want %s/%s/%s@%d", id, b.orders.status[i], b.orders.customerID[i],
						b.orders.dasherID[i], b.orders.version[i], v.Status, v.CustomerID, v.DasherID, v.WalSeq)
				}
			}
		}
		// Index entries are live exactly under each order's current ids.
		for slot, m := range live {
			parts := strings.SplitN(slot, "/", 3)
			k, _ := strconv.Atoi(parts[0])
			for id, active := range m {
				v := states[id].View()
				if active != (entityIDs(&v)[k] == parts[1]) {
					t.Fatalf("index %s: order %s active=%v, current ids %v", slot, id, active, entityIDs(&v))
				}
			}
		}
	})
}
