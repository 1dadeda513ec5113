package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// orderTruth is one order as the queries must see it, folded from the WAL here with
// the resolver alone.
type orderTruth struct {
	view                resolver.View
	created             int64 // WAL time of the first valid event, Unix seconds
	pickedUp, delivered int64 // occurred_at of the event that first reached it, 0: never
}

type transitionTruth struct {
	stored  int64
	status  string
	orderID string
}

type queryTruth struct {
	orders      map[string]*orderTruth
	transitions []transitionTruth
}

func foldQueryTruth(t testing.TB, js jetstream.JetStream) queryTruth {
	t.Helper()
	tq := queryTruth{orders: map[string]*orderTruth{}}
	states := map[string]*resolver.State{}
	err := wal.ReadRange(context.Background(), js, topology.WALPrefix+".>", 1, lastWALSeq(t, js), func(r wal.Record) error {
		ev, rej := fold.Classify(r)
		if rej != nil {
			return nil
		}
		st, ok := states[ev.OrderID]
		if !ok {
			st = resolver.New(ev.OrderID)
			states[ev.OrderID] = st
			tq.orders[ev.OrderID] = &orderTruth{created: r.Time.Unix()}
		}
		o := tq.orders[ev.OrderID]
		before := st.View()
		st.Apply(ev, r.Seq)
		after := st.View()
		if after.Status != "" && !after.Predicted && (after.Status != before.Status || before.Predicted) {
			tq.transitions = append(tq.transitions, transitionTruth{r.Time.Unix(), string(after.Status), ev.OrderID})
		}
		for _, m := range st.Milestones() {
			switch {
			case m == schemas.StatusPickedUp && o.pickedUp == 0:
				o.pickedUp = ev.OccurredAt.Unix()
			case m == schemas.StatusDelivered && o.delivered == 0:
				o.delivered = ev.OccurredAt.Unix()
			}
		}
		o.view = after
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tq
}

// expect lists the order ids ListOrders must return for q, in order.
func (tq queryTruth) expect(q OrdersQuery) []string {
	type row struct {
		id      string
		created int64
	}
	var rows []row
	for id, o := range tq.orders {
		v := o.view
		if v.Status == "" || q.Status != "" && string(v.Status) != q.Status {
			continue
		}
		if q.Entity != "" {
			k := slices.Index(kindNames[:], q.Entity)
			if entityIDs(&v)[k] != q.ID {
				continue
			}
		}
		if !q.Since.IsZero() && o.created < ceilSeconds(q.Since) || !q.Until.IsZero() && o.created >= ceilSeconds(q.Until) {
			continue
		}
		rows = append(rows, row{id, o.created})
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].created != rows[j].created {
			return rows[i].created > rows[j].created
		}
		return rows[i].id > rows[j].id
	})
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.id
	}
	return ids
}

// allPages follows cursors to the end and returns the order ids in page order.
func allPages(t testing.TB, conn driver.Conn, q OrdersQuery) ([]string, int) {
	t.Helper()
	var ids []string
	pages := 0
	for {
		page, err := ListOrders(context.Background(), conn, q)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(page.Orders) > q.Limit && q.Limit > 0 {
			t.Fatalf("page of %d orders, limit %d", len(page.Orders), q.Limit)
		}
		for _, o := range page.Orders {
			ids = append(ids, o.OrderID)
		}
		if page.NextCursor == "" {
			return ids, pages
		}
		if pages > 10_000 {
			t.Fatal("pagination does not end")
		}
		q.Cursor = page.NextCursor
	}
}

// topEntities returns the ids of kind k with the most orders.
func (tq queryTruth) topEntities(k, n int) []string {
	count := map[string]int{}
	for _, o := range tq.orders {
		if id := entityIDs(&o.view)[k]; id != "" && o.view.Status != "" {
			count[id]++
		}
	}
	var ids []string
	for id := range count {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		return count[ids[i]] > count[ids[j]] || count[ids[i]] == count[ids[j]] && ids[i] < ids[j]
	})
	return ids[:min(n, len(ids))]
}

