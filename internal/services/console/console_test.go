package console_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/internal/services/api"
	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/services/console"
	"github.com/orderflow/orderflow/internal/services/ingest"
	"github.com/orderflow/orderflow/internal/services/orders"
	"github.com/orderflow/orderflow/internal/testsupport/orderstest"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/schemas"
)

// fixture is the console over a real JetStream WAL, the real read path, the real
// ingest handler and token verifier (no pipeline: the read path folds the WAL).
type fixture struct {
	env    *testenv.NATSEnv
	reader *orders.Reader
	key    ed25519.PrivateKey
	srv    *httptest.Server
}

func newFixture(t *testing.T, options ...func(*console.Config)) *fixture {
	t.Helper()
	env := testenv.WAL(t, 4)
	rp := orderstest.New(t, env)
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.LocalKeys(pub)
	if err != nil {
		t.Fatal(err)
	}
	tokens := auth.NewVerifier(keys, "")
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ing, err := ingest.New(ingest.Config{JS: env.JS, Tokens: tokens, Registerer: reg, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	apiSrv := api.New(api.Config{Reader: rp.Reader, JS: env.JS, Log: rp.Log, Registry: reg, Ready: func() error { return nil }, Logger: logger})
	cfg := console.Config{Reader: rp.Reader, Tokens: tokens, Ingest: ing, Watch: apiSrv.Watch(), JS: env.JS, Logger: logger}
	for _, o := range options {
		o(&cfg)
	}
	con, err := console.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(con)
	t.Cleanup(srv.Close)
	return &fixture{env: env, reader: rp.Reader, key: key, srv: srv}
}

func (f *fixture) token(t *testing.T, src schemas.Source, actor string, now time.Time, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Issue(f.key, auth.IssueRequest{Source: src, ActorID: actor, TTL: ttl, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// client is a browser without JavaScript: a cookie jar, no automatic redirects.
type client struct {
	t    *testing.T
	base string
	http *http.Client
}

func (f *fixture) client(t *testing.T) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: f.srv.URL, http: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type answer struct {
	code     int
	body     string
	location string
	header   http.Header
}

func (c *client) do(req *http.Request) answer {
	c.t.Helper()
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, body: string(b), location: resp.Header.Get("Location"), header: resp.Header}
}

func (c *client) get(path string) answer {
	req, _ := http.NewRequest(http.MethodGet, c.base+path, nil)
	return c.do(req)
}

func (c *client) post(path string, form url.Values) answer {
	req, _ := http.NewRequest(http.MethodPost, c.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.do(req)
}

var (
	csrfField     = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	nonceField    = regexp.MustCompile(`name="nonce" value="([^"]+)"`)
	observedField = regexp.MustCompile(`name="observed" id="observed" value="([^"]*)"`)
)

func field(t *testing.T, re *regexp.Regexp, body string) string {
	t.Helper()
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in page:\n%s", re, body)
	}
	return html.UnescapeString(m[1])
}

// signIn signs c in with tok through the sign-in form and returns the CSRF token
// of the session.
func (c *client) signIn(tok string) string {
	c.t.Helper()
	page := c.get("/console")
	if page.code != http.StatusUnauthorized || !strings.Contains(page.body, "Agent token") {
		c.t.Fatalf("GET /console signed out: %d, want the sign-in form\n%s", page.code, page.body)
	}
	a := c.post("/console/signin", url.Values{"csrf": {field(c.t, csrfField, page.body)}, "token": {tok}})
	if a.code != http.StatusSeeOther || a.location != "/console" {
		c.t.Fatalf("sign in: %d %q, want 303 to /console\n%s", a.code, a.location, a.body)
	}
	home := c.get("/console")
	if home.code != http.StatusOK {
		c.t.Fatalf("home after sign-in: %d\n%s", home.code, home.body)
	}
	return field(c.t, csrfField, home.body)
}

// correction is the order page's correction form as a browser sends it: the
// page's CSRF token, nonce and version vector, and the given fields.
func correction(t *testing.T, page answer, status, reason string, confirm bool) url.Values {
	t.Helper()
	v := url.Values{
		"csrf": {field(t, csrfField, page.body)}, "nonce": {field(t, nonceField, page.body)}, "observed": {field(t, observedField, page.body)},
		"status": {status}, "reason": {reason},
	}
	if confirm {
		v.Set("confirm", "yes")
	}
	return v
}

func (f *fixture) publish(t *testing.T, evs ...schemas.Event) {
	t.Helper()
	for _, ev := range evs {
		f.env.Publish(t, ev)
	}
}

func delivered(id string) []schemas.Event {
	return []schemas.Event{
		testenv.Event(id, schemas.SourcePlatform, 1, schemas.StatusCreated),
		testenv.Event(id, schemas.SourceMerchant, 1, schemas.StatusConfirmed),
		testenv.Event(id, schemas.SourceDriver, 1, schemas.StatusPickedUp),
		testenv.Event(id, schemas.SourceDriver, 2, schemas.StatusDelivered),
	}
}

func (f *fixture) events(t *testing.T, id string) int {
	t.Helper()
	tl, err := f.reader.Timeline(context.Background(), id)
	if err != nil {
		t.Fatalf("timeline of %s: %v", id, err)
	}
	return len(tl.Events)
}

func TestSignInFindAndOrderPage(t *testing.T) {
	f := newFixture(t)
	f.publish(t, delivered("o-1")...)
	f.publish(t, testenv.Event("o-1", schemas.SourceMerchant, 2, schemas.StatusPreparing)) // after delivered: ignored
	c := f.client(t)
	csrf := c.signIn(f.token(t, schemas.SourceAgent, "alice", time.Now(), time.Hour))

	a := c.post("/console/find", url.Values{"csrf": {csrf}, "order_id": {"o-1"}})
	if a.code != http.StatusSeeOther || a.location != "/console/orders/o-1" {
		t.Fatalf("find: %d %q", a.code, a.location)
	}
	page := c.get(a.location)
	if page.code != http.StatusOK {
		t.Fatalf("order page: %d\n%s", page.code, page.body)
	}
	for _, want := range []string{
		`id="current-status">delivered<`,
		"Signed in as <strong>alice</strong>",
		// the version vector, in the table and as the form will send it
		`<th scope="row">driver</th><td>2</td>`,
		`{&#34;driver&#34;:2,&#34;merchant&#34;:2,&#34;platform&#34;:1}`,
		// every event, with decision and reason in words
		`id="ev-1"`, `id="ev-5"`,
		"Moved the order forward to this status.",
		"The order was already delivered or cancelled; only a support agent can move it now.",
		// the driver's delivered decides the status
		`class="ev d-applied deciding" id="ev-4"`,
		"decides the current status",
		"delivered", "picked up",
	} {
		if !strings.Contains(page.body, want) {
			t.Errorf("order page lacks %q", want)
		}
	}
	if n := strings.Count(page.body, "deciding-mark"); n != 1 {
		t.Errorf("%d events marked deciding, want 1", n)
	}
	if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}

	// The live part alone, as the page's script fetches it.
	live := c.get("/console/orders/o-1/live")
	if live.code != http.StatusOK || !strings.HasPrefix(strings.TrimSpace(live.body), `<div id="live"`) {
		t.Fatalf("live: %d\n%s", live.code, live.body)
	}
}

func TestSessionCookieFlags(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	page := c.get("/console")
	a := c.post("/console/signin", url.Values{"csrf": {field(t, csrfField, page.body)}, "token": {f.token(t, schemas.SourceAgent, "alice", time.Now(), time.Hour)}})
	var cookie string
	for _, h := range a.header.Values("Set-Cookie") {
		if strings.HasPrefix(h, "orderflow_console=") {
			cookie = h
		}
	}
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/console", "Expires="} {
		if !strings.Contains(cookie, want) {
			t.Errorf("session cookie %q lacks %s", cookie, want)
		}
	}
	// Secure only under TLS: httptest's plain server must not set it, else the
	// browser would drop the cookie.
	if strings.Contains(cookie, "Secure") {
		t.Errorf("session cookie %q is Secure without TLS", cookie)
	}
}

func TestSecureCookieUnderTLS(t *testing.T) {
	f := newFixture(t)
	tlsSrv := httptest.NewTLSServer(f.srv.Config.Handler)
	t.Cleanup(tlsSrv.Close)
	c := f.client(t)
	c.base = tlsSrv.URL
	c.http.Transport = tlsSrv.Client().Transport
	page := c.get("/console")
	a := c.post("/console/signin", url.Values{"csrf": {field(t, csrfField, page.body)}, "token": {f.token(t, schemas.SourceAgent, "alice", time.Now(), time.Hour)}})
	found := false
	for _, h := range a.header.Values("Set-Cookie") {
		if strings.HasPrefix(h, "orderflow_console=") {
			found = true
			if !strings.Contains(h, "Secure") || !strings.Contains(h, "HttpOnly") || !strings.Contains(h, "SameSite=Strict") {
				t.Errorf("session cookie under TLS: %q", h)
			}
		}
	}
	if !found {
		t.Fatalf("no session cookie: %d\n%s", a.code, a.body)
	}
}

func TestSignInRefusesWhatIsNotAnAgentToken(t *testing.T) {
	f := newFixture(t)
	for name, tc := range map[string]struct {
		token string
		code  int
		want  string
	}{
		"driver token": {f.token(t, schemas.SourceDriver, "d-1", time.Now(), time.Hour), http.StatusForbidden, "This token is for source driver; the console needs an agent token"},
		"expired":      {f.token(t, schemas.SourceAgent, "alice", time.Now().Add(-2*time.Hour), time.Hour), http.StatusUnauthorized, "This token is not valid here"},
		"garbage":      {"not-a-token", http.StatusUnauthorized, "This token is not valid here"},
		"empty":        {"  ", http.StatusBadRequest, "Paste your agent token"},
	} {
		t.Run(name, func(t *testing.T) {
			c := f.client(t)
			page := c.get("/console")
			a := c.post("/console/signin", url.Values{"csrf": {field(t, csrfField, page.body)}, "token": {tc.token}})
			if a.code != tc.code || !strings.Contains(html.UnescapeString(a.body), tc.want) {
				t.Fatalf("%d, want %d with %q\n%s", a.code, tc.code, tc.want, a.body)
			}
			if home := c.get("/console"); home.code != http.StatusUnauthorized {
				t.Fatalf("signed in anyway: %d", home.code)
			}
		})
	}
}

func TestForgedCSRFIsRefused(t *testing.T) {
	f := newFixture(t)
	f.publish(t, delivered("o-1")...)
	tok := f.token(t, schemas.SourceAgent, "alice", time.Now(), time.Hour)

	t.Run("sign-in", func(t *testing.T) {
		c := f.client(t)
		c.get("/console")
		a := c.post("/console/signin", url.Values{"csrf": {"forged"}, "token": {tok}})
		if a.code != http.StatusForbidden || !strings.Contains(a.body, "CSRF token is missing or wrong") {
			t.Fatalf("%d\n%s", a.code, a.body)
		}
	})
	t.Run("correction", func(t *testing.T) {
		c := f.client(t)
		csrf := c.signIn(tok)
		page := c.get("/console/orders/o-1")
		form := correction(t, page, "arrived", "customer says not delivered", true)
		for name, forged := range map[string][]string{"missing": nil, "wrong": {"x" + csrf[1:]}, "empty": {""}} {
			form["csrf"] = forged
			a := c.post("/console/orders/o-1/correct", form)
			if a.code != http.StatusForbidden || !strings.Contains(a.body, "CSRF token is missing or wrong") || !strings.Contains(a.body, "nothing was done") {
				t.Errorf("%s CSRF token: %d\n%s", name, a.code, a.body)
			}
		}
		for path, form := range map[string]url.Values{"/console/signout": {}, "/console/find": {"order_id": {"o-1"}}} {
			form.Set("csrf", "forged")
			if a := c.post(path, form); a.code != http.StatusForbidden {
				t.Errorf("%s with a forged CSRF token: %d", path, a.code)
			}
		}
		if n := f.events(t, "o-1"); n != 4 {
			t.Fatalf("%d events after forged posts, want 4: something was sent", n)
		}
	})
}

func TestExpiredSession(t *testing.T) {
	f := newFixture(t)
	f.publish(t, delivered("o-1")...)
	c := f.client(t)
	c.signIn(f.token(t, schemas.SourceAgent, "alice", time.Now(), time.Hour))
	page := c.get("/console/orders/o-1")

	// The session is the token: one that expired since sign-in is an ended session.
	expired := f.token(t, schemas.SourceAgent, "alice", time.Now().Add(-2*time.Hour), time.Hour)
	u, _ := url.Parse(f.srv.URL + "/console")
	c.http.Jar.SetCookies(u, []*http.Cookie{{Name: "orderflow_console", Value: expired, Path: "/console"}})

	a := c.get("/console/orders/o-1")
	if a.code != http.StatusUnauthorized || !strings.Contains(a.body, "Your session has ended") || !strings.Contains(a.body, `name="next" value="/console/orders/o-1"`) {
		t.Fatalf("page with an expired session: %d\n%s", a.code, a.body)
	}
	a = c.post("/console/orders/o-1/correct", correction(t, page, "arrived", "late", true))
	if a.code != http.StatusUnauthorized || !strings.Contains(a.body, "Your session has ended") || !strings.Contains(a.body, "Nothing was sent") {
		t.Fatalf("correction with an expired session: %d\n%s", a.code, a.body)
	}
	for _, path := range []string{"/console/orders/o-1/live", "/console/orders/o-1/watch"} {
		if a := c.get(path); a.code != http.StatusUnauthorized {
			t.Errorf("%s with an expired session: %d", path, a.code)
		}
	}
	if n := f.events(t, "o-1"); n != 4 {
		t.Fatalf("%d events, want 4", n)
	}
}

func TestBadCorrectionsSendNothing(t *testing.T) {
	f := newFixture(t)
	f.publish(t, delivered("o-1")...)
	c := f.client(t)
	c.signIn(f.token(t, schemas.SourceAgent, "alice", time.Now(), time.Hour))
	page := c.get("/console/orders/o-1")
	good := func() url.Values { return correction(t, page, "arrived", "customer says not delivered", true) }
	for name, tc := range map[string]struct {
		set       func(url.Values)
		code      int
		want      string
		keepInput string
	}{
		"empty reason":   {func(v url.Values) { v.Set("reason", "   ") }, http.StatusBadRequest, "Write a reason for the correction", ""},
		"no status":      {func(v url.Values) { v.Set("status", "") }, http.StatusBadRequest, "Choose the status the order should have.", "customer says not delivered"},
		"unknown status": {func(v url.Values) { v.Set("status", "teleported") }, http.StatusBadRequest, "Choose the status", ""},
		"long reason":    {func(v url.Values) { v.Set("reason", strings.Repeat("x", schemas.MaxReasonLen+1)) }, http.StatusBadRequest, "The reason is too long", ""},
		"bad observed":   {func(v url.Values) { v.Set("observed", `{"robot":1}`) }, http.StatusBadRequest, "unknown source", ""},
	} {
		t.Run(name, func(t *testing.T) {
			v := good()
			tc.set(v)
			a := c.post("/console/orders/o-1/correct", v)
			if a.code != tc.code || !strings.Contains(a.body, tc.want) || !strings.Contains(a.body, `role="alert"`) {
				t.Fatalf("%d, want %d with %q\n%s", a.code, tc.code, tc.want, a.body)
			}
			if tc.keepInput != "" && !strings.Contains(a.body, tc.keepInput) {
				t.Errorf("the form lost the agent's input %q", tc.keepInput)
			}
		})
	}
	if n := f.events(t, "o-1"); n != 4 {
		t.Fatalf("%d events, want 4: a bad correction was sent", n)
	}
}

func TestUnknownOrder(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	csrf := c.signIn(f.token(t, schemas.SourceAgent, "alice", time.Now(), time.Hour))
	a := c.get("/console/orders/nobody")
	if a.code != http.StatusNotFound || !strings.Contains(a.body, "No order nobody") || !strings.Contains(a.body, `name="order_id"`) {
		t.Fatalf("unknown order: %d\n%s", a.code, a.body)
	}
	a = c.post("/console/find", url.Values{"csrf": {csrf}, "order_id": {"no such/order"}})
	if a.code != http.StatusBadRequest || !strings.Contains(a.body, "Order ids are 1 to 64 letters") {
		t.Fatalf("bad order id: %d\n%s", a.code, a.body)
	}
	a = c.post("/console/orders/nobody/correct", url.Values{"csrf": {csrf}, "status": {"arrived"}, "reason": {"x"}})
	if a.code != http.StatusNotFound || !strings.Contains(a.body, "No order nobody") {
		t.Fatalf("correcting an unknown order: %d\n%s", a.code, a.body)
	}
}

// TestReasonIsEscaped sends, through the console and the ingest handler as an
// agent would, an event whose reason is markup, and checks the pages show it as text.
func TestReasonIsEscaped(t *testing.T) {
	f := newFixture(t)
	f.publish(t, delivered("o-1")...)
	const evil = `<script>alert("owned")</script><img src=x onerror=alert(1)>`
	c := f.client(t)
	c.signIn(f.token(t, schemas.SourceAgent, "alice", time.Now(), time.Hour))
	// The console's own form is one way in; it must escape on the way out too.
	page := c.get("/console/orders/o-1")
	a := c.post("/console/orders/o-1/correct", correction(t, page, "arrived", evil, true))
	if a.code != http.StatusSeeOther {
		t.Fatalf("correction: %d\n%s", a.code, a.body)
	}
	for _, path := range []string{a.location, "/console/orders/o-1/live"} {
		got := c.get(strings.TrimSuffix(path, "#result"))
		if strings.Contains(got.body, "<script>alert") || strings.Contains(got.body, "<img src=x") {
			t.Fatalf("%s shows the reason as markup:\n%s", path, got.body)
		}
		if !strings.Contains(got.body, `&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;`) {
			t.Fatalf("%s does not show the reason as text:\n%s", path, got.body)
		}
	}
}

// TestCorrectBackwardsConfirmsAndNamesTheMilestone reverts a delivered order: the
// console asks first, naming the milestone to be revoked, then sends an agent event
// whose observed is the version vector the page showed, and shows the decision.
func TestCorrectBackwardsConfirmsAndNamesTheMilestone(t *testing.T) {
	f := newFixture(t)
	f.publish(t, delivered("o-1")...)
	c := f.client(t)
	c.signIn(f.token(t, schemas.SourceAgent, "alice", time.Now(), time.Hour))
	page := c.get("/console/orders/o-1")
	form := correction(t, page, "arrived", "customer never got it", false)

	confirm := c.post("/console/orders/o-1/correct", form)
	if confirm.code != http.StatusOK {
		t.Fatalf("confirmation: %d\n%s", confirm.code, confirm.body)
	}
	for _, want := range []string{
		"Move order o-1 back to arrived?",
		"This revokes the milestone <strong>delivered</strong>",
		"<code>delivered_revoked</code>",
		"The resolver would decide: <strong>applied</strong>",
		`name="confirm" value="yes"`,
		"No, keep it delivered",
	} {
		if !strings.Contains(confirm.body, want) {
			t.Errorf("confirmation lacks %q\n%s", want, confirm.body)
		}
	}
	if strings.Contains(confirm.body, "picked_up_revoked") {
		t.Errorf("confirmation says picked_up is revoked; arrived keeps it")
	}
	if n := f.events(t, "o-1"); n != 4 {
		t.Fatalf("%d events before confirming, want 4", n)
	}

	form.Set("csrf", field(t, csrfField, confirm.body))
	form.Set("confirm", "yes")
	a := c.post("/console/orders/o-1/correct", form)
	if a.code != http.StatusSeeOther || !strings.HasPrefix(a.location, "/console/orders/o-1?sent=5") {
		t.Fatalf("confirmed correction: %d %q\n%s", a.code, a.location, a.body)
	}
	sent := f.event(t, "o-1", 5)
	if sent.Source != schemas.SourceAgent || sent.SourceSeq != 1 || sent.ActorID != "alice" || sent.Note != "customer never got it" ||
		sent.Decision != "applied" || sent.Reason != "override" {
		t.Fatalf("sent event %+v", sent)
	}
	if got, want := mustJSON(t, sent.Observed), `{"driver":2,"merchant":1,"platform":1}`; got != want {
		t.Fatalf("observed %s, want the vector on screen %s", got, want)
	}
	result := c.get(strings.TrimSuffix(a.location, "#result"))
	for _, want := range []string{"Stored at WAL sequence 5", "The resolver decided: <strong>applied</strong>",
		`(<span class="code">override</span>)`, `id="current-status">arrived<`, "your correction"} {
		if !strings.Contains(result.body, want) {
			t.Errorf("result page lacks %q", want)
		}
	}

	// Sending the same form again is the same event.
	again := c.post("/console/orders/o-1/correct", form)
	if again.code != http.StatusSeeOther || !strings.Contains(again.location, "sent=5") || !strings.Contains(again.location, "dup=1") {
		t.Fatalf("resent form: %d %q", again.code, again.location)
	}

	// The driver says delivered again; an agent still looking at the old vector
	// does not cover it, so the correction is outranked, and the page says so
	// before and after.
	page = c.get("/console/orders/o-1")
	form.Set("nonce", field(t, nonceField, page.body))
	form.Set("observed", field(t, observedField, page.body))
	form.Del("confirm")
	f.publish(t, testenv.Event("o-1", schemas.SourceDriver, 3, schemas.StatusDelivered))
	confirm = c.post("/console/orders/o-1/correct", form)
	for _, want := range []string{"The resolver would decide: <strong>ignored</strong>", "override_outranked", "The order would then be <strong>delivered</strong>"} {
		if !strings.Contains(confirm.body, want) {
			t.Errorf("confirmation lacks %q\n%s", want, confirm.body)
		}
	}
	form.Set("confirm", "yes")
	a = c.post("/console/orders/o-1/correct", form)
	if a.code != http.StatusSeeOther || !strings.HasPrefix(a.location, "/console/orders/o-1?sent=7") {
		t.Fatalf("second correction: %d %q\n%s", a.code, a.location, a.body)
	}
	if sent := f.event(t, "o-1", 7); sent.Decision != "ignored" || sent.Reason != "override_outranked" || sent.SourceSeq != 2 ||
		mustJSON(t, sent.Observed) != `{"agent":1,"driver":2,"merchant":1,"platform":1}` {
		t.Fatalf("sent event %+v", sent)
	}
	result = c.get(strings.TrimSuffix(a.location, "#result"))
	if !strings.Contains(result.body, "The resolver decided: <strong>ignored</strong>") || !strings.Contains(result.body, `id="current-status">delivered<`) {
		t.Errorf("result page:\n%s", result.body)
	}
}

// event returns the order's timeline entry at WAL sequence seq.
func (f *fixture) event(t *testing.T, id string, seq uint64) orders.TimelineEvent {
	t.Helper()
	tl, err := f.reader.Timeline(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tl.Events {
		if e.WalSeq == seq {
			return e
		}
	}
	t.Fatalf("no event at WAL sequence %d", seq)
	return orders.TimelineEvent{}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestWithoutClickHouseSaysSo(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	csrf := c.signIn(f.token(t, schemas.SourceAgent, "alice", time.Now(), time.Hour))
	home := c.get("/console")
	if !strings.Contains(home.body, "this instance runs without it") {
		t.Errorf("home page does not say ClickHouse is off:\n%s", home.body)
	}
	a := c.post("/console/entities", url.Values{"csrf": {csrf}, "entity": {"customer"}, "id": {"c-1"}})
	if a.code != http.StatusSeeOther {
		t.Fatalf("list form: %d\n%s", a.code, a.body)
	}
	list := c.get(a.location)
	if list.code != http.StatusOK || !strings.Contains(list.body, "this instance runs without it") {
		t.Fatalf("list without ClickHouse: %d\n%s", list.code, list.body)
	}
}

func TestSignOut(t *testing.T) {
	f := newFixture(t)
	c := f.client(t)
	csrf := c.signIn(f.token(t, schemas.SourceAgent, "alice", time.Now(), time.Hour))
	a := c.post("/console/signout", url.Values{"csrf": {csrf}})
	if a.code != http.StatusOK || !strings.Contains(a.body, "Signed out") {
		t.Fatalf("sign out: %d\n%s", a.code, a.body)
	}
	if home := c.get("/console"); home.code != http.StatusUnauthorized {
		t.Fatalf("still signed in: %d", home.code)
	}
}
