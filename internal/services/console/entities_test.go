package console_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/services/console"
	"github.com/orderflow/orderflow/internal/services/orders"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/schemas"
	"github.com/orderflow/orderflow/sinks/archive"
	chsink "github.com/orderflow/orderflow/sinks/clickhouse"
)

// TestEntityListsFromClickHouse lists a customer's orders from a private
// ClickHouse filled by the real sink: newest first, a page at a time, by status.
func TestEntityListsFromClickHouse(t *testing.T) {
	ctx := context.Background()
	ch := testenv.ClickHouse(t)
	dsn := ch.DSN(ch.CreateDatabase(t))
	conn, err := chsink.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := chsink.Migrate(ctx, conn, chsink.Layout{}); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *console.Config) { c.ClickHouse = conn })
	for _, id := range []string{"o-1", "o-2", "o-3"} {
		created := testenv.Event(id, schemas.SourcePlatform, 1, schemas.StatusCreated)
		created.CustomerID = "c-42"
		f.env.Publish(t, created)
	}
	last := f.env.Publish(t, testenv.Event("o-2", schemas.SourcePlatform, 2, schemas.StatusCancelled))
	sink, err := chsink.NewSink(chsink.Config{DSN: dsn, BatchWait: 20 * time.Millisecond}, f.env.JS, conn, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sink.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := sink.WaitConfirmed(waitCtx, last); err != nil {
		t.Fatal(err)
	}

	c := f.client(t)
	csrf := c.signIn(f.token(t, schemas.SourceAgent, "alice", time.Now(), time.Hour))
	home := c.get("/console")
	if !strings.Contains(home.body, `name="entity"`) || strings.Contains(home.body, "runs without it") {
		t.Fatalf("home page with ClickHouse lacks the list form:\n%s", home.body)
	}
	a := c.post("/console/entities", url.Values{"csrf": {csrf}, "entity": {"customer"}, "id": {"c-42"}, "limit": {"2"}})
	if a.code != http.StatusSeeOther {
		t.Fatalf("list form: %d\n%s", a.code, a.body)
	}
	page := c.get(a.location)
	if page.code != http.StatusOK || !orderLinks(page.body, "o-3", "o-2") || !strings.Contains(page.body, "Next page") {
		t.Fatalf("first page: %d\n%s", page.code, page.body)
	}
	next := field(t, nextLink, page.body)
	page = c.get(next)
	if page.code != http.StatusOK || !orderLinks(page.body, "o-1") || strings.Contains(page.body, "Next page") {
		t.Fatalf("second page: %d\n%s", page.code, page.body)
	}
	page = c.get("/console/entities?entity=customer&id=c-42&status=cancelled")
	if !orderLinks(page.body, "o-2") {
		t.Fatalf("cancelled orders:\n%s", page.body)
	}
	page = c.get("/console/entities?entity=customer&id=c-42&since=yesterday")
	if page.code != http.StatusBadRequest || !strings.Contains(page.body, "want RFC 3339") {
		t.Fatalf("bad time: %d\n%s", page.code, page.body)
	}
	// The order page links its entities to these lists.
	if o := c.get("/console/orders/o-1"); !strings.Contains(o.body, `href="/console/entities?entity=customer&amp;id=c-42"`) {
		t.Errorf("order page does not link the customer's orders:\n%s", o.body)
	}
}

var nextLink = regexp.MustCompile(`<a class="button" href="([^"]+)">Next page</a>`)

// orderLinks reports whether the page links exactly these orders, in this order.
func orderLinks(body string, ids ...string) bool {
	var got []string
	for _, m := range orderLink.FindAllStringSubmatch(body, -1) {
		got = append(got, m[1])
	}
	return strings.Join(got, ",") == strings.Join(ids, ",")
}

var orderLink = regexp.MustCompile(`<td data-label="Order"><a href="/console/orders/([^"]+)">`)

// archiveStub answers one archived order.
type archiveStub struct{ order *archive.Order }

func (a archiveStub) Lookup(_ context.Context, id string) (*archive.Order, bool, error) {
	if a.order != nil && a.order.OrderID == id {
		return a.order, true, nil
	}
	return nil, false, nil
}

func TestArchivedOrderIsShownReadOnly(t *testing.T) {
	at := testenv.EventsEpoch
	archived := &archive.Order{
		OrderID: "o-old", Archived: true, WalSeq: 41,
		Current: resolver.View{OrderID: "o-old", Status: schemas.StatusDelivered, StatusSource: schemas.SourceDriver,
			Version: map[schemas.Source]uint64{schemas.SourcePlatform: 1, schemas.SourceDriver: 1}, WalSeq: 41},
		Events: []archive.Event{
			{TimelineEvent: orders.TimelineEvent{WalSeq: 40, Source: schemas.SourcePlatform, SourceSeq: 1, Status: schemas.StatusCreated, StoredAt: at, Decision: "applied", Reason: "advanced"}},
			{TimelineEvent: orders.TimelineEvent{WalSeq: 41, Source: schemas.SourceDriver, SourceSeq: 1, Status: schemas.StatusDelivered, StoredAt: at, Decision: "applied", Reason: "advanced"}},
		},
	}
	f := newFixture(t, func(c *console.Config) { c.Archive = archiveStub{archived} })
	c := f.client(t)
	csrf := c.signIn(f.token(t, schemas.SourceAgent, "alice", time.Now(), time.Hour))
	page := c.get("/console/orders/o-old")
	for _, want := range []string{"<strong>Archived.</strong>", `data-archived="true"`, `id="current-status">delivered<`, `class="ev d-applied deciding" id="ev-41"`} {
		if !strings.Contains(page.body, want) {
			t.Errorf("archived order page lacks %q", want)
		}
	}
	if page.code != http.StatusOK || strings.Contains(page.body, `id="correct-form"`) {
		t.Fatalf("archived order: %d, correction form shown: %v", page.code, strings.Contains(page.body, `id="correct-form"`))
	}
	a := c.post("/console/orders/o-old/correct", url.Values{"csrf": {csrf}, "status": {"arrived"}, "reason": {"x"}, "nonce": {"aaaaaaaaaaaaaaaaaaaaaa"}, "observed": {"{}"}})
	if a.code != http.StatusConflict || !strings.Contains(a.body, "This order is archived") {
		t.Fatalf("correcting an archived order: %d\n%s", a.code, a.body)
	}
}
