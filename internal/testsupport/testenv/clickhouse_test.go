package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// smokeTable is valid on 18.16 and on modern ClickHouse: explicit engine
// arguments and ORDER BY, no types newer than 18.16 (DateTime64, LowCardinality).
const smokeTable = `CREATE TABLE %s.events (
	order_id String,
	seq      UInt64,
	amount   Float64,
	at       DateTime
) ENGINE = MergeTree() PARTITION BY toYYYYMM(at) ORDER BY (order_id, seq)`

func insertRows(t *testing.T, ch *ClickHouseEnv, db string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The explicit column list is required by 18.16 (DESIGN.md §7).
	batch, err := ch.Conn.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s.events (order_id, seq, amount, at)", db))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range n {
		if err := batch.Append(fmt.Sprintf("o%d", i%100), uint64(i+1), float64(i)/2, at); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
}

func countAndSum(t *testing.T, ch *ClickHouseEnv, db string) (count, sum uint64, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = ch.Conn.QueryRow(ctx, fmt.Sprintf("SELECT count(), sum(seq) FROM %s.events", db)).Scan(&count, &sum)
	return count, sum, err
}

func TestSharedClickHouseBatchInsert(t *testing.T) {
	ch := SharedClickHouse(t)
	db := ch.CreateDatabase(t)
	v, err := ch.Conn.ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server: %s", v)

	ctx := context.Background()
	if err := ch.Conn.Exec(ctx, fmt.Sprintf(smokeTable, db)); err != nil {
		t.Fatal(err)
	}
	const n = 10_000
	insertRows(t, ch, db, n)
	count, sum, err := countAndSum(t, ch, db)
	if err != nil {
		t.Fatal(err)
	}
	if count != n || sum != n*(n+1)/2 {
		t.Fatalf("count=%d sum=%d, want %d and %d", count, sum, n, n*(n+1)/2)
	}
	var at time.Time
	if err := ch.Conn.QueryRow(ctx, fmt.Sprintf("SELECT max(at) FROM %s.events", db)).Scan(&at); err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC); !at.Equal(want) {
		t.Fatalf("max(at) = %s, want %s", at, want)
	}
}

func TestSharedClickHouseIsolatesDatabases(t *testing.T) {
	ch := SharedClickHouse(t)
	a, b := ch.CreateDatabase(t), ch.CreateDatabase(t)
	if a == b {
		t.Fatalf("CreateDatabase returned %s twice", a)
	}
	if err := ch.Conn.Exec(context.Background(), fmt.Sprintf(smokeTable, a)); err != nil {
		t.Fatal(err)
	}
	if err := ch.Conn.Exec(context.Background(), fmt.Sprintf("SELECT 1 FROM %s.events", b)); err == nil {
		t.Fatalf("table created in %s is visible in %s", a, b)
	}
}

// TestClickHouseOutage is what sink tests will do: the server goes away, inserts
// fail, it comes back with its data and the same Conn works again.
func TestClickHouseOutage(t *testing.T) {
	ch := ClickHouse(t)
	db := ch.CreateDatabase(t)
	if err := ch.Conn.Exec(context.Background(), fmt.Sprintf(smokeTable, db)); err != nil {
		t.Fatal(err)
	}
	insertRows(t, ch, db, 100)

	began := time.Now()
	ch.Stop(t)
	t.Logf("graceful stop took %s", time.Since(began).Round(time.Millisecond))
	if _, _, err := countAndSum(t, ch, db); err == nil {
		t.Fatal("query succeeded while the server was stopped")
	}

	ch.Start(t)
	t.Logf("restart took %s", ch.StartupTime.Round(time.Millisecond))
	count, _, err := countAndSum(t, ch, db)
	if err != nil {
		t.Fatalf("query after restart: %v", err)
	}
	if count != 100 {
		t.Fatalf("count after restart = %d, want 100", count)
	}
}

func TestMissingClickHouseSaysHowToInstall(t *testing.T) {
	_, err := findClickHouse(func(string) (string, error) { return "", exec.ErrNotFound })
	if err == nil || err.Error() != errNoClickHouse {
		t.Fatalf("err = %v, want %q", err, errNoClickHouse)
	}
}

// TestClickHouseStartFailureShowsLog: when the server cannot start, the error
// must carry its log, or CI failures are guesswork.
func TestClickHouseStartFailureShowsLog(t *testing.T) {
	ch := ClickHouse(t)
	ch.Stop(t)
	// Take the HTTP port: taking the native one would make the readiness ping
	// talk to this listener until it times out.
	l, err := net.Listen("tcp", ch.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = ch.start()
	if err == nil {
		t.Fatal("start succeeded on a taken port")
	}
	if !strings.Contains(err.Error(), "server.err.log") || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("error does not show the server's log:\n%v", err)
	}
}
