//go:build clickhouse_cluster

package clickhouse

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/tools/simulate"
)

// TestClusterMatchesSingleServer runs the sink with --clickhouse-cluster against one
// shard of two ClickHouse replicas (private clickhouse-server processes and a
// private ZooKeeper) and, on the same WAL, the sink against one server. Both
// replicas must hold the same rows, every table and analyst query read through the
// Distributed tables (from either replica) must give the single server's answers,
// and the migrations must apply nothing on a re-run from either replica.
//
// It needs Debian's zookeeper package: go tool task soak installs it and runs
// this with -tags clickhouse_cluster.
func TestClusterMatchesSingleServer(t *testing.T) {
	ctx := context.Background()
	env := natsWAL(t)
	cluster := testenv.ClickHouseCluster(t, 2)
	const db = "orderflow"
	layout := Layout{Cluster: cluster.Name}
	replicas := make([]driver.Conn, len(cluster.Replicas))
	for i, r := range cluster.Replicas {
		conn, err := Open(ctx, r.DSN(db))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		replicas[i] = conn
	}
	single, singleDSN := sharedDB(t)

	msgs, _, err := simulate.Generate(simulate.Config{Seed: 43, Orders: 900, Customers: 30, Restaurants: 6, Dashers: 12, InvalidRate: 0.005})
	if err != nil {
		t.Fatal(err)
	}
	// The sinks run while events arrive, in bursts a little over a second apart
	// (distinct created_at seconds for the keyset pages).
	onCluster := startSink(t, Config{DSN: cluster.Replicas[0].DSN(db), Cluster: cluster.Name, Consumer: "sink-cluster",
		BatchSize: 2000, BatchWait: 20 * time.Millisecond}, env.JS, replicas[0])
	onOne := startSink(t, Config{DSN: singleDSN, Consumer: "sink-single", BatchSize: 2000, BatchWait: 20 * time.Millisecond}, env.JS, single)
	for i := range 3 {
		publishAll(t, env.JS, msgs[i*len(msgs)/3:(i+1)*len(msgs)/3])
		time.Sleep(1100 * time.Millisecond)
	}
	last := lastWALSeq(t, env.JS)
	waitConfirmed(t, onCluster.Sink, last, 60*time.Second)
	waitConfirmed(t, onOne.Sink, last, 60*time.Second)
	t.Logf("%d WAL events confirmed by both sinks", last)

	// Replica r2 got every part through replication, not from the sink.
	for _, tbl := range append([]string{TableMigrations}, dataTables...) {
		if tbl != TableMigrations {
			tbl = layout.InsertTable(tbl)
		}
		if err := replicas[1].Exec(ctx, "SYSTEM SYNC REPLICA "+db+"."+tbl); err != nil {
			t.Fatalf("sync replica r2 %s: %v", tbl, err)
		}
	}

	t.Run("replicas hold the same rows", func(t *testing.T) {
		for _, tbl := range dataTables {
			cols := eventColumns
			if tbl != TableEvents {
				cols = orderColumns
			}
			if _, ok := entityTableOf(tbl); ok {
				cols = indexColumns()
			}
			q := fmt.Sprintf("SELECT * FROM %s FINAL ORDER BY %s", layout.InsertTable(tbl), columnNames(cols))
			r1, r2 := resultRows(t, replicas[0], q), resultRows(t, replicas[1], q)
			if len(r1) == 0 {
				t.Errorf("%s: no rows on r1", tbl)
			}
			if !slices.Equal(r1, r2) {
				t.Errorf("%s: r1 holds %d rows, r2 %d (first difference at %d)", tbl, len(r1), len(r2), firstDiff(r1, r2))
			}
		}
	})

	t.Run("tables read through Distributed match the WAL", func(t *testing.T) {
		tr := walTruth(t, env.JS)
		for i, conn := range replicas {
			t.Logf("through replica r%d", i+1)
			checkExact(t, conn, tr)
		}
	})

	t.Run("analyst queries give the single server's answers", func(t *testing.T) {
		for _, stmt := range analystExamples(t) {
			want := resultRows(t, single, stmt)
			for i, conn := range replicas {
				if got := resultRows(t, conn, stmt); !slices.Equal(got, want) {
					t.Errorf("through r%d: %d rows, one server %d (first difference at %d) for:\n%s", i+1, len(got), len(want), firstDiff(got, want), stmt)
				}
			}
		}
		since, until := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
		same := func(what string, f func(driver.Conn) (any, error)) {
			want, err := f(single)
			if err != nil {
				t.Fatalf("%s on one server: %v", what, err)
			}
			if reflect.ValueOf(want).Len() == 0 {
				t.Errorf("%s: empty on one server, the check proves nothing", what)
			}
			for i, conn := range replicas {
				got, err := f(conn)
				if err != nil {
					t.Fatalf("%s through r%d: %v", what, i+1, err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s through r%d:\n got %+v\nwant %+v", what, i+1, got, want)
				}
			}
		}
		same("StatusCounts", func(c driver.Conn) (any, error) { return StatusCounts(ctx, c, since, until, time.Minute) })
		same("PickupToDelivery", func(c driver.Conn) (any, error) {
			// Over producer clocks: the simulator's are not today's.
			return PickupToDelivery(ctx, c, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC))
		})
		for _, q := range []OrdersQuery{{Limit: 1000}, {Entity: "restaurant", ID: "res-0002", Limit: 1000}, {Entity: "dasher", ID: "dsh-00003", Limit: 50, Status: "delivered"}} {
			same(fmt.Sprintf("ListOrders %+v", q), func(c driver.Conn) (any, error) {
				p, err := ListOrders(ctx, c, q)
				return p.Orders, err
			})
		}
	})

	t.Run("migrations are idempotent", func(t *testing.T) {
		for i, conn := range replicas {
			applied, err := Migrate(ctx, conn, layout)
			if err != nil {
				t.Fatalf("re-run through r%d: %v", i+1, err)
			}
			if len(applied) != 0 {
				t.Errorf("re-run through r%d applied %v", i+1, applied)
			}
		}
		var engine string
		if err := replicas[1].QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = '"+db+"' AND name = '"+TableOrders+"'").Scan(&engine); err != nil {
			t.Fatal(err)
		}
		if engine != "Distributed" {
			t.Errorf("%s on r2 is %s, want Distributed", TableOrders, engine)
		}
	})
}

// entityTableOf reports whether table is an index table.
func entityTableOf(table string) (string, bool) {
	for kind, e := range entityTables {
		if e.table == table {
			return kind, true
		}
	}
	return "", false
}

// resultRows runs q and renders each row as one string, in the order returned.
func resultRows(t testing.TB, conn driver.Conn, q string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%v in:\n%s", err, q)
	}
	defer rows.Close()
	var out []string
	types := rows.ColumnTypes()
	for rows.Next() {
		dest := make([]any, len(types))
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, d := range dest {
			fmt.Fprintf(&b, "%v|", reflect.ValueOf(d).Elem().Interface())
		}
		out = append(out, b.String())
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
