package archive

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/retry"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// Archiver moves finished orders from the WAL and KV to the archive (see the
// package doc for the protocol). Run one per instance; several instances are safe.
type Archiver struct {
	// Reader answers reads of archived orders (Lookup, ReadOrder) alongside runs.
	*Reader
	cfg    Config
	js     jetstream.JetStream
	stream jetstream.Stream   // ORDER_EVENTS
	snaps  *snapshot.Store    // order_status, to remove snapshots
	lanes  jetstream.KeyValue // order_lanes, the lane checkpoints
	m      *metrics

	// nextPartition is where the next scan starts, so a backlog in low partitions
	// does not starve the others.
	nextPartition int
}

// New binds to the topology, KV order_archive included (topology.Provision creates
// it), and opens the store.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Archiver, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	store, err := OpenStore(ctx, cfg.Location)
	if err != nil {
		return nil, err
	}
	a := &Archiver{cfg: cfg, js: js}
	if a.Reader, err = newReader(ctx, js, store); err != nil {
		return nil, err
	}
	if a.stream, err = js.Stream(ctx, topology.EventsStream); err != nil {
		return nil, fmt.Errorf("open WAL stream %s: %w", topology.EventsStream, err)
	}
	// The archiver only removes snapshots: it never writes one, so it needs no TTL.
	if a.snaps, err = snapshot.Open(ctx, js, 0); err != nil {
		return nil, err
	}
	if a.lanes, err = js.KeyValue(ctx, topology.LanesBucket); err != nil {
		return nil, fmt.Errorf("open KV bucket %s: %w", topology.LanesBucket, err)
	}
	if a.m, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	return a, nil
}

// Report says what one run did.
type Report struct {
	// Batch is the batch this run started, "" if none.
	Batch string
	// Recovered is a batch this run found unfinished (after a crash, or another
	// archiver's) and finished.
	Recovered string
	// Orders and Events count the order parts and events this run indexed.
	Orders, Events int
	// Files and Bytes are the files this run wrote.
	Files []string
	Bytes int64
	// HeldBack counts orders old enough and terminal that some WAL consumer has not
	// made durable yet; they wait for a later run.
	HeldBack int
	// Busy: another archiver holds the batch slot; this run did nothing.
	Busy bool
}

// ErrFailing wraps the error Run returns when MaxFailures runs in a row failed.
var ErrFailing = errors.New("archive keeps failing")

// Run archives every Interval until ctx ends; after a full batch it goes on at once.
// A failed run is tried again after Interval; once MaxFailures runs in a row have
// failed, Run returns the last error wrapped in ErrFailing (nil when ctx ended).
func (a *Archiver) Run(ctx context.Context) error {
	attempts := a.cfg.MaxFailures
	if attempts < 0 {
		attempts = 0 // retry.Do: until ctx ends
	}
	for {
		var rep Report
		var since time.Time
		err := retry.Do(ctx, retry.Backoff{Initial: a.cfg.Interval, Attempts: attempts}, func(ctx context.Context, attempt int) error {
			var err error
			rep, err = a.RunOnce(ctx)
			if err == nil || ctx.Err() != nil {
				return err
			}
			if attempt == 0 {
				since = time.Now()
			}
			switch {
			case a.cfg.MaxFailures < 0 && attempt > 0:
				a.cfg.Logger.Error("archive keeps failing; the WAL is not purged", "err", err, "failed_runs", attempt+1, "since", since)
			case attempt+1 < attempts || attempts == 0:
				a.cfg.Logger.Warn("archive run failed; retrying", "err", err, "failed_runs", attempt+1, "max_failures", a.cfg.MaxFailures, "retry_in", a.cfg.Interval)
			}
			return err
		})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %d runs in a row failed since %s (the WAL is not purged meanwhile): %w",
				ErrFailing, attempts, since.UTC().Format(time.RFC3339), err)
		}
		if rep.Orders > 0 || rep.Recovered != "" {
			a.cfg.Logger.Info("archived", "batch", rep.Batch, "recovered", rep.Recovered,
				"orders", rep.Orders, "events", rep.Events, "bytes", rep.Bytes, "held_back", rep.HeldBack)
		}
		if rep.Batch != "" && rep.Orders >= a.cfg.BatchOrders {
			continue // a backlog: next batch now
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(a.cfg.Interval):
		}
	}
}

