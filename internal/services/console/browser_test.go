package console_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

var screenshots = flag.String("screenshots", filepath.Join(os.TempDir(), "orderflow-console-screenshots"),
	"directory the browser test saves its screenshots in")

// serveForBrowser runs orderflow serve (pipeline, API with --auth, console) against
// a test NATS server, and returns its HTTP address and its data directory, where
// the token key is.
func serveForBrowser(t *testing.T, env *testenv.NATSEnv) (addr, dataDir string) {
	t.Helper()
	dataDir = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan app.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Serve(ctx, app.ServeConfig{
			NATSURL: env.URL, DataDir: dataDir, HTTPListen: "127.0.0.1:0",
			Topology: topology.Topology{Partitions: 2},
			Security: app.SecurityConfig{Auth: true},
			Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
			Started:  func(a app.Addrs) { addrs <- a },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case a := <-addrs:
		return a.HTTP, dataDir
	case err := <-done:
		t.Fatalf("serve stopped before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start within 30s")
	}
	return "", ""
}

// browser starts headless Chromium (Debian's) with a fresh profile, and returns
// a context for its tab that ends within two minutes.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(testenv.Chromium(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(1280, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	// The first run starts the browser, which lives as long as that run's context:
	// no timeout on it, one on what follows.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancel)
	return tctx
}

