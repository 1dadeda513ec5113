package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// testLogger logs to the test output with -v when ORDERFLOW_TEST_LOG is set.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("ORDERFLOW_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// natsWAL starts JetStream with the orderflow topology provisioned.
func natsWAL(t testing.TB) *testenv.NATSEnv {
	t.Helper()
	env := testenv.NATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	return env
}

// sharedDB opens a fresh database on the shared ClickHouse through Open.
func sharedDB(t testing.TB) (driver.Conn, string) {
	t.Helper()
	env := testenv.SharedClickHouse(t)
	db := env.CreateDatabase(t)
	dsn := env.DSN(db)
	conn, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, dsn
}

func publishAll(t testing.TB, js jetstream.JetStream, msgs []simulate.Message) {
	t.Helper()
	if err := simulate.PublishAll(context.Background(), js, msgs, 0); err != nil {
		t.Fatal(err)
	}
}

func workload(t testing.TB, seed int64, orders int, invalid float64) []simulate.Message {
	t.Helper()
	msgs, sum, err := simulate.Generate(simulate.Config{Seed: seed, Orders: orders, InvalidRate: invalid})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Duplicates == 0 {
		t.Fatalf("workload has no duplicates: %s", sum)
	}
	return msgs
}

// runningSink runs a sink until the test ends or stop is called.
type runningSink struct {
	*Sink
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, with err set
	err    error
}

func (r *runningSink) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("sink: %v", r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sink did not stop within 30s")
	}
}

func startSink(t testing.TB, cfg Config, js jetstream.JetStream, conn driver.Conn) *runningSink {
	t.Helper()
	return startSinkWith(t, cfg, js, conn, nil)
}

