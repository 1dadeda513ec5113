package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/testsupport/testrun"
)

// lookTool finds a binary of Debian's prometheus package; a missing one fails the
// test (go tool task test installs it).
func lookTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install Debian's prometheus package (go tool task test does; or apt-get install -y prometheus)", name)
	}
	return p
}

func TestAlertRulesPassPromtool(t *testing.T) {
	promtool := lookTool(t, "promtool")
	dir := filepath.Join(deployDir(t), "prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Every alert has a unit test, firing and not firing.
	rules := readYAMLMap(t, filepath.Join(dir, "alerts.yml"))
	tests, err := os.ReadFile(filepath.Join(dir, "alerts_test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range rules["groups"].([]any) {
		for _, r := range dig(g, "rules").([]any) {
			name := fmt.Sprint(dig(r, "alert"))
			fire := regexp.MustCompile(`alertname: ` + name + `\n\s+exp_alerts:\n\s+- `)
			quiet := regexp.MustCompile(`alertname: ` + name + `\n\s+exp_alerts: \[\]`)
			if !fire.Match(tests) || !quiet.Match(tests) {
				t.Errorf("alerts_test.yml needs a case where %s fires and one where it does not", name)
			}
		}
	}
}

// expression is one PromQL expression of a dashboard panel or an alert rule.
type expression struct {
	where string
	expr  string
	alert bool
	// regions: the expression queries what only `serve --region` exports (it is in
	// the dashboard's regionsRow or the rules' regionsGroup).
	regions bool
}

// The dashboard row and the alert group over the region series. Each live test
// checks its own: the single-region one everything else, against a serve
// with the ClickHouse sink, a full WAL and the ingest API under load;
// TestRegionDashboardAndAlertsQueryLiveMetrics these, against two linked regions.
// One Prometheus scraping all three would mix them in every aggregation (the WAL
// fill is the largest WAL over the largest limit), and a region is not the place
// to fill a WAL; so the split is by where an expression lives, which is also how
// an operator reads the dashboard.
const (
	regionsRow   = "Regions"
	regionsGroup = "orderflow-regions"
)

func dashboardExpressions(t testing.TB) []expression {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(deployDir(t), "grafana", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no dashboards in deploy/grafana (%v)", err)
	}
	var out []expression
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []struct {
				Type    string `json:"type"`
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		row := "" // panels belong to the row above them
		for _, panel := range d.Panels {
			if panel.Type == "row" {
				row = panel.Title
			}
			for _, tg := range panel.Targets {
				out = append(out, expression{where: filepath.Base(p) + ": " + panel.Title, expr: tg.Expr, regions: row == regionsRow})
			}
		}
	}
	return out
}

func alertExpressions(t testing.TB) []expression {
	t.Helper()
	rules := readYAMLMap(t, filepath.Join(deployDir(t), "prometheus", "alerts.yml"))
	var out []expression
	for _, g := range rules["groups"].([]any) {
		regions := dig(g, "name") == regionsGroup
		for _, r := range dig(g, "rules").([]any) {
			out = append(out, expression{where: "alert " + fmt.Sprint(dig(r, "alert")), expr: fmt.Sprint(dig(r, "expr")), alert: true, regions: regions})
		}
	}
	return out
}

// liveExpressions are the dashboard's and the alerts' expressions of one live
// test: the regions' or all others.
func liveExpressions(t testing.TB, regions bool) []expression {
	t.Helper()
	var out []expression
	for _, e := range append(dashboardExpressions(t), alertExpressions(t)...) {
		if e.regions == regions {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no expressions with regions=%v", regions)
	}
	return out
}

// selectorRE finds the series selectors of an expression: our metric names (and
// `up`) with their label matchers.
var selectorRE = regexp.MustCompile(`\b((?:orderflow_|go_|process_)[a-z0-9_]+|up)\b(\{[^}]*\})?`)

// TestDashboardsAndAlertsQueryLiveMetrics runs the binary as the image does
// (serve with the ClickHouse sink and the archive), puts the simulator's load,
// ingest requests, reads, bad events and a full WAL through it, has a real
// Prometheus scrape it and load the alert rules, and checks every expression of
// the dashboard panels and alerts (checkExpressions) except the regions' (see
// regionsRow).
func TestDashboardsAndAlertsQueryLiveMetrics(t *testing.T) {
	lookTool(t, "prometheus")
	ch := testenv.SharedClickHouse(t)
	db := ch.CreateDatabase(t)
	const walLimit = 16 << 20
	in := startServe(t, "--clickhouse-dsn", ch.DSN(db), "--archive-interval", "2s",
		"--wal-max-bytes", fmt.Sprint(walLimit))

	api := startPrometheus(t, in.HTTP)

	// Load: the simulator (with bad events for the DLQ), then the ingest API (a
	// 202, a 401 and a burst that hits the driver's rate limit), reads.
	out := run(t, "simulate", "--nats-url", in.NATSURL, "--orders", "800", "--rate", "3000", "--invalid", "0.01", "--report")
	t.Logf("simulate: %s", firstLine(out))
	token := strings.TrimSpace(run(t, "token", "issue", "--data-dir", in.DataDir, "--source", "driver", "--actor", "d-1"))
	codes := map[int]int{}
	for i := 1; i <= 30; i++ {
		code, _ := in.do(t, http.MethodPost, "/v1/orders/ingest-1/events", token, driverEvent("ingest-1", i))
		codes[code]++
	}
	code, _ := in.do(t, http.MethodPost, "/v1/orders/ingest-1/events", "", driverEvent("ingest-1", 99))
	codes[code]++
	if codes[http.StatusAccepted] == 0 || codes[http.StatusTooManyRequests] == 0 || codes[http.StatusUnauthorized] != 1 {
		t.Fatalf("ingest answers %v: want 202s, 429s and one 401", codes)
	}
	for i := 0; i < 20; i++ {
		in.get(t, fmt.Sprintf("/v1/orders/s1-%06d", i))
	}
	// Fill the WAL to --wal-max-bytes: producers are refused, and so is the ingest API (507).
	refused := fillWAL(t, in.NATSURL, 200_000)
	t.Logf("WAL full after %d more events", refused)
	code, body := in.do(t, http.MethodPost, "/v1/orders/ingest-2/events", token, driverEvent("ingest-2", 1))
	if code != http.StatusInsufficientStorage || !strings.Contains(string(body), "WAL is full") {
		t.Fatalf("ingest at a full WAL answered %d %s, want 507 naming the full WAL", code, body)
	}

	// Enough scrapes after the last change that every rate() has two samples of it.
	waitFor(t, 2*time.Minute, "Prometheus scraping serve", func() bool {
		r, err := promQuery(api, `count(up{job="orderflow"} == 1)`)
		return err == nil && len(r) == 1
	})
	time.Sleep(5 * time.Second)

	checkExpressions(t, api, liveExpressions(t, false))

	// The rules loaded in Prometheus evaluate without error, and tell the truth:
	// the WAL is full, an instance is ready.
	waitFor(t, time.Minute, "OrderflowWALFull pending", func() bool {
		return alertState(t, api, "OrderflowWALFull") != "inactive"
	})
	rules := healthyRules(t, api)
	if s := rules["OrderflowNoReadyInstance"].State; s != "inactive" {
		t.Errorf("OrderflowNoReadyInstance is %s while serve is ready", s)
	}
}

// TestRegionDashboardAndAlertsQueryLiveMetrics runs two regions as the binary's
// `serve --region a` and `--region b` processes linked over loopback, publishes the
// simulator's orders in each (b's milestones go to a, the milestones home), has a
// real Prometheus scrape both, and checks the expressions of the dashboard's
// Regions row and of the regions alert group; each panel by peer shows both
// regions' views. OrderflowRegionLinkDown tells the truth: quiet while the regions
// are linked, pending in b's view once a stops.
func TestRegionDashboardAndAlertsQueryLiveMetrics(t *testing.T) {
	lookTool(t, "prometheus")
	bin := orderflowBinary(t)
	natsA, natsB, leafA, leafB := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	// b first: a, whose name sorts first, opens the link to b's --region-listen.
	b := testrun.Serve(t, bin, nil, "--data-dir", t.TempDir(), "--nats-listen", natsB,
		"--region", "b", "--region-listen", leafB, "--peer", "a")
	a := testrun.Serve(t, bin, nil, "--data-dir", t.TempDir(), "--nats-listen", natsA,
		"--region", "a", "--region-listen", leafA, "--peer", "b="+leafB)
	for _, p := range []*testrun.Process{a, b} {
		if p.Exited() {
			t.Fatal("a region's serve exited at start")
		}
	}
	api := startPrometheus(t, a.HTTP, b.HTTP)

	for i, addr := range []string{natsA, natsB} {
		out := run(t, "simulate", "--nats-url", "nats://"+addr, "--orders", "100", "--seed", fmt.Sprint(i+1))
		t.Logf("simulate in %s: %s", []string{"a", "b"}[i], firstLine(out))
	}

	// Linked both ways, each region's series scraped twice, so that
	// every rate, increase and deriv has samples.
	waitFor(t, time.Minute, "both regions report the link up to Prometheus", func() bool {
		r, err := promQuery(api, `count(orderflow_region_link_up == 1) == 2`)
		return err == nil && len(r) == 1
	})
	waitFor(t, time.Minute, "two scrapes of each region's series", func() bool {
		r, err := promQuery(api, `count(count_over_time(orderflow_region_link_up[1m]) >= 2) == 2`)
		return err == nil && len(r) == 1
	})

	checkExpressions(t, api, liveExpressions(t, true))
	// Each region's view is there: a series per peer.
	for _, e := range liveExpressions(t, true) {
		if e.alert || !strings.Contains(e.expr, "by (peer)") {
			continue
		}
		res, _ := promQuery(api, e.expr)
		peers := map[string]bool{}
		for _, r := range res {
			peers[fmt.Sprint(dig(r, "metric", "peer"))] = true
		}
		if !peers["a"] || !peers["b"] {
			t.Errorf("%s: %s returns peers %v, want a and b", e.where, e.expr, sortedKeys(peers))
		}
	}

	if s := healthyRules(t, api)["OrderflowRegionLinkDown"].State; s != "inactive" {
		t.Errorf("OrderflowRegionLinkDown is %s while the regions are linked", s)
	}
	a.Stop(t)
	waitFor(t, time.Minute, "OrderflowRegionLinkDown pending once region a stopped", func() bool {
		return alertState(t, api, "OrderflowRegionLinkDown") != "inactive"
	})
}

// startPrometheus runs Debian's Prometheus with the alert rules, scraping the
// targets (host:port) and evaluating the rules every second, and returns its
// API's base URL.
func startPrometheus(t *testing.T, targets ...string) string {
	t.Helper()
	prom := lookTool(t, "prometheus")
	promAddr := freeAddr(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: orderflow
    static_configs: [{targets: [%s]}]
`, filepath.Join(deployDir(t), "prometheus", "alerts.yml"), `"`+strings.Join(targets, `", "`)+`"`)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	promLog, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	pcmd := exec.Command(prom, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr)
	pcmd.Stdout, pcmd.Stderr = promLog, promLog
	if err := pcmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = pcmd.Process.Kill()
		_ = pcmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b[max(0, len(b)-3000):])
		}
	})
	return "http://" + promAddr
}

// checkExpressions evaluates each expression in the Prometheus at api: each must
// evaluate, a panel's must return data, and every series an expression selects
// must exist, so a typo'd metric or label cannot hide behind an alert that is
// merely quiet.
func checkExpressions(t testing.TB, api string, exprs []expression) {
	t.Helper()
	for _, e := range exprs {
		res, err := promQuery(api, e.expr)
		if err != nil {
			t.Errorf("%s: %s: %v", e.where, e.expr, err)
			continue
		}
		if !e.alert && len(res) == 0 {
			t.Errorf("%s: %s returns no data", e.where, e.expr)
		}
		for _, m := range selectorRE.FindAllString(e.expr, -1) {
			r, err := promQuery(api, m)
			if err != nil || len(r) == 0 {
				t.Errorf("%s: selector %s matches no series (%v)", e.where, m, err)
			}
		}
	}
}

// healthyRules returns the rules Prometheus loaded, failing t unless it loaded
// every rule of alerts.yml and each evaluates without error.
func healthyRules(t testing.TB, api string) map[string]ruleState {
	t.Helper()
	rules := promRules(t, api)
	for name, r := range rules {
		if r.Health != "ok" {
			t.Errorf("rule %s: health %s: %s", name, r.Health, r.LastError)
		}
	}
	if len(rules) != len(alertExpressions(t)) {
		t.Errorf("Prometheus loaded %d rules, alerts.yml has %d", len(rules), len(alertExpressions(t)))
	}
	return rules
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func driverEvent(order string, seq int) []byte {
	return []byte(fmt.Sprintf(`{"schema_version":1,"event_id":"%s-driver-%d","order_id":%q,"source":"driver","source_seq":%d,`+
		`"occurred_at":"2026-11-28T12:00:00Z","status":"picked_up","actor_id":"d-1","dasher_id":"d-1"}`, order, seq, order, seq))
}

// fillWAL publishes valid created events of new orders until the WAL refuses one,
// at most max, and returns how many it stored; it fails t unless the refusal is
// JetStream's "maximum bytes exceeded".
func fillWAL(t testing.TB, natsURL string, max int) int {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const batch = 500
	stored := 0
	for stored < max {
		futures := make([]jetstream.PubAckFuture, 0, batch)
		for i := 0; i < batch; i++ {
			id := fmt.Sprintf("fill-%07d", stored+i)
			m := nats.NewMsg("orders.events.platform." + id)
			m.Header.Set(nats.MsgIdHdr, id+"-platform-1")
			m.Data = []byte(fmt.Sprintf(`{"schema_version":1,"event_id":"%s-platform-1","order_id":%q,"source":"platform","source_seq":1,`+
				`"occurred_at":"2026-11-28T12:00:00Z","status":"created","customer_id":"c-fill","restaurant_id":"r-fill"}`, id, id))
			f, err := js.PublishMsgAsync(m)
			if err != nil {
				t.Fatal(err)
			}
			futures = append(futures, f)
		}
		var refusal error
		for _, f := range futures {
			select {
			case <-f.Ok():
				stored++
			case err := <-f.Err():
				refusal = err
			case <-ctx.Done():
				t.Fatal("publish acks did not come within 5m")
			}
		}
		if refusal != nil {
			if !strings.Contains(refusal.Error(), "maximum bytes exceeded") {
				t.Fatalf("the WAL refused with %v, want maximum bytes exceeded", refusal)
			}
			return stored
		}
	}
	t.Fatalf("the WAL took %d events without reaching its limit", stored)
	return stored
}

func waitFor(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// promQuery evaluates expr now and returns the result's series (or the scalar).
func promQuery(api, expr string) ([]any, error) {
	resp, err := http.Get(api + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     any    `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s", r.Error)
	}
	if l, ok := r.Data.Result.([]any); ok {
		return l, nil
	}
	return []any{r.Data.Result}, nil
}

type ruleState struct {
	State, Health, LastError string
}

func promRules(t testing.TB, api string) map[string]ruleState {
	t.Helper()
	resp, err := http.Get(api + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					State     string `json:"state"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	out := map[string]ruleState{}
	for _, g := range r.Data.Groups {
		for _, rl := range g.Rules {
			out[rl.Name] = ruleState{rl.State, rl.Health, rl.LastError}
		}
	}
	return out
}

func alertState(t testing.TB, api, name string) string {
	return promRules(t, api)[name].State
}
