package ingest_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/services/ingest"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// env is a provisioned JetStream server and the ingest handler over real HTTP.
type env struct {
	nats *testenv.NATSEnv
	key  ed25519.PrivateKey
	url  string
	h    http.Handler
	// handler is the ingest handler itself, for calls that bypass the mux.
	handler *ingest.Handler
	reg     *prometheus.Registry
}

func newEnv(t testing.TB, mod func(*ingest.Config)) *env {
	t.Helper()
	n := testenv.NATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := topology.Provision(ctx, n.JS, topology.Topology{Partitions: 2}); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return newEnvOn(t, n, n.JS, mod)
}

func newEnvOn(t testing.TB, n *testenv.NATSEnv, js ingest.Publisher, mod func(*ingest.Config)) *env {
	t.Helper()
	key, err := auth.LoadOrCreateTokenKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.LocalKeys(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := ingest.Config{JS: js, Tokens: auth.NewVerifier(keys, ""), Registerer: reg}
	if mod != nil {
		mod(&cfg)
	}
	h, err := ingest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(ingest.Route, h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{nats: n, key: key, url: srv.URL, h: mux, handler: h, reg: reg}
}

func (e *env) token(t testing.TB, src schemas.Source, actor string) string {
	t.Helper()
	tok, err := auth.Issue(e.key, auth.IssueRequest{Source: src, ActorID: actor, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// reply is one answer, decoded.
type reply struct {
	code       int
	retryAfter string
	accepted   ingest.Accepted
	refused    ingest.ErrorBody
}

func (e *env) post(t testing.TB, token, orderID, body string, hdr map[string]string) reply {
	t.Helper()
	return e.postWith(t, http.DefaultClient, token, orderID, body, hdr)
}

// postWith posts with its own client: actors on separate devices do not share
// a connection pool.
func (e *env) postWith(t testing.TB, client *http.Client, token, orderID, body string, hdr map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+"/v1/orders/"+orderID+"/events", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{code: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%d answered with Content-Type %q: %s", r.code, ct, b)
	}
	target := any(&r.refused)
	if r.code == http.StatusAccepted {
		target = &r.accepted
	}
	if err := json.Unmarshal(b, target); err != nil {
		t.Fatalf("%d body %q: %v", r.code, b, err)
	}
	if r.code != http.StatusAccepted && r.refused.Error == "" {
		t.Fatalf("%d without an error message: %s", r.code, b)
	}
	return r
}

// event is a valid event body of src for order, with optional field overrides
// (a nil value deletes the field).
func event(src schemas.Source, order, actor string, seq int, over map[string]any) string {
	status := map[schemas.Source]string{
		schemas.SourcePlatform: "created", schemas.SourceMerchant: "confirmed", schemas.SourceDriver: "picked_up",
		schemas.SourceEstimator: "preparing", schemas.SourceAgent: "cancelled",
	}[src]
	m := map[string]any{
		"schema_version": 1, "event_id": fmt.Sprintf("%s-%s-%d", order, src, seq), "order_id": order,
		"source": string(src), "source_seq": seq, "occurred_at": "2026-11-28T12:00:00Z", "status": status,
	}
	if actor != "" {
		m["actor_id"] = actor
	}
	if src == schemas.SourcePlatform {
		m["customer_id"], m["restaurant_id"] = "c-1", "r-1"
	}
	if src == schemas.SourceAgent {
		m["reason"] = "customer asked"
	}
	for k, v := range over {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// walMsgIDs reads every message of the WAL: sequence → Nats-Msg-Id.
func walMsgIDs(t testing.TB, js jetstream.JetStream) map[uint64]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[uint64]string{}
	err := wal.ReadRange(ctx, js, schemas.WALPrefix+".>", 1, math.MaxUint64, func(r wal.Record) error {
		// The key the client sent, without the source and actor scope MsgID adds.
		id := nats.Header(r.Header).Get(jetstream.MsgIDHeader)
		if parts := strings.SplitN(id, ":", 4); len(parts) == 4 && parts[0] == "ingest" {
			id = parts[3]
		}
		out[r.Seq] = id
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// metricValue reads one counter or gauge sample from the env's registry.
func metricValue(t testing.TB, e *env, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