func startSinkWith(t testing.TB, cfg Config, js jetstream.JetStream, conn driver.Conn, reg prometheus.Registerer) *runningSink {
	t.Helper()
	s, err := NewSink(cfg, js, conn, reg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningSink{Sink: s, cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = s.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

func lastWALSeq(t testing.TB, js jetstream.JetStream) uint64 {
	t.Helper()
	return testenv.WALLastSeq(t, js)
}

func waitConfirmed(t testing.TB, s *Sink, seq uint64, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := s.WaitConfirmed(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

// truth is what the tables must say, recomputed from the WAL with the pure
// resolver, as the HTTP timeline does.
type truth struct {
	decisions map[uint64][3]string // wal_seq -> order token, decision, reason
	perOrder  map[string]uint64    // order token -> WAL events
	states    map[string]*resolver.State
	created   map[string]time.Time // first valid event's WAL time
	rejected  int
}

func walTruth(t testing.TB, js jetstream.JetStream) truth {
	t.Helper()
	tr := truth{decisions: map[uint64][3]string{}, perOrder: map[string]uint64{},
		states: map[string]*resolver.State{}, created: map[string]time.Time{}}
	err := wal.ReadRange(context.Background(), js, topology.WALPrefix+".>", 1, lastWALSeq(t, js), func(r wal.Record) error {
		_, token := subjectTokens(r.Subject)
		tr.perOrder[token]++
		ev, rej := fold.Classify(r)
		if rej != nil {
			tr.rejected++
			tr.decisions[r.Seq] = [3]string{token, string(resolver.Rejected), rej.Reason}
			return nil
		}
		st, ok := tr.states[ev.OrderID]
		if !ok {
			st = resolver.New(ev.OrderID)
			tr.states[ev.OrderID] = st
			tr.created[ev.OrderID] = r.Time
		}
		d := st.Apply(ev, r.Seq)
		tr.decisions[r.Seq] = [3]string{token, string(d.Outcome), string(d.Reason)}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// checkExact compares every table with the WAL: one event row per WAL message with
// its timeline decision, each order's newest state, each index's live entries.
func checkExact(t testing.TB, conn driver.Conn, tr truth) {
	t.Helper()
	ctx := context.Background()
	var raw, final uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM order_events").Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count() FROM order_events FINAL").Scan(&final); err != nil {
		t.Fatal(err)
	}
	t.Logf("order_events: %d rows stored, %d after dedup, %d WAL events (%d rejected before resolution)", raw, final, len(tr.decisions), tr.rejected)
	if final != uint64(len(tr.decisions)) {
		t.Errorf("order_events FINAL holds %d events, the WAL %d", final, len(tr.decisions))
	}

	rows, err := conn.Query(ctx, "SELECT wal_seq, order_id, decision, reason FROM order_events FINAL")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	bad := 0
	for rows.Next() {
		var seq uint64
		var got [3]string
		if err := rows.Scan(&seq, &got[0], &got[1], &got[2]); err != nil {
			t.Fatal(err)
		}
		if seen[seq] {
			t.Errorf("wal_seq %d twice after FINAL", seq)
		}
		seen[seq] = true
		if want, ok := tr.decisions[seq]; !ok || want != got {
			if bad++; bad <= 5 {
				t.Errorf("wal_seq %d: got %v, want %v", seq, got, want)
			}
		}
	}
	rows.Close()
	if bad > 0 {
		t.Errorf("%d events with a wrong decision", bad)
	}

	// Exact counts per order without FINAL: uniqExact over the dedup key.
	counts := map[string]uint64{}
	rows, err = conn.Query(ctx, "SELECT order_id, uniqExact(wal_seq) FROM order_events GROUP BY order_id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var n uint64
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		counts[id] = n
	}
	rows.Close()
	if diff := diffCounts(tr.perOrder, counts); diff != "" {
		t.Errorf("events per order differ from the WAL: %s", diff)
	}

	// Current state per order.
	type cur struct {
		status, source, cust, rest, dasher string
		predicted                          uint8
		version                            uint64
		events                             uint32
		created                            time.Time
	}
	got := map[string]cur{}
	rows, err = conn.Query(ctx, `SELECT order_id, argMax(status, version), argMax(status_source, version),
		argMax(customer_id, version), argMax(restaurant_id, version), argMax(dasher_id, version),
		argMax(predicted, version), max(version), argMax(events, version), any(created_at)
		FROM orders GROUP BY order_id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var c cur
		if err := rows.Scan(&id, &c.status, &c.source, &c.cust, &c.rest, &c.dasher, &c.predicted, &c.version, &c.events, &c.created); err != nil {
			t.Fatal(err)
		}
		got[id] = c
	}
	rows.Close()
	want := map[string]cur{}
	for id, st := range tr.states {
		v := st.View()
		if v.Status == "" {
			continue
		}
		want[id] = cur{string(v.Status), string(v.StatusSource), v.CustomerID, v.RestaurantID, v.DasherID,
			b2u(v.Predicted), st.WalSeq(), 0, tr.created[id].Truncate(time.Second).UTC()}
	}
	bad = 0
	for id, w := range want {
		g, ok := got[id]
		g.events = 0
		g.created = g.created.UTC()
		if !ok || g != w {
			if bad++; bad <= 5 {
				t.Errorf("order %s: got %+v, want %+v", id, g, w)
			}
		}
	}
	if len(got) != len(want) {
		t.Errorf("orders holds %d orders, want %d", len(got), len(want))
	}

	// Index tables: the live (entity, order) pairs are exactly the current ids.
	for k := range numKinds {
		tbl := entityTables[kindNames[k]]
		live := map[[2]string]bool{}
		rows, err := conn.Query(ctx, fmt.Sprintf(`SELECT %s, order_id FROM (
			SELECT %[1]s, order_id, argMax(active, version) AS a FROM %s GROUP BY %[1]s, created_at, order_id) WHERE a = 1`, tbl.key, tbl.table))
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var key, id string
			if err := rows.Scan(&key, &id); err != nil {
				t.Fatal(err)
			}
			if live[[2]string{key, id}] {
				t.Errorf("%s: %s/%s twice", tbl.table, key, id)
			}
			live[[2]string{key, id}] = true
		}
		rows.Close()
		n := 0
		for id, st := range tr.states {
			v := st.View()
			if v.Status == "" {
				continue
			}
			if key := entityIDs(&v)[k]; key != "" {
				n++
				if !live[[2]string{key, id}] {
					t.Errorf("%s: order %s missing under %s", tbl.table, id, key)
				}
			}
		}
		if n != len(live) {
			t.Errorf("%s: %d live entries, want %d", tbl.table, len(live), n)
		}
	}
}

func diffCounts(want, got map[string]uint64) string {
	var diffs []string
	for id, w := range want {
		if got[id] != w {
			diffs = append(diffs, fmt.Sprintf("%q: got %d want %d", id, got[id], w))
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok {
			diffs = append(diffs, fmt.Sprintf("%q: got %d want 0", id, g))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 5 {
		diffs = append(diffs[:5], fmt.Sprintf("... %d in all", len(diffs)))
	}
	if len(diffs) == 0 {
		return ""
	}
	return fmt.Sprint(diffs)
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
