package ingest_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/services/ingest"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// TestHTTPMatrix drives every answer of the API with real requests against a real
// JetStream server, then checks the WAL holds exactly the accepted events.
func TestHTTPMatrix(t *testing.T) {
	e := newEnv(t, func(c *ingest.Config) {
		c.Limits = ingest.DefaultLimits()
		c.Limits[schemas.SourceMerchant] = ingest.Limit{Rate: 0.5, Burst: 2}
		c.MaxBodyBytes = 4 << 10
	})
	driver := e.token(t, schemas.SourceDriver, "d-1")
	agent := e.token(t, schemas.SourceAgent, "a-1")
	platform := e.token(t, schemas.SourcePlatform, "checkout-1")
	accepted := map[uint64]string{} // WAL seq → Nats-Msg-Id the API was answered 202 for

	expect := func(name string, r reply, code int) reply {
		t.Helper()
		if r.code != code {
			t.Fatalf("%s: got %d %+v, want %d", name, r.code, r.refused, code)
		}
		if code == http.StatusAccepted {
			if r.accepted.Stream != topology.EventsStream || r.accepted.Seq == 0 {
				t.Fatalf("%s: 202 body %+v", name, r.accepted)
			}
		}
		return r
	}

	// 202, then the same event again is a duplicate of the same WAL message.
	r := expect("driver", e.post(t, driver, "o-1", event(schemas.SourceDriver, "o-1", "d-1", 1, nil), nil), 202)
	if r.accepted.Duplicate {
		t.Fatal("first post answered duplicate")
	}
	accepted[r.accepted.Seq] = "o-1-driver-1"
	again := expect("retry", e.post(t, driver, "o-1", event(schemas.SourceDriver, "o-1", "d-1", 1, nil), nil), 202)
	if !again.accepted.Duplicate || again.accepted.Seq != r.accepted.Seq {
		t.Fatalf("retry: %+v, want duplicate of seq %d", again.accepted, r.accepted.Seq)
	}
	// Idempotency-Key wins over event_id as the Nats-Msg-Id.
	r = expect("idempotency key", e.post(t, platform, "o-2", event(schemas.SourcePlatform, "o-2", "", 1, nil), map[string]string{"Idempotency-Key": "checkout-42"}), 202)
	accepted[r.accepted.Seq] = "checkout-42"
	r = expect("agent", e.post(t, agent, "o-1", event(schemas.SourceAgent, "o-1", "a-1", 1, nil), nil), 202)
	accepted[r.accepted.Seq] = "o-1-agent-1"

	// 400: every problem listed, in one answer.
	r = expect("many problems", e.post(t, driver, "o-3", event(schemas.SourceDriver, "o-3", "d-1", 1, map[string]any{
		"event_id": nil, "status": "flying", "source_seq": 0, "occurred_at": "yesterday",
	}), nil), 400)
	paths := map[string]bool{}
	for _, p := range r.refused.Problems {
		paths[p.Path] = true
	}
	for _, want := range []string{"/event_id", "/status", "/source_seq", "/occurred_at"} {
		if !paths[want] {
			t.Errorf("400 problems %+v miss %s", r.refused.Problems, want)
		}
	}
	expect("malformed JSON", e.post(t, driver, "o-3", `{"schema_version":1,`, nil), 400)
	expect("order id differs from the path", e.post(t, driver, "o-3", event(schemas.SourceDriver, "o-4", "d-1", 1, nil), nil), 400)
	expect("bad order id", e.post(t, driver, "o.3", event(schemas.SourceDriver, "o.3", "d-1", 1, nil), nil), 400)
	expect("agent without reason", e.post(t, agent, "o-3", event(schemas.SourceAgent, "o-3", "a-1", 2, map[string]any{"reason": nil}), nil), 400)
	expect("bad idempotency key", e.post(t, driver, "o-3", event(schemas.SourceDriver, "o-3", "d-1", 1, nil), map[string]string{"Idempotency-Key": "has space"}), 400)

	// 401: no token, a forged one, an expired one, alg none, wrong audience.
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	forged, _ := auth.Issue(otherKey, auth.IssueRequest{Source: schemas.SourceDriver, ActorID: "d-1"})
	expired, _ := auth.Issue(e.key, auth.IssueRequest{Source: schemas.SourceDriver, ActorID: "d-1", TTL: time.Minute, Now: time.Now().Add(-time.Hour)})
	wrongAud, _ := auth.Issue(e.key, auth.IssueRequest{Source: schemas.SourceDriver, ActorID: "d-1", Audience: "billing"})
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	none := enc(map[string]string{"alg": "none", "typ": "JWT"}) + "." + enc(auth.Claims{
		Claims: jwt.Claims{Audience: jwt.Audience{auth.DefaultAudience}, Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))},
		Source: schemas.SourceDriver, ActorID: "d-1"}) + "."
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte(e.key.Public().(ed25519.PublicKey))}, nil)
	confused, _ := jwt.Signed(hs).Claims(auth.Claims{
		Claims: jwt.Claims{Audience: jwt.Audience{auth.DefaultAudience}, Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))},
		Source: schemas.SourceDriver, ActorID: "d-1"}).Serialize()
	body := event(schemas.SourceDriver, "o-5", "d-1", 1, nil)
	for name, tok := range map[string]string{"no token": "", "forged": forged, "expired": expired, "wrong audience": wrongAud, "alg none": none, "hs256 with the public key": confused} {
		expect(name, e.post(t, tok, "o-5", body, nil), 401)
	}

	// 403: a driver cannot post merchant or agent events, nor as another driver.
	expect("driver posts merchant event", e.post(t, driver, "o-5", event(schemas.SourceMerchant, "o-5", "d-1", 1, nil), nil), 403)
	expect("driver posts agent event", e.post(t, driver, "o-5", event(schemas.SourceAgent, "o-5", "d-1", 1, nil), nil), 403)
	expect("driver posts as another driver", e.post(t, driver, "o-5", event(schemas.SourceDriver, "o-5", "d-2", 1, nil), nil), 403)
	expect("driver posts without actor", e.post(t, driver, "o-5", event(schemas.SourceDriver, "o-5", "", 1, nil), nil), 403)
	expect("agent posts as another agent", e.post(t, agent, "o-5", event(schemas.SourceAgent, "o-5", "a-2", 1, nil), nil), 403)

	// 413, whether the client announces the length or not.
	big := event(schemas.SourceDriver, "o-6", "d-1", 1, map[string]any{"reason": strings.Repeat("x", 5000)})
	expect("too large", e.post(t, driver, "o-6", big, nil), 413)

	// 429 with Retry-After once the actor's bucket is empty; another actor of the
	// same source is unaffected.
	m1, m2 := e.token(t, schemas.SourceMerchant, "m-1"), e.token(t, schemas.SourceMerchant, "m-2")
	for i := 1; i <= 2; i++ {
		r = expect("merchant within burst", e.post(t, m1, "o-7", event(schemas.SourceMerchant, "o-7", "m-1", i, nil), nil), 202)
		accepted[r.accepted.Seq] = fmt.Sprintf("o-7-merchant-%d", i)
	}
	r = expect("merchant over its limit", e.post(t, m1, "o-7", event(schemas.SourceMerchant, "o-7", "m-1", 3, nil), nil), 429)
	if r.retryAfter == "" || r.retryAfter == "0" {
		t.Fatalf("429 Retry-After = %q", r.retryAfter)
	}
	r = expect("other merchant", e.post(t, m2, "o-8", event(schemas.SourceMerchant, "o-8", "m-2", 1, nil), nil), 202)
	accepted[r.accepted.Seq] = "o-8-merchant-1"

	// The WAL holds exactly the accepted events, each once.
	got := walMsgIDs(t, e.nats.JS)
	if len(got) != len(accepted) {
		t.Fatalf("WAL holds %d events, the API accepted %d: %v vs %v", len(got), len(accepted), got, accepted)
	}
	for seq, id := range accepted {
		if got[seq] != id {
			t.Errorf("WAL seq %d: Nats-Msg-Id %q, want %q", seq, got[seq], id)
		}
	}
	if n := metricValue(t, e, "orderflow_ingest_requests_total", map[string]string{"source": "merchant", "code": "429"}); n != 1 {
		t.Errorf("requests_total{merchant,429} = %v", n)
	}
}

