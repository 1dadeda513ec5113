package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/services/orders"
	"github.com/orderflow/orderflow/sinks/archive"
)

// Prefix is where the console is mounted.
const Prefix = "/console"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// OrderReader is what the console reads of an order (orders.Reader).
type OrderReader interface {
	Timeline(ctx context.Context, id string) (orders.Timeline, error)
	Replay(ctx context.Context, id string, upto uint64) (*resolver.State, error)
}

// TokenVerifier checks agent tokens (auth.Verifier); its errors mean "not signed in".
type TokenVerifier interface {
	Verify(ctx context.Context, raw string) (auth.Identity, error)
}

// Archive finds orders whose events left the WAL (archive.Reader).
type Archive interface {
	Lookup(ctx context.Context, orderID string) (*archive.Order, bool, error)
}

// Config wires the console's dependencies.
type Config struct {
	Reader OrderReader
	Tokens TokenVerifier
	// Ingest is the POST /v1/orders/{id}/events handler: corrections go through it.
	Ingest http.Handler
	// Watch is the API's SSE status watch (api.Server.Watch); it reads {id}.
	Watch http.Handler
	// JS reads the milestone messages an order has had (stream ORDER_MILESTONES).
	JS jetstream.JetStream
	// Archive, when set, shows archived orders.
	Archive Archive
	// ClickHouse, when set, lists a customer's, restaurant's or dasher's orders.
	ClickHouse driver.Conn
	Logger     *slog.Logger
	// Now is the console's clock (event times, list bounds). Default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports the first configuration error.
func (c Config) Validate() error {
	switch {
	case c.Reader == nil:
		return errors.New("console: Reader is required")
	case c.Tokens == nil:
		return errors.New("console: Tokens is required")
	case c.Ingest == nil:
		return errors.New("console: Ingest is required (corrections go through it)")
	case c.Watch == nil:
		return errors.New("console: Watch is required")
	case c.JS == nil:
		return errors.New("console: JS is required")
	}
	return nil
}

// Console serves the support console's pages.
type Console struct {
	cfg   Config
	pages map[string]*template.Template
	mux   *http.ServeMux
}

// New returns the console.
func New(cfg Config) (*Console, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, pages: pages, mux: http.NewServeMux()}
	assets, err := fs.Sub(assetFS, "assets")
	if err != nil {
		return nil, err
	}
	m := c.mux
	m.HandleFunc("GET "+Prefix, c.home)
	m.Handle("GET "+Prefix+"/{$}", http.RedirectHandler(Prefix, http.StatusMovedPermanently))
	m.HandleFunc("POST "+Prefix+"/signin", c.signIn)
	m.HandleFunc("POST "+Prefix+"/signout", c.signOut)
	m.HandleFunc("POST "+Prefix+"/find", c.find)
	m.HandleFunc("POST "+Prefix+"/entities", c.searchEntities)
	m.HandleFunc("GET "+Prefix+"/entities", c.entities)
	m.HandleFunc("GET "+Prefix+"/orders/{id}", c.order)
	m.HandleFunc("GET "+Prefix+"/orders/{id}/live", c.live)
	m.HandleFunc("GET "+Prefix+"/orders/{id}/watch", c.watch)
	m.HandleFunc("POST "+Prefix+"/orders/{id}/correct", c.correct)
	m.Handle("GET "+Prefix+"/assets/", http.StripPrefix(Prefix+"/assets/", http.FileServerFS(assets)))
	return c, nil
}

// ServeHTTP answers every console route, with headers that keep its pages in
// their own origin: no inline script, no framing, nothing loaded from elsewhere.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

// chrome is what every page's frame shows.
type chrome struct {
	Title  string
	Agent  string // the signed-in agent, "" when signed out
	CSRF   string
	Notice string
	Error  string
}

// render writes page name with code. A template error after the header is sent
// can only be logged; templates are tested, so it means a bug.
func (c *Console) render(w http.ResponseWriter, code int, name string, data any) {
	t, ok := c.pages[name]
	if !ok {
		http.Error(w, "no page "+name, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := t.ExecuteTemplate(w, "page", data); err != nil {
		c.cfg.Logger.Error("console: render", "page", name, "err", err)
	}
}

// fail renders an error page: for errors of the console's dependencies, which the
// agent can only retry.
func (c *Console) fail(w http.ResponseWriter, s *session, code int, msg string, err error) {
	if err != nil {
		c.cfg.Logger.Error("console: "+msg, "err", err)
		msg = fmt.Sprintf("%s: %v", msg, err)
	}
	c.render(w, code, "message", messagePage{chrome: s.chrome("Something went wrong", "", msg)})
}

// messagePage is a page that only says something.
type messagePage struct {
	chrome
	Back string
}
