package archive_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/services/orders"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/testsupport/testrun"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
	"github.com/orderflow/orderflow/sinks/archive"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// world is a pipeline that has processed a simulated workload, and what it looked
// like before any archiving: the oracle views, the WAL events and the timelines.
type world struct {
	env      *testenv.NATSEnv
	log      *wal.Log
	snaps    *snapshot.Store
	want     map[string]*resolver.State // the resolver over the published events
	walSeqs  map[string][]uint64        // each order's WAL events
	terminal []string                   // orders the archive must take, sorted
	live     []string                   // orders it must leave alone
	timeline map[string]orders.Timeline
}

func newWorld(t *testing.T, seed int64, n int) *world {
	t.Helper()
	env := testenv.NATS(t)
	startServe(t, env, topology.Topology{Partitions: 4})
	ctx := context.Background()
	msgs, _ := testrun.PublishDrained(t, env.JS, simulate.Config{Seed: seed, Orders: n, InvalidRate: 0.02})
	w := &world{env: env, want: verify.FoldMessages(msgs), walSeqs: map[string][]uint64{}, timeline: map[string]orders.Timeline{}}
	var err error
	if w.log, err = wal.Open(ctx, env.JS); err != nil {
		t.Fatal(err)
	}
	if w.snaps, err = snapshot.Open(ctx, env.JS, 0); err != nil {
		t.Fatal(err)
	}
	s, err := env.JS.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	err = wal.ReadRange(ctx, env.JS, topology.WALPrefix+".>", 1, s.CachedInfo().State.LastSeq, func(r wal.Record) error {
		if _, id, err := schemas.ParseSubject(schemas.ProducerSubject(r.Subject)); err == nil {
			w.walSeqs[id] = append(w.walSeqs[id], r.Seq)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	reader := orders.NewReader(w.log, w.snaps, 0)
	for id := range w.walSeqs {
		if st, ok := w.want[id]; ok && st.Terminal() {
			w.terminal = append(w.terminal, id)
			if w.timeline[id], err = reader.Timeline(ctx, id); err != nil {
				t.Fatal(err)
			}
		} else {
			w.live = append(w.live, id)
		}
	}
	sort.Strings(w.terminal)
	if len(w.terminal) < n*3/4 || len(w.live) == 0 {
		t.Fatalf("workload: %d terminal and %d other orders; want most terminal and some not", len(w.terminal), len(w.live))
	}
	return w
}

func newArchiver(t *testing.T, w *world, cfg archive.Config) *archive.Archiver {
	t.Helper()
	cfg.Logger = quiet
	a, err := archive.New(context.Background(), w.env.JS, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestArchivePurgeRead is the end to end: archive, purge, read.
func TestArchivePurgeRead(t *testing.T) {
	w := newWorld(t, 31, 150)
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	a := newArchiver(t, w, archive.Config{Location: dir, Registerer: reg})

	rep, err := a.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Orders != len(w.terminal) || rep.Batch == "" || rep.HeldBack != 0 {
		t.Fatalf("report %+v, want %d orders in one batch", rep, len(w.terminal))
	}
	wantEvents := 0
	for _, id := range w.terminal {
		wantEvents += len(w.walSeqs[id])
	}
	// As an order log (the ClickHouse sink's history), the archive gives each order's
	// events as the WAL held them before the purge, whole or in a range.
	for _, id := range w.terminal {
		var got []uint64
		err := a.ReadOrder(ctx, id, 0, 0, func(r wal.Record) error {
			got = append(got, r.Seq)
			return nil
		})
		if err != nil || !slices.Equal(got, w.walSeqs[id]) {
			t.Fatalf("ReadOrder(%s) = %v %v, the WAL held %v", id, got, err, w.walSeqs[id])
		}
		if seqs := w.walSeqs[id]; len(seqs) >= 3 {
			got = nil
			err := a.ReadOrder(ctx, id, seqs[0], seqs[2], func(r wal.Record) error {
				got = append(got, r.Seq)
				return nil
			})
			if err != nil || !slices.Equal(got, seqs[1:3]) {
				t.Fatalf("ReadOrder(%s, %d, %d) = %v %v, want %v", id, seqs[0], seqs[2], got, err, seqs[1:3])
			}
		}
	}
	if rep.Events != wantEvents {
		t.Fatalf("archived %d events, the WAL held %d for those orders", rep.Events, wantEvents)
	}
	for _, f := range rep.Files {
		if !strings.Contains(f, "/day=") || !strings.HasSuffix(f, rep.Batch+".parquet") {
			t.Fatalf("file %s: want <table>/day=YYYY-MM-DD/%s.parquet", f, rep.Batch)
		}
	}
	checkArchived(t, w, a, expect{})
	checkLive(t, w)

	// The read path of the pipeline no longer knows the order: callers fall back to
	// Lookup, which says the answer is archived.
	if _, err := orders.NewReader(w.log, w.snaps, 0).Get(ctx, w.terminal[0]); !errors.Is(err, orders.ErrNotFound) {
		t.Fatalf("reader after archive: %v, want ErrNotFound", err)
	}

	if got := gathered(t, reg, "orderflow_archive_orders_total"); int(got) != len(w.terminal) {
		t.Fatalf("orderflow_archive_orders_total = %v, want %d", got, len(w.terminal))
	}
	if got := gathered(t, reg, "orderflow_archive_bytes_total"); got <= 0 || int64(got) != rep.Bytes {
		t.Fatalf("orderflow_archive_bytes_total = %v, report says %d", got, rep.Bytes)
	}
	if got := gathered(t, reg, "orderflow_archive_wal_purges_total"); int(got) != len(w.terminal) {
		t.Fatalf("orderflow_archive_wal_purges_total = %v, want %d", got, len(w.terminal))
	}

	// Nothing left to do, and doing nothing writes nothing.
	again, err := a.RunOnce(ctx)
	if err != nil || again.Orders != 0 || len(again.Files) != 0 {
		t.Fatalf("second run: %+v %v", again, err)
	}
}

// TestMinAgeHoldsOrdersBack: orders finished less than MinAge ago stay in the WAL.
func TestMinAgeHoldsOrdersBack(t *testing.T) {
	w := newWorld(t, 32, 30)
	a := newArchiver(t, w, archive.Config{Location: t.TempDir(), MinAge: time.Hour})
	rep, err := a.RunOnce(context.Background())
	if err != nil || rep.Orders != 0 || rep.Batch != "" {
		t.Fatalf("run with MinAge 1h: %+v %v, want nothing archived", rep, err)
	}
	checkLive(t, w) // every order, terminal or not, still in the WAL
	for _, id := range w.terminal {
		if last, err := w.log.LastSeq(context.Background(), id); err != nil || last == 0 {
			t.Fatalf("order %s left the WAL before MinAge: %d %v", id, last, err)
		}
	}
}

// TestRecentEventHoldsItsOrderBack: the archiver folds only the WAL stored before
// now - MinAge; an order whose newest event came later stays, all its events in the
// WAL, while the orders around it that finished long enough ago are archived.
func TestRecentEventHoldsItsOrderBack(t *testing.T) {
	w := newWorld(t, 35, 40)
	ctx := context.Background()
	time.Sleep(3 * time.Second) // the workload is now older than MinAge, with room to spare
	id := w.terminal[0]
	body := fmt.Sprintf(`{"schema_version":1,"event_id":"recent-%s","order_id":"%s","source":"estimator","source_seq":77,"occurred_at":"2026-01-05T18:00:00Z","eta":"2026-01-05T18:10:00Z"}`, id, id)
	if _, err := w.env.JS.Publish(ctx, "orders.events.estimator."+id, []byte(body)); err != nil {
		t.Fatal(err)
	}
	if err := pipelines.WaitDrained(ctx, w.env.JS, time.Minute); err != nil {
		t.Fatal(err)
	}
	// The recent event must stay younger than MinAge until the run starts: 2 s is far
	// more than draining one event takes.
	a := newArchiver(t, w, archive.Config{Location: t.TempDir(), MinAge: 2 * time.Second})
	rep, err := a.RunOnce(ctx)
	if err != nil || rep.Orders != len(w.terminal)-1 {
		t.Fatalf("run: %+v %v, want the %d orders without a recent event", rep, err, len(w.terminal)-1)
	}
	if seqs, err := w.log.FirstSeq(ctx, id); err != nil || seqs != w.walSeqs[id][0] {
		t.Fatalf("the order with a recent event lost WAL events: first seq %d %v, want %d", seqs, err, w.walSeqs[id][0])
	}
	if _, found, err := a.Lookup(ctx, id); err != nil || found {
		t.Fatalf("the order with a recent event is in the archive: %v %v", found, err)
	}
}

// TestUnackedConsumerHoldsBack: an event is purged only once every durable consumer
// of the WAL (here a stand-in for the ClickHouse sink) has acknowledged it.
func TestUnackedConsumerHoldsBack(t *testing.T) {
	w := newWorld(t, 35, 30)
	ctx := context.Background()
	s, err := w.env.JS.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "sink-test", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: topology.WALPrefix + ".>",
	}); err != nil {
		t.Fatal(err)
	}
	a := newArchiver(t, w, archive.Config{Location: t.TempDir()})
	rep, err := a.RunOnce(ctx)
	if err != nil || rep.Orders != 0 || rep.HeldBack != len(w.terminal) {
		t.Fatalf("run under an unacked consumer: %+v %v, want all %d held back", rep, err, len(w.terminal))
	}
	checkLive(t, w)
	if err := s.DeleteConsumer(ctx, "sink-test"); err != nil {
		t.Fatal(err)
	}
	if rep, err = a.RunOnce(ctx); err != nil || rep.Orders != len(w.terminal) {
		t.Fatalf("run after the consumer left: %+v %v", rep, err)
	}
	checkArchived(t, w, a, expect{})
}

// TestCrashRecovery stops a run at each failpoint, as a crash would, then lets fresh
// archivers (two at once, racing) finish: nothing lost, nothing archived twice.
//
// It runs on a local directory and on an S3-compatible server: create-only Puts are
// what make the racing finish safe, and both stores must give them.
func TestCrashRecovery(t *testing.T) {
	for _, step := range []string{archive.FailAfterFiles, archive.FailAfterIndex, archive.FailAfterPurge} {
		for _, store := range []string{"dir", "s3"} {
			t.Run(store+"/"+step, func(t *testing.T) { crashRecovery(t, step, store) })
		}
	}
}

func crashRecovery(t *testing.T, step, store string) {
	w := newWorld(t, 33, 80)
	ctx := context.Background()
	dir := t.TempDir()
	if store == "s3" {
		s3 := testenv.S3(t)
		dir = s3.Location(s3.Bucket(t), "orders")
	}
	crash := errors.New("crash")
	a := newArchiver(t, w, archive.Config{Location: dir, Failpoint: func(s string) error {
		if s == step {
			return crash
		}
		return nil
	}})
	if _, err := a.RunOnce(ctx); !errors.Is(err, crash) {
		t.Fatalf("run: %v, want the crash", err)
	}

	// While the batch is unfinished, every order still reads correctly from
	// one side or the other.
	id := w.terminal[0]
	o, found, err := a.Lookup(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	switch step {
	case archive.FailAfterFiles:
		if found {
			t.Fatalf("order %s indexed before the index step", id)
		}
		v, err := orders.NewReader(w.log, w.snaps, 0).Get(ctx, id)
		if err != nil || len(verify.DiffViews(oneView(id, w.want[id].View()), oneView(id, v))) > 0 {
			t.Fatalf("WAL read during the crash window: %+v %v", v, err)
		}
	default:
		if !found || len(verify.DiffViews(oneView(id, w.want[id].View()), oneView(id, o.Current))) > 0 {
			t.Fatalf("archive read during the crash window: found=%v %+v", found, o)
		}
	}

	var wg sync.WaitGroup
	reps := make([]archive.Report, 2)
	errs := make([]error, 2)
	for i := range 2 {
		b := newArchiver(t, w, archive.Config{Location: dir})
		wg.Add(1)
		go func() {
			defer wg.Done()
			reps[i], errs[i] = b.RunOnce(ctx)
		}()
	}
	wg.Wait()
	recovered := false
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("recovering archiver %d: %v", i, errs[i])
		}
		if reps[i].Batch != "" {
			t.Fatalf("recovering archiver %d started batch %s: an order would be archived twice", i, reps[i].Batch)
		}
		recovered = recovered || reps[i].Recovered != ""
	}
	if !recovered && step != archive.FailAfterPurge {
		// After the purge, a racing archiver may find the slot already gone.
		t.Fatalf("no archiver finished the batch: %+v", reps)
	}
	// A slot left after the purge, if both lost the race, is finished now.
	if _, err := newArchiver(t, w, archive.Config{Location: dir}).RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	checkArchived(t, w, a, expect{})
	checkLive(t, w)
}

// TestLateEvent: an event that reaches the WAL after the archive decision is not
// purged with the archived ones; once old enough it is archived as a second part,
// and the archive then answers over the full history.
func TestLateEvent(t *testing.T) {
	w := newWorld(t, 34, 40)
	ctx := context.Background()
	dir := t.TempDir()
	id := w.terminal[0]
	body := fmt.Sprintf(`{"schema_version":1,"event_id":"late-%s","order_id":"%s","source":"estimator","source_seq":99,"occurred_at":"2026-01-05T18:00:00Z","eta":"2026-01-05T18:10:00Z"}`, id, id)
	var lateSeq uint64
	a := newArchiver(t, w, archive.Config{Location: dir, Failpoint: func(step string) error {
		if step != archive.FailAfterFiles || lateSeq != 0 {
			return nil
		}
		// The files are written, the purge is still to come: the worst moment.
		m := nats.NewMsg("orders.events.estimator." + id)
		m.Data = []byte(body)
		m.Header.Set(nats.MsgIdHdr, "late-"+id)
		ack, err := w.env.JS.PublishMsg(ctx, m)
		if err != nil {
			return err
		}
		lateSeq = ack.Sequence
		return nil
	}})
	if _, err := a.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if lateSeq == 0 {
		t.Fatal("the late event was not published")
	}
	first, _ := w.log.FirstSeq(ctx, id)
	last, _ := w.log.LastSeq(ctx, id)
	if first != lateSeq || last != lateSeq {
		t.Fatalf("WAL of %s holds %d..%d after the archive, want only the late event %d", id, first, last, lateSeq)
	}
	o, found, err := a.Lookup(ctx, id)
	if err != nil || !found || o.WalSeq >= lateSeq || len(o.Events) != len(w.walSeqs[id]) {
		t.Fatalf("lookup after the first archive: found=%v %v, %+v", found, err, o)
	}
	checkArchived(t, w, a, expect{late: map[string]uint64{id: lateSeq}})
	// As an order log, the archive gives the archived events, then the late one
	// still in the WAL.
	var seqs []uint64
	err = a.ReadOrder(ctx, id, 0, 0, func(r wal.Record) error {
		seqs = append(seqs, r.Seq)
		return nil
	})
	if want := append(slices.Clone(w.walSeqs[id]), lateSeq); err != nil || !slices.Equal(seqs, want) {
		t.Fatalf("ReadOrder(%s) with a late event in the WAL = %v %v, want %v", id, seqs, err, want)
	}

	// Once the pipeline has it and it is old enough, the late event is archived too.
	if err := pipelines.WaitDrained(ctx, w.env.JS, time.Minute); err != nil {
		t.Fatal(err)
	}
	rep, err := a.RunOnce(ctx)
	if err != nil || rep.Orders != 1 || rep.Events != 1 {
		t.Fatalf("second run: %+v %v, want the late event of %s", rep, err, id)
	}
	if last, _ := w.log.LastSeq(ctx, id); last != 0 {
		t.Fatalf("late event still in the WAL at %d", last)
	}
	ev, rej := fold.Classify(fold.Record{Subject: "orders.wal.0.estimator." + id, Data: []byte(body)})
	if rej != nil {
		t.Fatal(rej)
	}
	w.want[id].Apply(ev, lateSeq)
	w.walSeqs[id] = append(w.walSeqs[id], lateSeq)
	o, _, err = a.Lookup(ctx, id)
	if err != nil || len(o.Parts) != 2 || o.WalSeq != lateSeq {
		t.Fatalf("lookup after the second archive: %v %+v", err, o)
	}
	if late := o.Events[len(o.Events)-1]; late.WalSeq != lateSeq || late.EventID != "late-"+id || late.File != o.Parts[1].EventsFile {
		t.Fatalf("late event as archived: %+v", late)
	}
	delete(w.timeline, id) // its timeline grew; the view is checked against the oracle
	checkArchived(t, w, a, expect{parts: map[string]int{id: 2}})
}

// expect lists the exceptions to "one part, nothing left in the WAL or KV".
type expect struct {
	parts map[string]int    // index parts (default 1)
	late  map[string]uint64 // the one event left in the WAL; its snapshot may stay
}

// checkArchived checks every terminal order: gone from the WAL and KV, in the index,
// each event in exactly one file, and Lookup answering the oracle's view with the
// timeline's decisions.
func checkArchived(t *testing.T, w *world, a *archive.Archiver, ex expect) {
	t.Helper()
	ctx := context.Background()
	files := readEvents(t, a.Store())
	orderRows := readOrders(t, a.Store())
	for _, id := range w.terminal {
		if first, err := w.log.FirstSeq(ctx, id); err != nil || first != ex.late[id] {
			t.Fatalf("order %s: WAL holds event %d (%v), want %d", id, first, err, ex.late[id])
		}
		if st, _, _, err := w.snaps.Get(ctx, id); err != nil || (st != nil && ex.late[id] == 0) {
			t.Fatalf("order %s: snapshot still in KV (%v)", id, err)
		}
		o, found, err := a.Lookup(ctx, id)
		if err != nil || !found || !o.Archived {
			t.Fatalf("lookup %s: found=%v %v", id, found, err)
		}
		if d := verify.DiffViews(oneView(id, w.want[id].View()), oneView(id, o.Current)); len(d) > 0 {
			t.Fatalf("lookup %s: %v", id, d[0])
		}
		wantParts := max(ex.parts[id], 1)
		if len(o.Parts) != wantParts {
			t.Fatalf("lookup %s: %d parts, want %d", id, len(o.Parts), wantParts)
		}
		// Each event exactly once, in exactly the file the index names.
		seen := map[uint64]string{}
		for f, rows := range files {
			for _, r := range rows[id] {
				if prev, dup := seen[r]; dup {
					t.Fatalf("order %s: event %d archived twice, in %s and %s", id, r, prev, f)
				}
				seen[r] = f
			}
		}
		if len(seen) != len(w.walSeqs[id]) || len(o.Events) != len(w.walSeqs[id]) {
			t.Fatalf("order %s: %d events in files, %d in lookup, %d were in the WAL", id, len(seen), len(o.Events), len(w.walSeqs[id]))
		}
		for i, seq := range w.walSeqs[id] {
			if o.Events[i].WalSeq != seq || seen[seq] != o.Events[i].File {
				t.Fatalf("order %s event %d: lookup %+v, file %s", id, seq, o.Events[i], seen[seq])
			}
		}
		if n := orderRows[id]; n != wantParts {
			t.Fatalf("order %s: %d rows in orders files, want %d", id, n, wantParts)
		}
		if tl, ok := w.timeline[id]; ok {
			for i, te := range tl.Events {
				ae := o.Events[i]
				if ae.WalSeq != te.WalSeq || ae.EventID != te.EventID || ae.Decision != te.Decision || ae.Reason != te.Reason {
					t.Fatalf("order %s event %d: archived %+v, timeline said %+v", id, te.WalSeq, ae, te)
				}
			}
		}
	}
	for f := range files {
		for id := range files[f] {
			if _, ok := w.want[id]; !ok || !w.want[id].Terminal() {
				t.Fatalf("file %s holds order %s, which is not finished", f, id)
			}
		}
	}
}

// checkLive checks that orders that are not finished were left alone.
func checkLive(t *testing.T, w *world) {
	t.Helper()
	ctx := context.Background()
	for _, id := range w.live {
		last, err := w.log.LastSeq(ctx, id)
		if err != nil || last != w.walSeqs[id][len(w.walSeqs[id])-1] {
			t.Fatalf("live order %s: WAL ends at %d (%v), want %d", id, last, err, w.walSeqs[id][len(w.walSeqs[id])-1])
		}
	}
}

// readEvents maps each events file to order id → WAL sequences it holds.
func readEvents(t *testing.T, s archive.Store) map[string]map[string][]uint64 {
	t.Helper()
	ctx := context.Background()
	names, err := s.List(ctx, "events/")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string][]uint64{}
	for _, n := range names {
		b, err := s.Get(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := parquet.Read[archive.EventRow](strings.NewReader(string(b)), int64(len(b)))
		if err != nil {
			t.Fatalf("read %s: %v", n, err)
		}
		out[n] = map[string][]uint64{}
		for _, r := range rows {
			out[n][r.OrderID] = append(out[n][r.OrderID], r.WalSeq)
		}
	}
	return out
}

// readOrders counts rows per order over every orders file.
func readOrders(t *testing.T, s archive.Store) map[string]int {
	t.Helper()
	ctx := context.Background()
	names, err := s.List(ctx, "orders/")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, n := range names {
		b, err := s.Get(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := parquet.Read[archive.OrderRow](strings.NewReader(string(b)), int64(len(b)))
		if err != nil {
			t.Fatalf("read %s: %v", n, err)
		}
		for _, r := range rows {
			if r.Status != "delivered" && r.Status != "cancelled" {
				t.Fatalf("%s: order %s archived as %q", n, r.OrderID, r.Status)
			}
			out[r.OrderID]++
		}
	}
	return out
}

// gathered is the value of a counter without labels in reg.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func oneView(id string, v resolver.View) map[string]resolver.View {
	return map[string]resolver.View{id: v}
}

// startServe runs the pipeline against env until the test ends.
func startServe(t *testing.T, env *testenv.NATSEnv, topo topology.Topology) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- app.Serve(ctx, app.ServeConfig{
			NATSURL:    env.URL,
			HTTPListen: "127.0.0.1:0",
			Topology:   topo,
			Logger:     quiet,
			Started:    func(app.Addrs) { close(started) },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("serve stopped before serving: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not start within 20s")
	}
}