// TestWALNotAnswering: 503 with Retry-After when no stream stores the subject
// (no responders) and when something answers nothing in time.
func TestWALNotAnswering(t *testing.T) {
	n := testenv.NATS(t) // no topology: nothing stores orders.events.>
	e := newEnvOn(t, n, n.JS, nil)
	tok := e.token(t, schemas.SourceDriver, "d-1")
	r := e.post(t, tok, "o-1", event(schemas.SourceDriver, "o-1", "d-1", 1, nil), nil)
	if r.code != http.StatusServiceUnavailable || r.retryAfter == "" {
		t.Fatalf("no stream: %d %+v Retry-After %q", r.code, r.refused, r.retryAfter)
	}

	sub, err := n.Conn.Subscribe("orders.events.>", func(*nats.Msg) {}) // takes it, never acks
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	slow := newEnvOn(t, n, n.JS, func(c *ingest.Config) { c.Timeout = 300 * time.Millisecond })
	start := time.Now()
	r = slow.post(t, slow.token(t, schemas.SourceDriver, "d-1"), "o-1", event(schemas.SourceDriver, "o-1", "d-1", 1, nil), nil)
	if r.code != http.StatusServiceUnavailable {
		t.Fatalf("silent WAL: %d %+v", r.code, r.refused)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("silent WAL answered after %s, timeout was 300ms", d)
	}
}

// TestIdempotencyKeysCannotShadowOtherProducers: JetStream deduplicates message ids
// across the whole stream, and dispatch's and the estimator's event ids are
// predictable. A driver who sends one as its Idempotency-Key must not make the
// real event a "duplicate" that JetStream drops.
func TestIdempotencyKeysCannotShadowOtherProducers(t *testing.T) {
	e := newEnv(t, nil)
	driver := e.token(t, schemas.SourceDriver, "d-1")
	if r := e.post(t, driver, "o-9", event(schemas.SourceDriver, "o-9", "d-1", 1, nil), map[string]string{"Idempotency-Key": "assign-o-9-2"}); r.code != 202 {
		t.Fatalf("driver post: %d", r.code)
	}
	m := nats.NewMsg(schemas.Subject(schemas.SourcePlatform, "o-9"))
	m.Data = []byte(event(schemas.SourcePlatform, "o-9", "", 2, nil))
	m.Header.Set(jetstream.MsgIDHeader, "assign-o-9-2")
	ack, err := e.nats.JS.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Duplicate {
		t.Fatal("the platform's event was dropped as a duplicate of the driver's idempotency key")
	}
}