// screenshot saves the whole page as <screenshots>/<name>.png.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(*screenshots, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(*screenshots, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// waitText polls until the text of the element sel selects contains want. It
// reads the text in the page in one step: the live part is replaced whole on
// updates, so a node looked up first may be gone by the time it is read.
func waitText(t *testing.T, ctx context.Context, sel, want string, within time.Duration) {
	t.Helper()
	expr := fmt.Sprintf(`(function () { var e = document.querySelector(%q); return e ? e.innerText : ""; })()`, sel)
	var got string
	deadline := time.Now().Add(within)
	for {
		got = eval[string](t, ctx, expr)
		if strings.Contains(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s shows %q, want %q within %s", sel, got, want, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// TestBrowserSupportConsole drives real headless Chromium through the console of
// a real orderflow serve: sign in, find an order, read its timeline, watch a
// producer's status change arrive live, correct the status backwards with
// confirmation, and see the milestone revoked downstream.
func TestBrowserSupportConsole(t *testing.T) {
	env := testenv.NATS(t)
	addr, dataDir := serveForBrowser(t, env)
	base := "http://" + addr
	key, err := auth.LoadOrCreateTokenKey(auth.Dir(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	token, err := auth.Issue(key, auth.IssueRequest{Source: schemas.SourceAgent, ActorID: "agent-ana", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// The API itself wants a bearer token under --auth: the console signs in instead.
	if resp, err := http.Get(base + "/v1/orders/o-1"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("API without a token: %v %v, want 401", resp, err)
	}

	const id = "o-1842"
	for _, ev := range []schemas.Event{
		testenv.Event(id, schemas.SourcePlatform, 1, schemas.StatusCreated),
		testenv.Event(id, schemas.SourceMerchant, 1, schemas.StatusConfirmed),
		testenv.Event(id, schemas.SourceMerchant, 2, schemas.StatusPreparing),
		testenv.Event(id, schemas.SourceEstimator, 1, schemas.StatusEnRoute),
		testenv.Event(id, schemas.SourceMerchant, 3, schemas.StatusReadyForPickup),
		testenv.Event(id, schemas.SourceDriver, 1, schemas.StatusPickedUp),
		testenv.Event(id, schemas.SourceDriver, 2, schemas.StatusEnRoute),
		testenv.Event(id, schemas.SourceMerchant, 4, schemas.StatusPreparing), // behind
	} {
		env.Publish(t, ev)
	}

	ctx := browser(t)

	// Sign in.
	do(t, ctx, "open the console",
		chromedp.Navigate(base+"/console"),
		chromedp.WaitVisible(chromedp.ID("token")),
	)
	screenshot(t, ctx, "1-sign-in")
	do(t, ctx, "sign in",
		chromedp.SetValue(chromedp.ID("token"), token),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("order-id")),
	)
	waitText(t, ctx, ".signout .who", "agent-ana", 5*time.Second)

	// Find the order, by keyboard: the id field has the focus; Enter submits.
	if focused := eval[string](t, ctx, `document.activeElement.id`); focused != "order-id" {
		t.Errorf("focus is on %q after sign-in, want the order id field", focused)
	}
	do(t, ctx, "find the order",
		chromedp.SendKeys(chromedp.ID("order-id"), id+"\r"),
		chromedp.WaitVisible(chromedp.ID("events")),
	)
	waitText(t, ctx, "#current-status", "en route", 5*time.Second)
	if n := eval[int](t, ctx, `document.querySelectorAll('#events li.ev').length`); n != 8 {
		t.Fatalf("timeline shows %d events, want 8", n)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll('#events li.ev.deciding').length`); n != 1 {
		t.Fatalf("%d events marked as deciding, want 1", n)
	}
	waitText(t, ctx, "#ev-7", "decides the current status", time.Second)
	waitText(t, ctx, "#ev-8 .why", "Statuses never move backwards", time.Second)
	waitText(t, ctx, "#ev-4 .why", "predicted", time.Second)
	waitText(t, ctx, "#live-state", "Live", 10*time.Second)

	// A producer publishes while the agent watches: the page follows live.
	env.Publish(t, testenv.Event(id, schemas.SourceDriver, 3, schemas.StatusArrived))
	env.Publish(t, testenv.Event(id, schemas.SourceDriver, 4, schemas.StatusDelivered))
	waitText(t, ctx, "#current-status", "delivered", 10*time.Second)
	waitText(t, ctx, "#live-state", "status changed to delivered", 5*time.Second)
	waitText(t, ctx, "#milestones ol", "delivered", 10*time.Second)
	observed, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("observed")))
	if err != nil {
		t.Fatal(err)
	}
	if want := `"driver":4`; !strings.Contains(observed, want) {
		t.Fatalf("the correction form would send observed %s, want the vector on screen (%s)", observed, want)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`!document.getElementById('live').dataset.owed`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("milestones still owed: %v", err)
	}
	screenshot(t, ctx, "2-order-live")

	// Correct backwards: the confirmation names the milestone to be revoked.
	do(t, ctx, "fill the correction",
		chromedp.SetValue(chromedp.ID("status"), "arrived"),
		chromedp.SendKeys(chromedp.ID("reason"), "Customer called: the bag was left at the wrong door"),
		chromedp.Click(chromedp.CSS("#correct-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.ID("confirm")),
	)
	waitText(t, ctx, "main", "This revokes the milestone delivered", time.Second)
	waitText(t, ctx, "main", "delivered_revoked", time.Second)
	screenshot(t, ctx, "3-confirm")
	do(t, ctx, "confirm", chromedp.Click(chromedp.ID("confirm")), chromedp.WaitVisible(chromedp.ID("result")))
	waitText(t, ctx, "#result", "The resolver decided: applied (override)", time.Second)
	waitText(t, ctx, "#current-status", "arrived", time.Second)
	// The lanes revoke the milestone; the page shows it once it is published.
	waitText(t, ctx, "#milestones ol", "delivered revoked", 15*time.Second)
	screenshot(t, ctx, "4-corrected")

	// Bad input gets a clear message, and sends nothing. The browser's own checks
	// (required fields) come first; without them the server says the same.
	do(t, ctx, "empty reason",
		chromedp.Evaluate[chromedp.Void](`document.getElementById('reason').removeAttribute('required')`),
		chromedp.SetValue(chromedp.ID("status"), "delivered"),
		chromedp.SetValue(chromedp.ID("reason"), "   "),
		chromedp.Click(chromedp.CSS("#correct-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.ID("page-error")),
	)
	waitText(t, ctx, "#page-error", "Write a reason for the correction", time.Second)
	do(t, ctx, "forged CSRF token",
		chromedp.SetValue(chromedp.CSS("#correct-form input[name=csrf]"), "forged"),
		chromedp.SetValue(chromedp.ID("reason"), "a page of another site posted this"),
		chromedp.Click(chromedp.CSS("#correct-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.ID("page-error")),
	)
	waitText(t, ctx, "#page-error", "CSRF token is missing or wrong", time.Second)
	do(t, ctx, "unknown order",
		chromedp.Navigate(base+"/console"),
		chromedp.SendKeys(chromedp.ID("order-id"), "o-nobody\r"),
		chromedp.WaitVisible(chromedp.ID("page-error")),
	)
	waitText(t, ctx, "#page-error", "No order o-nobody", time.Second)
	do(t, ctx, "back to the order", chromedp.Navigate(base+"/console/orders/"+id), chromedp.WaitVisible(chromedp.ID("events")))
	waitText(t, ctx, "#current-status", "arrived", time.Second)
	if n := eval[int](t, ctx, `document.querySelectorAll('#events li.ev').length`); n != 11 {
		t.Fatalf("timeline shows %d events after the refused posts, want 11: something was sent", n)
	}

	// Phone width: no sideways scrolling.
	do(t, ctx, "phone width",
		chromedp.EmulateViewport(390, 844),
		chromedp.Navigate(base+"/console/orders/"+id),
		chromedp.WaitVisible(chromedp.ID("events")),
	)
	if eval[bool](t, ctx, `document.documentElement.scrollWidth > window.innerWidth`) {
		t.Errorf("the order page scrolls sideways at phone width")
	}
	screenshot(t, ctx, "5-phone")
}