// RunOnce finishes a batch left in the slot, then archives one batch of candidates.
// Calls on one Archiver must not overlap (Run does not); Lookup may run alongside.
func (a *Archiver) RunOnce(ctx context.Context) (rep Report, err error) {
	defer func() {
		result := "ok"
		if err != nil {
			result = "error"
		} else if rep.Busy {
			result = "busy"
		}
		a.m.runs.WithLabelValues(result).Inc()
	}()
	if err := a.finish(ctx, &rep); err != nil || rep.Busy {
		return rep, err
	}
	cands, held, err := a.candidates(ctx)
	rep.HeldBack = held
	a.m.heldBack.Set(float64(held))
	if err != nil || len(cands) == 0 {
		return rep, err
	}
	now := time.Now().UTC()
	b := &batch{ID: newBatchID(now), State: stateOpen, CreatedAt: now}
	rev, ok, err := a.idx.openSlot(ctx, b)
	if err != nil || !ok {
		rep.Busy = !ok
		return rep, err
	}
	// Holding the slot, nobody else indexes: a candidate whose entry still ends where
	// the scan saw it cannot be archived twice.
	for _, c := range cands {
		e, _, err := a.idx.entry(ctx, c.ID)
		if err != nil {
			return rep, err // the open slot times out; nothing was written
		}
		if e.upto() == c.After {
			b.Orders = append(b.Orders, c)
		}
	}
	if len(b.Orders) == 0 {
		return rep, a.idx.closeSlot(ctx, rev)
	}
	// Files sorted by order id let readers skip row groups by their statistics.
	slices.SortFunc(b.Orders, func(x, y batchOrder) int { return strings.Compare(x.ID, y.ID) })
	b.State = stateWriting
	if rev, ok, err = a.idx.updateSlot(ctx, b, rev); err != nil || !ok {
		rep.Busy = !ok // a peer took the slot for abandoned
		return rep, err
	}
	rep.Batch = b.ID
	return rep, a.apply(ctx, b, rev, &rep)
}

// finish rolls forward the batch in the slot, if any. An open slot is someone
// choosing candidates; it is only removed once older than OpenTimeout.
func (a *Archiver) finish(ctx context.Context, rep *Report) error {
	b, rev, created, err := a.idx.slot(ctx)
	if err != nil || b == nil {
		return err
	}
	if b.State == stateOpen {
		if time.Since(created) < a.cfg.OpenTimeout {
			rep.Busy = true
			return nil
		}
		a.cfg.Logger.Warn("removing abandoned archive batch slot", "batch", b.ID, "opened", created)
		return a.idx.closeSlot(ctx, rev)
	}
	a.cfg.Logger.Info("finishing archive batch left unfinished", "batch", b.ID, "state", b.State, "orders", len(b.Orders))
	rep.Recovered = b.ID
	a.m.recovered.Inc()
	return a.apply(ctx, b, rev, rep)
}

// apply takes a batch from writing (or committed) to done. Every step is idempotent,
// so any archiver may run it any number of times, concurrently too.
func (a *Archiver) apply(ctx context.Context, b *batch, rev uint64, rep *Report) error {
	if b.State == stateWriting {
		if err := a.writeFiles(ctx, b, rep); err != nil {
			return err
		}
		if err := a.failpoint(FailAfterFiles); err != nil {
			return err
		}
		events := 0
		for _, o := range b.Orders {
			p := Part{Batch: b.ID, Day: o.Day, After: o.After, Upto: o.Upto, Events: o.Events,
				EventsFile: EventsFile(o.Day, b.ID), OrdersFile: OrdersFile(o.Day, b.ID)}
			if err := a.idx.addPart(ctx, o.ID, p); err != nil {
				return err
			}
			events += o.Events
		}
		b.State = stateCommitted
		var ok bool
		var err error
		if rev, ok, err = a.idx.updateSlot(ctx, b, rev); err != nil || !ok {
			return err // !ok: another archiver committed it and goes on
		}
		rep.Orders += len(b.Orders)
		rep.Events += events
		a.m.orders.Add(float64(len(b.Orders)))
		a.m.events.Add(float64(events))
		if err := a.failpoint(FailAfterIndex); err != nil {
			return err
		}
	}
	for _, o := range b.Orders {
		if err := a.purge(ctx, o); err != nil {
			return err
		}
	}
	if err := a.failpoint(FailAfterPurge); err != nil {
		return err
	}
	return a.idx.closeSlot(ctx, rev)
}