// TestQueries fills ClickHouse through the sink with orders created over several
// seconds and checks every query against the WAL folded here.
func TestQueries(t *testing.T) {
	env := natsWAL(t)
	conn, dsn := sharedDB(t)
	s := startSink(t, Config{DSN: dsn, BatchSize: 2000, BatchWait: 20 * time.Millisecond}, env.JS, conn)
	msgs, _, err := simulate.Generate(simulate.Config{Seed: 41, Orders: 900, Customers: 30, Restaurants: 6, Dashers: 12, InvalidRate: 0.005})
	if err != nil {
		t.Fatal(err)
	}
	// Three bursts a little over a second apart: orders get distinct created_at seconds.
	for i := range 3 {
		publishAll(t, env.JS, msgs[i*len(msgs)/3:(i+1)*len(msgs)/3])
		time.Sleep(1100 * time.Millisecond)
	}
	waitConfirmed(t, s.Sink, lastWALSeq(t, env.JS), 30*time.Second)
	tq := foldQueryTruth(t, env.JS)
	ctx := context.Background()

	t.Run("pagination", func(t *testing.T) {
		var qs []OrdersQuery
		for k := range numKinds {
			for _, id := range tq.topEntities(k, 2) {
				qs = append(qs, OrdersQuery{Entity: kindNames[k], ID: id, Limit: 7},
					OrdersQuery{Entity: kindNames[k], ID: id, Limit: 1000},
					OrdersQuery{Entity: kindNames[k], ID: id, Limit: 3, Status: "delivered"})
			}
		}
		qs = append(qs, OrdersQuery{Limit: 100}, OrdersQuery{Limit: 37, Status: "cancelled"},
			OrdersQuery{Entity: "dasher", ID: tq.topEntities(kindDasher, 1)[0], Limit: 1})
		for _, q := range qs {
			want := tq.expect(q)
			got, pages := allPages(t, conn, q)
			if !slices.Equal(got, want) {
				t.Errorf("%+v: %d orders over %d pages, want %d (first difference at %d)", q, len(got), pages, len(want), firstDiff(got, want))
			}
			if len(want) == 0 {
				t.Errorf("%+v: the fixture has no such orders, the check proves nothing", q)
			}
		}
	})

	t.Run("pages while orders change", func(t *testing.T) {
		q := OrdersQuery{Entity: "restaurant", ID: tq.topEntities(kindRestaurant, 1)[0], Limit: 5}
		want := tq.expect(q)
		page, err := ListOrders(ctx, conn, q)
		if err != nil {
			t.Fatal(err)
		}
		got := []string{}
		for _, o := range page.Orders {
			got = append(got, o.OrderID)
		}
		// New orders and updates land between pages; the walk still returns every
		// order that existed once, in order, and nothing newer than its first page.
		more, _, err := simulate.Generate(simulate.Config{Seed: 42, Orders: 60, Customers: 30, Restaurants: 6, Dashers: 12})
		if err != nil {
			t.Fatal(err)
		}
		publishAll(t, env.JS, more)
		waitConfirmed(t, s.Sink, lastWALSeq(t, env.JS), 30*time.Second)
		q.Cursor = page.NextCursor
		rest, _ := allPages(t, conn, q)
		got = append(got, rest...)
		if !slices.Equal(got, want) {
			t.Errorf("got %d orders, want %d (first difference at %d)", len(got), len(want), firstDiff(got, want))
		}
		tq = foldQueryTruth(t, env.JS) // the later subtests see the new orders too
	})

	t.Run("time range boundaries", func(t *testing.T) {
		var secs []int64
		for _, o := range tq.orders {
			if o.view.Status != "" && !slices.Contains(secs, o.created) {
				secs = append(secs, o.created)
			}
		}
		slices.Sort(secs)
		if len(secs) < 3 {
			t.Fatalf("orders were created within %d distinct seconds, need 3", len(secs))
		}
		lo, hi := time.Unix(secs[1], 0), time.Unix(secs[len(secs)-1], 0)
		rest := tq.topEntities(kindRestaurant, 1)[0]
		for _, q := range []OrdersQuery{
			{Since: lo, Until: hi},                          // lo included, hi excluded
			{Since: lo.Add(time.Nanosecond), Until: hi},     // rounds up: lo excluded
			{Since: lo, Until: hi.Add(time.Nanosecond)},     // rounds up: hi included
			{Since: lo.Add(-time.Second + time.Nanosecond)}, // == lo
			{Until: lo}, // everything before lo
			{Entity: "restaurant", ID: rest, Since: lo, Until: hi}, // same on an index table
			{Entity: "restaurant", ID: rest, Until: lo},
			{Entity: "restaurant", ID: rest, Since: hi, Status: "delivered"},
		} {
			q.Limit = 4
			want := tq.expect(q)
			got, _ := allPages(t, conn, q)
			if !slices.Equal(got, want) {
				t.Errorf("since %v until %v entity %q: %d orders, want %d (first difference at %d)",
					q.Since.Unix(), q.Until.Unix(), q.Entity, len(got), len(want), firstDiff(got, want))
			}
		}
	})

	t.Run("status filter", func(t *testing.T) {
		rest := tq.topEntities(kindRestaurant, 1)[0]
		total := 0
		for _, st := range schemas.Statuses {
			q := OrdersQuery{Entity: "restaurant", ID: rest, Status: string(st), Limit: MaxLimit}
			want := tq.expect(q)
			got, _ := allPages(t, conn, q)
			total += len(got)
			if !slices.Equal(got, want) {
				t.Errorf("status %s: %d orders, want %d", st, len(got), len(want))
			}
		}
		if all := tq.expect(OrdersQuery{Entity: "restaurant", ID: rest}); total != len(all) {
			t.Errorf("statuses add up to %d orders, the restaurant has %d", total, len(all))
		}
	})

	t.Run("row fields", func(t *testing.T) {
		page, err := ListOrders(ctx, conn, OrdersQuery{Limit: MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Orders {
			o := tq.orders[r.OrderID]
			v := o.view
			if r.Status != string(v.Status) || r.StatusSource != string(v.StatusSource) || r.Predicted != v.Predicted ||
				r.CustomerID != v.CustomerID || r.RestaurantID != v.RestaurantID || r.DasherID != v.DasherID ||
				r.CreatedAt.Unix() != o.created || r.WalSeq != v.WalSeq {
				t.Fatalf("order %s: row %+v, want view %+v created %d", r.OrderID, r, v, o.created)
			}
			if (r.PickedUpAt != nil) != (o.pickedUp != 0) || r.PickedUpAt != nil && r.PickedUpAt.Unix() != o.pickedUp {
				t.Fatalf("order %s: picked_up_at %v, want %d", r.OrderID, r.PickedUpAt, o.pickedUp)
			}
		}
	})

	t.Run("status counts", func(t *testing.T) {
		lo, hi := int64(1<<62), int64(0)
		for _, tr := range tq.transitions {
			lo, hi = min(lo, tr.stored), max(hi, tr.stored)
		}
		for _, bucket := range []time.Duration{time.Second, time.Hour} {
			n := int64(bucket / time.Second)
			want := map[string]map[string]bool{}
			for _, tr := range tq.transitions {
				if tr.stored < lo+1 { // since = lo+1: the first second is left out
					continue
				}
				key := fmt.Sprintf("%d/%s", tr.stored/n*n, tr.status)
				if want[key] == nil {
					want[key] = map[string]bool{}
				}
				want[key][tr.orderID] = true
			}
			got, err := StatusCounts(ctx, conn, time.Unix(lo+1, 0), time.Unix(hi+1, 0), bucket)
			if err != nil {
				t.Fatal(err)
			}
			seen := 0
			for _, c := range got {
				key := fmt.Sprintf("%d/%s", c.Bucket.Unix(), c.Status)
				if uint64(len(want[key])) != c.Orders {
					t.Errorf("bucket %s: %s %d, want %d", bucket, key, c.Orders, len(want[key]))
				}
				seen++
			}
			if seen != len(want) || seen == 0 {
				t.Errorf("bucket %s: %d counts, want %d", bucket, seen, len(want))
			}
		}
		if _, err := StatusCounts(ctx, conn, time.Unix(hi, 0), time.Unix(lo, 0), time.Hour); !errors.Is(err, ErrBadQuery) {
			t.Errorf("an empty range gave %v, want ErrBadQuery", err)
		}
	})

	t.Run("analyst examples", func(t *testing.T) {
		for _, stmt := range analystExamples(t) {
			rows, err := conn.Query(ctx, stmt)
			if err != nil {
				t.Errorf("%v in:\n%s", err, stmt)
				continue
			}
			rows.Close()
		}
	})

	t.Run("pickup to delivery", func(t *testing.T) {
		durations := map[string][]int64{}
		for _, o := range tq.orders {
			if o.view.Status == schemas.StatusDelivered && o.pickedUp > 0 && o.delivered >= o.pickedUp {
				durations[o.view.RestaurantID] = append(durations[o.view.RestaurantID], o.delivered-o.pickedUp)
			}
		}
		got, err := PickupToDelivery(ctx, conn, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(durations) || len(got) == 0 {
			t.Fatalf("%d restaurants, want %d", len(got), len(durations))
		}
		for _, g := range got {
			d := durations[g.RestaurantID]
			slices.Sort(d)
			var sum int64
			for _, x := range d {
				sum += x
			}
			at := func(q float64) time.Duration {
				return time.Duration(d[min(len(d)-1, int(q*float64(len(d))))]) * time.Second
			}
			avg := time.Duration(float64(sum) / float64(len(d)) * float64(time.Second))
			if g.Orders != uint64(len(d)) || g.P50 != at(0.5) || g.P90 != at(0.9) || (g.Avg-avg).Abs() > time.Millisecond {
				t.Errorf("restaurant %s: got %+v, want %d orders p50 %s p90 %s avg %s", g.RestaurantID, g, len(d), at(0.5), at(0.9), avg)
			}
		}
	})
}

// analystExamples are the statements of testdata/analyst.sql (the README's examples).
func analystExamples(t testing.TB) []string {
	t.Helper()
	sql, err := os.ReadFile("testdata/analyst.sql")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, stmt := range strings.Split(string(sql), ";\n") {
		if strings.TrimSpace(stripComments(stmt)) != "" {
			out = append(out, stmt)
		}
	}
	if len(out) < 8 {
		t.Fatalf("testdata/analyst.sql holds %d statements", len(out))
	}
	return out
}

func stripComments(sql string) string {
	var out []string
	for _, l := range strings.Split(sql, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestEntityChange moves an order to another dasher (an agent correction), across
// batches and back and forth within one: the index lists it under its current
// dasher only.
func TestEntityChange(t *testing.T) {
	env := natsWAL(t)
	conn, dsn := sharedDB(t)
	s := startSink(t, Config{DSN: dsn, BatchSize: 100, BatchWait: 10 * time.Millisecond}, env.JS, conn)
	seq := map[schemas.Source]uint64{}
	publish := func(order string, src schemas.Source, status, dasher string, observed map[schemas.Source]uint64) {
		seq[src]++
		ev := schemas.Event{SchemaVersion: 1, EventID: fmt.Sprintf("%s-%s-%d", order, src, seq[src]), OrderID: order,
			Source: src, SourceSeq: seq[src], OccurredAt: time.Now().UTC().Truncate(time.Second),
			Status: schemas.Status(status), DasherID: dasher, Observed: observed}
		if src == schemas.SourcePlatform {
			ev.CustomerID, ev.RestaurantID = "c1", "r1"
		}
		if src == schemas.SourceAgent {
			ev.Reason = "dasher swapped"
		}
		body := mustJSON(t, ev)
		m := nats.NewMsg(schemas.Subject(src, order))
		m.Data = body
		m.Header.Set(nats.MsgIdHdr, ev.EventID)
		if _, err := env.JS.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	settle := func() { waitConfirmed(t, s.Sink, lastWALSeq(t, env.JS), 20*time.Second) }
	dashers := func() map[string][]string {
		out := map[string][]string{}
		for _, d := range []string{"d1", "d2", "d3"} {
			ids, _ := allPages(t, conn, OrdersQuery{Entity: "dasher", ID: d, Limit: 10})
			out[d] = ids
		}
		return out
	}

	publish("o1", schemas.SourcePlatform, "created", "", nil)
	publish("o1", schemas.SourceDriver, "picked_up", "d1", nil)
	settle()
	if got := dashers(); !slices.Equal(got["d1"], []string{"o1"}) || len(got["d2"]) != 0 {
		t.Fatalf("after pickup by d1: %v", got)
	}
	// Across batches: d1 -> d2.
	publish("o1", schemas.SourceAgent, "picked_up", "d2", map[schemas.Source]uint64{schemas.SourceDriver: 1})
	settle()
	if got := dashers(); len(got["d1"]) != 0 || !slices.Equal(got["d2"], []string{"o1"}) {
		t.Fatalf("after the agent moved it to d2: %v", got)
	}
	// Within one batch: d2 -> d3 -> d2 (two agent corrections in a row, one write).
	s.stop(t)
	publish("o1", schemas.SourceAgent, "picked_up", "d3", map[schemas.Source]uint64{schemas.SourceDriver: 1})
	publish("o1", schemas.SourceAgent, "en_route", "d2", map[schemas.Source]uint64{schemas.SourceDriver: 1})
	s = startSink(t, Config{DSN: dsn, BatchSize: 100, BatchWait: 10 * time.Millisecond}, env.JS, conn)
	settle()
	if got := dashers(); len(got["d1"]) != 0 || len(got["d3"]) != 0 || !slices.Equal(got["d2"], []string{"o1"}) {
		t.Fatalf("after d3 and back to d2 in one batch: %v", got)
	}
	page, err := ListOrders(context.Background(), conn, OrdersQuery{Entity: "dasher", ID: "d2"})
	if err != nil {
		t.Fatal(err)
	}
	if r := page.Orders[0]; r.Status != "en_route" || r.DasherID != "d2" || r.CustomerID != "c1" {
		t.Fatalf("row %+v", r)
	}
	checkExact(t, conn, walTruth(t, env.JS))
}

func TestOrdersQueryValidate(t *testing.T) {
	good := encodeCursor(time.Unix(1700000000, 0), "o-1")
	for _, tc := range []struct {
		q   OrdersQuery
		bad string
	}{
		{OrdersQuery{}, ""},
		{OrdersQuery{Entity: "restaurant", ID: "r 1", Status: "delivered", Cursor: good, Limit: MaxLimit}, ""},
		{OrdersQuery{Entity: "driver", ID: "x"}, "entity"},
		{OrdersQuery{Entity: "customer"}, "entity id"},
		{OrdersQuery{Entity: "customer", ID: strings.Repeat("x", 65)}, "entity id"},
		{OrdersQuery{Entity: "customer", ID: "a\nb"}, "entity id"},
		{OrdersQuery{ID: "x"}, "needs an entity"},
		{OrdersQuery{Status: "lost"}, "unknown status"},
		{OrdersQuery{Since: time.Unix(10, 0), Until: time.Unix(10, 0)}, "until"},
		{OrdersQuery{Limit: MaxLimit + 1}, "limit"},
		{OrdersQuery{Limit: -1}, "limit"},
		{OrdersQuery{Cursor: "!!"}, "cursor"},
		{OrdersQuery{Cursor: encodeCursor(time.Unix(5, 0), "")}, "cursor"},
	} {
		err := tc.q.Validate()
		if tc.bad == "" && err != nil || tc.bad != "" && (err == nil || !errors.Is(err, ErrBadQuery) || !strings.Contains(err.Error(), tc.bad)) {
			t.Errorf("%+v: got %v, want error containing %q", tc.q, err, tc.bad)
		}
	}
	sec, id, err := decodeCursor(good)
	if err != nil || sec != 1700000000 || id != "o-1" {
		t.Errorf("cursor round trip: %d %q %v", sec, id, err)
	}
}

func TestParseOrdersQuery(t *testing.T) {
	now := time.Date(2026, 1, 5, 12, 0, 0, 0, time.UTC)
	q, err := ParseOrdersQuery("restaurants", "r-1", url.Values{
		"since": {"2h"}, "until": {"2026-01-05T11:30:00Z"}, "status": {"delivered"}, "limit": {"20"},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	want := OrdersQuery{Entity: "restaurant", ID: "r-1", Status: "delivered", Limit: 20,
		Since: now.Add(-2 * time.Hour), Until: time.Date(2026, 1, 5, 11, 30, 0, 0, time.UTC)}
	if q != want {
		t.Fatalf("got %+v, want %+v", q, want)
	}
	if q, err := ParseOrdersQuery("dasher", "d", url.Values{"since": {"1767614400"}}, now); err != nil || q.Since.Unix() != 1767614400 || q.Limit != DefaultLimit {
		t.Fatalf("unix since: %+v %v", q, err)
	}
	for _, v := range []url.Values{
		{"since": {"yesterday"}}, {"until": {"-2h"}}, {"limit": {"x"}}, {"limit": {"0"}}, {"limit": {"5000"}},
		{"status": {"lost"}}, {"cursor": {"%%"}}, {"since": {"1h"}, "until": {"2h"}},
	} {
		if _, err := ParseOrdersQuery("customers", "c", v, now); !errors.Is(err, ErrBadQuery) {
			t.Errorf("%v: got %v, want ErrBadQuery", v, err)
		}
	}
	if _, err := ParseOrdersQuery("drivers", "x", nil, now); !errors.Is(err, ErrBadQuery) {
		t.Errorf("unknown collection: %v", err)
	}
}
