package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/orderflow/orderflow/internal/services/ingest"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// FuzzIngest posts random bodies, headers, paths and tokens to the handler over a
// real JetStream server. It must never panic, and the WAL must grow by exactly one
// message for each 202 that is not a duplicate, and by nothing otherwise.
//
//	go test -run '^$' -fuzz FuzzIngest ./internal/ingest/
func FuzzIngest(f *testing.F) {
	e := newEnv(f, func(c *ingest.Config) {
		// Limited only where it cannot empty within a fuzz run: the 429 path runs,
		// and rate limiting never hides what the rest of the handler does.
		c.Limits = map[schemas.Source]ingest.Limit{schemas.SourceAgent: {Rate: 1e6, Burst: 1e6}}
		c.Timeout = 10 * time.Second
	})
	tokens := []string{
		e.token(f, schemas.SourceDriver, "d-1"), e.token(f, schemas.SourceMerchant, "m-1"),
		e.token(f, schemas.SourceAgent, "a-1"), e.token(f, schemas.SourcePlatform, "p-1"),
		e.token(f, schemas.SourceEstimator, "eta-1"), "", "garbage", "a.b.c",
	}
	f.Add([]byte(event(schemas.SourceDriver, "o-1", "d-1", 1, nil)), "o-1", uint8(0), "", "", false)
	f.Add([]byte(event(schemas.SourceDriver, "o-1", "d-1", 1, nil)), "o-1", uint8(0), "k-1", "application/json", true)
	f.Add([]byte(event(schemas.SourceMerchant, "o-1", "m-1", 1, nil)), "o-1", uint8(0), "", "", false)
	f.Add([]byte(event(schemas.SourceAgent, "o-2", "a-1", 3, map[string]any{"observed": map[string]int{"driver": 2}})), "o-2", uint8(2), "", "", false)
	f.Add([]byte(event(schemas.SourcePlatform, "o-3", "", 1, nil)), "o-3", uint8(3), "x", "", false)
	f.Add([]byte(`{"schema_version":1,"event_id":"e","event_id":"f"}`), "o-4", uint8(0), "", "", false)
	f.Add([]byte{0xff, 0xfe, '{'}, "%2e%2e", uint8(6), "\x00", "", true)

	ctx := context.Background()
	stream, err := e.nats.JS.Stream(ctx, topology.EventsStream)
	if err != nil {
		f.Fatal(err)
	}
	lastSeq := func(t *testing.T) uint64 {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	f.Fuzz(func(t *testing.T, body []byte, orderID string, tok uint8, idemKey, contentType string, chunked bool) {
		before := lastSeq(t)
		req := httptest.NewRequest(http.MethodPost, "/v1/orders/o/events", bytes.NewReader(body))
		req.URL.Path = "/v1/orders/" + orderID + "/events"
		req.SetPathValue("id", orderID)
		if s := tokens[int(tok)%len(tokens)]; s != "" {
			req.Header.Set("Authorization", "Bearer "+s)
		}
		if idemKey != "" {
			req.Header["Idempotency-Key"] = []string{idemKey}
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if chunked {
			req.ContentLength = -1
		}
		rec := httptest.NewRecorder()
		e.handler.ServeHTTP(rec, req)
		after := lastSeq(t)
		if rec.Code == http.StatusAccepted {
			var a ingest.Accepted
			if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
				t.Fatalf("202 body %q: %v", rec.Body, err)
			}
			if want := before + 1; !a.Duplicate && (a.Seq != want || after != want) {
				t.Fatalf("202 seq %d, WAL went from %d to %d", a.Seq, before, after)
			}
			if a.Duplicate && after != before {
				t.Fatalf("duplicate 202, but the WAL went from %d to %d", before, after)
			}
			return
		}
		if after != before {
			t.Fatalf("answered %d %s, but the WAL went from %d to %d", rec.Code, rec.Body, before, after)
		}
		if rec.Code < 400 || rec.Code == http.StatusInternalServerError || rec.Code == http.StatusServiceUnavailable {
			t.Fatalf("unexpected %d: %s", rec.Code, rec.Body)
		}
	})
}
