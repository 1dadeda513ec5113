package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/testsupport/testrun"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
	chsink "github.com/orderflow/orderflow/sinks/clickhouse"
)

// TestClickHouseEndToEnd runs serve with the ClickHouse sink on a private server and
// checks the analyst interface a user has: the HTTP entity lists page through every
// order of a restaurant exactly once, `orderflow query` answers, and a replay of the
// whole range leaves the counts unchanged.
func TestClickHouseEndToEnd(t *testing.T) {
	ch := testenv.ClickHouse(t)
	env := testenv.NATS(t)
	db := ch.CreateDatabase(t)
	dsn := ch.DSN(db)
	inst := startInstance(t, append([]string{"--nats-url", env.URL, "--clickhouse-dsn", dsn, "--clickhouse-batch-wait", "100ms"}, failoverArgs...)...)
	msgs, _ := testrun.PublishDrained(t, env.JS, simulate.Config{Seed: 41, Orders: 400, Restaurants: 5})
	ctx := context.Background()
	// An event the DLQ takes, addressed to a real order: its row in order_events
	// must not count as one of the order's events when verify compares.
	bad := nats.NewMsg("orders.events.driver." + msgs[0].Event.OrderID)
	bad.Data = []byte("{not json")
	if _, err := env.JS.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}
	if err := pipelines.WaitDrained(ctx, env.JS, time.Minute); err != nil {
		t.Fatal(err)
	}
	waitSink := func() {
		t.Helper()
		waitConsumed(t, env.JS, topology.EventsStream, chsink.DefaultConsumer)
	}
	waitSink()

	// Every order of one restaurant, over HTTP, page by page, exactly once.
	want := map[string]bool{}
	restaurant := ""
	for id, v := range verify.Views(verify.FoldMessages(msgs)) {
		if restaurant == "" {
			restaurant = v.RestaurantID
		}
		if v.RestaurantID == restaurant {
			want[id] = true
		}
	}
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		url := "http://" + inst.HTTP + "/v1/restaurants/" + restaurant + "/orders?limit=7&since=1h"
		if cursor != "" {
			url += "&cursor=" + cursor
		}
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		var page chsink.OrdersPage
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
		}
		for _, o := range page.Orders {
			if seen[o.OrderID] || !want[o.OrderID] {
				t.Fatalf("order %s listed twice or under the wrong restaurant", o.OrderID)
			}
			seen[o.OrderID] = true
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("pages listed %d orders of restaurant %s, want %d", len(seen), restaurant, len(want))
	}

	out, err := orderflow(t, "query", "orders", "--clickhouse-dsn", dsn, "--restaurant", restaurant, "--status", "delivered", "--json", "--limit", "1000")
	if err != nil {
		t.Fatalf("query orders: %v\n%s", err, out)
	}
	var page chsink.OrdersPage
	if err := json.Unmarshal([]byte(out), &page); err != nil || len(page.Orders) == 0 {
		t.Fatalf("query orders: %v\n%s", err, out)
	}
	if out, err := orderflow(t, "query", "stats", "--clickhouse-dsn", dsn, "--since", "1h"); err != nil || !strings.Contains(out, "delivered") {
		t.Fatalf("query stats: %v\n%s", err, out)
	}

	// Corrupt ClickHouse: lose rows of two orders; verify must notice, replay repair.
	url := "--nats-url=" + env.URL
	if out, err := orderflow(t, "verify", url, "--clickhouse-dsn", dsn); err != nil {
		t.Fatalf("verify before corruption: %v\n%s", err, out)
	}
	victims := []string{msgs[0].Event.OrderID, msgs[100].Event.OrderID}
	for _, table := range []string{"orders", "order_events"} {
		if err := ch.Conn.Exec(ctx, "ALTER TABLE "+db+"."+table+" DELETE WHERE order_id IN ('"+victims[0]+"', '"+victims[1]+"')"); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := orderflow(t, "verify", url, "--clickhouse-dsn", dsn)
		if err != nil && strings.Contains(out, victims[0]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("verify did not notice the lost rows:\n%s", out)
		}
		time.Sleep(300 * time.Millisecond) // mutations apply asynchronously
	}

	// Rows as queries see them (FINAL merges replaced rows): a replay that added a
	// second copy of any event would show here.
	count := func() uint64 {
		var n uint64
		if err := ch.Conn.QueryRow(ctx, "SELECT count() FROM "+db+".order_events FINAL").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if out, err := orderflow(t, "replay", "--nats-url", env.URL, "--target", "clickhouse", "--from-seq", "1", "--force"); err != nil {
		t.Fatalf("replay clickhouse: %v\n%s", err, out)
	}
	time.Sleep(500 * time.Millisecond)
	waitSink()
	if out, err := orderflow(t, "verify", url, "--clickhouse-dsn", dsn); err != nil {
		t.Fatalf("verify after replay: %v\n%s", err, out)
	}
	// Replaying the same range again leaves the counts unchanged.
	before := count()
	if out, err := orderflow(t, "replay", "--nats-url", env.URL, "--target", "clickhouse", "--from-seq", "1", "--force"); err != nil {
		t.Fatalf("second replay: %v\n%s", err, out)
	}
	time.Sleep(500 * time.Millisecond)
	waitSink()
	if after, wal := count(), walState(t, env.JS).Msgs; after != before || before != wal {
		t.Fatalf("order_events holds %d rows before the second replay and %d after; the WAL has %d events", before, after, wal)
	}
}
