package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/internal/services/api"
	"github.com/orderflow/orderflow/internal/testsupport/orderstest"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/schemas"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// serve starts the API over a provisioned JetStream, without archive or ClickHouse.
func serve(t *testing.T) (*testenv.NATSEnv, *httptest.Server) {
	t.Helper()
	env := testenv.WAL(t, 4)
	rp := orderstest.New(t, env)
	s := api.New(api.Config{
		Reader: rp.Reader, JS: env.JS, Log: rp.Log, Registry: prometheus.NewRegistry(),
		Ready: func() error { return nil }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return env, srv
}

// TestOrderAnswers checks the answers of the order routes against golden files.
func TestOrderAnswers(t *testing.T) {
	env, srv := serve(t)
	env.Publish(t, testenv.Event("o-1", schemas.SourcePlatform, 1, schemas.StatusCreated))
	env.Publish(t, testenv.Event("o-1", schemas.SourceMerchant, 1, schemas.StatusConfirmed))
	estimate := testenv.Event("o-1", schemas.SourceEstimator, 1, schemas.StatusPreparing)
	eta := testenv.EventsEpoch.Add(40 * time.Minute)
	estimate.ETA = &eta
	env.PublishRaw(t, schemas.Subject(schemas.SourceEstimator, "o-1"), estimate.EventID, testenv.EventJSON(t, estimate))
	env.PublishRaw(t, schemas.Subject(schemas.SourceDriver, "o-1"), "", []byte(`{"schema_version":1,"event_id":"x"}`))

	for _, tc := range []struct{ name, path string }{
		{"order", "/v1/orders/o-1"},
		{"timeline", "/v1/orders/o-1/timeline"},
		{"order-unknown", "/v1/orders/nobody"},
		{"timeline-unknown", "/v1/orders/nobody/timeline"},
		{"order-bad-id", "/v1/orders/o%2A1"},
		{"order-id-too-long", "/v1/orders/" + strings.Repeat("a", 65)},
		{"timeline-bad-id", "/v1/orders/o%201/timeline"},
		{"watch-bad-id", "/v1/orders/o%2A1/watch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("%d %s\n%s", res.StatusCode, res.Header.Get("Content-Type"), normalize(t, body))
			golden(t, tc.name+".golden", got)
		})
	}
}

// TestWatch: one Server-Sent Event per status change, from the order's first
// event and then live; events that change nothing send nothing.
func TestWatch(t *testing.T) {
	env, srv := serve(t)
	env.Publish(t, testenv.Event("o-w", schemas.SourcePlatform, 1, schemas.StatusCreated))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/orders/o-w/watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("got %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	events := make(chan string)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(res.Body)
		var ev []string
		for sc.Scan() {
			if sc.Text() != "" {
				ev = append(ev, sc.Text())
				continue
			}
			events <- strings.Join(ev, "\n")
			ev = nil
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("the stream ended")
			}
			return ev
		case <-ctx.Done():
			t.Fatal("no event within 20s")
		}
		return ""
	}

	var transcript []string
	transcript = append(transcript, next())
	env.Publish(t, testenv.Event("o-w", schemas.SourceMerchant, 1, schemas.StatusConfirmed))
	transcript = append(transcript, next())
	// Neither a retry past the duplicate window nor a rejected event is a change.
	created := testenv.Event("o-w", schemas.SourcePlatform, 1, schemas.StatusCreated)
	env.PublishRaw(t, schemas.Subject(created.Source, "o-w"), "retry", testenv.EventJSON(t, created))
	env.PublishRaw(t, schemas.Subject(schemas.SourceDriver, "o-w"), "", []byte(`nonsense`))
	env.Publish(t, testenv.Event("o-w", schemas.SourceDriver, 1, schemas.StatusPickedUp))
	transcript = append(transcript, next())
	golden(t, "watch.golden", strings.Join(transcript, "\n\n")+"\n")
}

// storedAt is the time JetStream stored an event: it differs between runs.
var storedAt = regexp.MustCompile(`"stored_at":"[^"]*"`)

// normalize indents a JSON answer, keeping its field order, and replaces what
// differs between runs.
func normalize(t *testing.T, body []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Indent(&b, storedAt.ReplaceAll(body, []byte(`"stored_at":"(stored time)"`)), "", "  "); err != nil {
		t.Fatalf("answer is not JSON: %v\n%s", err, body)
	}
	return b.String()
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("answer differs from %s (run with -update if the change is meant):\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}