// writeFiles stores the batch's two files per day, skipping those already stored.
// A stored file is complete (Put is atomic), and a missing one can still be built:
// the WAL is purged only after commit.
func (a *Archiver) writeFiles(ctx context.Context, b *batch, rep *Report) error {
	byDay := map[string][]batchOrder{}
	for _, o := range b.Orders {
		byDay[o.Day] = append(byDay[o.Day], o)
	}
	days := make([]string, 0, len(byDay))
	for d := range byDay {
		days = append(days, d)
	}
	sort.Strings(days)
	for _, day := range days {
		names := []string{EventsFile(day, b.ID), OrdersFile(day, b.ID)}
		var missing []string
		for _, n := range names {
			ok, err := exists(ctx, a.store, n)
			if err != nil {
				return err
			}
			if !ok {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			continue
		}
		events, orders, err := a.build(ctx, b, byDay[day])
		if err != nil {
			return err
		}
		files := map[string]func() ([]byte, error){
			names[0]: func() ([]byte, error) { return encode(events) },
			names[1]: func() ([]byte, error) { return encode(orders) },
		}
		for _, n := range missing {
			data, err := files[n]()
			if err != nil {
				return fmt.Errorf("encode %s: %w", n, err)
			}
			err = a.store.Put(ctx, n, data)
			if errors.Is(err, ErrExists) {
				continue // another archiver finishing the same batch
			}
			if err != nil {
				return err
			}
			rep.Files = append(rep.Files, n)
			rep.Bytes += int64(len(data))
			a.m.bytes.Add(float64(len(data)))
		}
	}
	return nil
}

// build folds each order over its earlier archive parts and its WAL range and
// returns this batch's rows. It fails rather than write a file missing an event.
func (a *Archiver) build(ctx context.Context, b *batch, orders []batchOrder) ([]EventRow, []OrderRow, error) {
	var events []EventRow
	var rows []OrderRow
	for _, o := range orders {
		f := newFolder(o.ID, true)
		if o.After > 0 { // archived before: fold its earlier parts first
			e, _, err := a.idx.entry(ctx, o.ID)
			if err != nil {
				return nil, nil, err
			}
			if f, err = a.history(ctx, o.ID, e.before(o.After), true); err != nil {
				return nil, nil, err
			}
		}
		from := len(f.rows)
		if err := a.foldWAL(ctx, f, o.After, o.Upto); err != nil {
			return nil, nil, err
		}
		part := f.rows[from:]
		if len(part) != o.Events || len(part) == 0 || part[len(part)-1].WalSeq != o.Upto {
			return nil, nil, fmt.Errorf("batch %s: WAL of %s in (%d, %d] has %d events, the batch expects %d ending at %d "+
				"(purged or expired under the archive? see Topology.WALMaxAge)", b.ID, o.ID, o.After, o.Upto, len(part), o.Events, o.Upto)
		}
		for i := range part {
			part[i].BatchID = b.ID
		}
		events = append(events, part...)
		rows = append(rows, f.orderRow(from, b.ID, b.CreatedAt))
	}
	return events, rows, nil
}

// foldWAL folds the order's WAL events with after < seq <= upto into f.
func (a *Archiver) foldWAL(ctx context.Context, f *folder, after, upto uint64) error {
	return a.log.ReadOrder(ctx, f.id, after, upto, func(r wal.Record) error {
		f.add(r)
		return nil
	})
}

// purge removes the order's archived events from the WAL, and its snapshot from KV
// unless the snapshot has folded a later event (then it is the pipeline's live
// state of a late event, and stays). Idempotent.
func (a *Archiver) purge(ctx context.Context, o batchOrder) error {
	// WithPurgeSequence(n) purges below n: exactly the archived events, never one
	// that arrived after the archive decision.
	err := a.stream.Purge(ctx, jetstream.WithPurgeSubject(topology.OrderWALFilter(o.ID)), jetstream.WithPurgeSequence(o.Upto+1))
	if err != nil {
		return fmt.Errorf("purge WAL of %s up to %d: %w", o.ID, o.Upto, err)
	}
	a.m.purges.Inc()
	// The snapshot stays when it has folded a later event. The marker's TTL keeps KV
	// from holding one marker per archived order forever.
	removed, err := a.snaps.Remove(ctx, o.ID, a.cfg.MarkerTTL, func(st *resolver.State) bool {
		return st != nil && st.WalSeq() > o.Upto
	})
	if err != nil {
		return fmt.Errorf("remove snapshot of %s: %w", o.ID, err)
	}
	if removed {
		a.m.snapshots.Inc()
	}
	return nil
}

// candidates scans the WAL partition by partition for orders whose newest event is
// older than MinAge, durable in every WAL consumer, and terminal (judged on the
// archive plus the WAL for orders archived before). It returns up to BatchOrders
// of them and how many more were held back by a consumer.
func (a *Archiver) candidates(ctx context.Context) ([]batchOrder, int, error) {
	info, err := a.stream.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("WAL info: %w", err)
	}
	state := info.State
	if state.Msgs == 0 {
		return nil, 0, nil
	}
	safe, err := a.durableUpTo(ctx, state.LastSeq)
	if err != nil {
		return nil, 0, err
	}
	// An order old enough to archive has every event before the cutoff, so only that
	// part of the WAL is folded. Once archiving keeps up, it holds little more than
	// the orders still open after MinAge: the cost no longer grows with the live WAL.
	cutoff := time.Now().Add(-a.cfg.MinAge)
	end, err := wal.SeqAtTime(ctx, a.js, cutoff)
	if err != nil {
		return nil, 0, err
	}
	upto := min(end-1, state.LastSeq)
	var out []batchOrder
	held := 0
	n := a.log.Partitions()
	start := a.nextPartition
	for i := 0; i < n && len(out) < a.cfg.BatchOrders && upto >= state.FirstSeq; i++ {
		p := (start + i) % n
		a.nextPartition = (p + 1) % n
		folds := map[string]*folder{}
		err := wal.ReadRange(ctx, a.js, topology.LaneSubject(p), state.FirstSeq, upto, func(r wal.Record) error {
			_, id, err := schemas.ParseSubject(schemas.ProducerSubject(r.Subject))
			if err != nil {
				return nil // not an order's subject: never terminal, never archived
			}
			f, ok := folds[id]
			if !ok {
				f = newFolder(string([]byte(id)), false) // id shares the subject's memory
				folds[f.id] = f
			}
			f.add(r)
			return nil
		})
		if err != nil {
			return nil, 0, err
		}
		ids := make([]string, 0, len(folds))
		for id, f := range folds {
			if f.lastAt.Before(cutoff) {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		for _, id := range ids {
			c, ok, err := a.candidate(ctx, folds[id])
			if err != nil {
				return nil, 0, err
			}
			if !ok {
				continue
			}
			// Only for an order that would be archived: has it events after the
			// folded part (too recent), or, after a partition growth, on another
			// partition? The scan of the partition holding its newest event takes it.
			last, err := a.log.LastSeq(ctx, id)
			if err != nil {
				return nil, 0, err
			}
			if last != c.Upto {
				continue
			}
			if c.Upto > safe[p] {
				held++
				continue
			}
			out = append(out, c)
			if len(out) == a.cfg.BatchOrders {
				break
			}
		}
	}
	return out, held, nil
}

// candidate judges one order the scan folded from the WAL.
func (a *Archiver) candidate(ctx context.Context, f *folder) (batchOrder, bool, error) {
	e, _, err := a.idx.entry(ctx, f.id)
	if err != nil {
		return batchOrder{}, false, err
	}
	after := e.upto()
	if e == nil {
		if !f.st.Terminal() {
			return batchOrder{}, false, nil
		}
		// f folded every event the order has, unless a partition growth left its
		// earlier events on another partition: then judge its whole history.
		first, err := a.log.FirstSeq(ctx, f.id)
		if err != nil {
			return batchOrder{}, false, err
		}
		if first != 0 && first < f.first {
			g := newFolder(f.id, false)
			if err := a.foldWAL(ctx, g, 0, f.last); err != nil {
				return batchOrder{}, false, err
			}
			if !g.st.Terminal() || g.last != f.last {
				return batchOrder{}, false, nil
			}
			f = g
		}
		return batchOrder{ID: f.id, After: 0, Upto: f.last, Events: f.count, Day: dayOf(f)}, true, nil
	}
	if f.last <= after {
		return batchOrder{}, false, nil // archived; a batch is purging it
	}
	// Events that came after the order was archived: judge them on its full history.
	g, err := a.history(ctx, f.id, e.Parts, false)
	if err != nil {
		return batchOrder{}, false, err
	}
	before := g.count
	if err := a.foldWAL(ctx, g, after, f.last); err != nil {
		return batchOrder{}, false, err
	}
	if !g.st.Terminal() || g.last != f.last {
		return batchOrder{}, false, nil
	}
	return batchOrder{ID: f.id, After: after, Upto: f.last, Events: g.count - before, Day: dayOf(g)}, true, nil
}

// dayOf is the UTC day of the order's terminal event, its files' day= partition.
func dayOf(f *folder) string {
	t := f.terminalAt
	if t.IsZero() {
		t = f.lastAt
	}
	return t.UTC().Format(time.DateOnly)
}

// durableUpTo returns, per partition, the WAL sequence at or below which every event
// is durable in every consumer of the WAL: the lane checkpoint (snapshot and
// milestone outbox written) and the ack floor of every other durable consumer (the
// ClickHouse sink). Purging an event before then would take it from under a
// consumer that still needs it. Ordered consumers (readers, replays) are not
// waited for: they read what is there.
func (a *Archiver) durableUpTo(ctx context.Context, last uint64) ([]uint64, error) {
	n := a.log.Partitions()
	safe := make([]uint64, n)
	lanes := map[string]bool{}
	for p := range n {
		name := topology.LaneConsumer(p)
		lanes[name] = true
		kve, err := a.lanes.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("lane checkpoint %s: %w", name, err)
		}
		if safe[p], err = topology.ParseCheckpoint(kve.Value()); err != nil {
			return nil, fmt.Errorf("lane %s: %w", name, err)
		}
	}
	lister := a.stream.ListConsumers(ctx)
	for ci := range lister.Info() {
		if ci.Config.Durable == "" || lanes[ci.Name] {
			continue
		}
		floor := ci.AckFloor.Stream
		if ci.NumPending == 0 && ci.NumAckPending == 0 {
			floor = last // caught up: everything it matches up to last is acked
		}
		if floor < last {
			a.cfg.Logger.Debug("WAL consumer holds back archiving", "consumer", ci.Name, "ack_floor", floor)
		}
		for p := range safe {
			safe[p] = min(safe[p], floor)
		}
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("list WAL consumers: %w", err)
	}
	return safe, nil
}

// failpoint stops the run, or crashes the process, at step (Config.Failpoint).
func (a *Archiver) failpoint(step string) error {
	if a.cfg.Failpoint != nil {
		if err := a.cfg.Failpoint(step); err != nil {
			return fmt.Errorf("failpoint %s: %w", step, err)
		}
	}
	return nil
}

// newBatchID sorts by time, so file names list in archive order; the random tail
// keeps two archivers' batches apart.
func newBatchID(now time.Time) string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(r[:])
}
