// Package api serves the HTTP contract of DESIGN §2: order reads, timelines, status
// watches over Server-Sent Events, health, readiness and Prometheus metrics.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/internal/services/httpjson"
	"github.com/orderflow/orderflow/internal/services/orders"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
	"github.com/orderflow/orderflow/sinks/archive"
	chsink "github.com/orderflow/orderflow/sinks/clickhouse"
)

// Server is the HTTP API.
type Server struct {
	reader   *orders.Reader
	js       jetstream.JetStream
	log      *wal.Log
	gatherer prometheus.Gatherer
	ready    func() error
	logger   *slog.Logger
	duration *prometheus.HistogramVec
	archive  *archive.Reader
	ch       driver.Conn
	ingest   http.Handler
	dispatch http.Handler
}

// Config wires the server's dependencies.
type Config struct {
	Reader   *orders.Reader
	JS       jetstream.JetStream
	Log      *wal.Log
	Registry *prometheus.Registry
	// Ready reports why the instance cannot serve yet, nil when it can.
	Ready  func() error
	Logger *slog.Logger
	// Archive, when set, answers for orders whose WAL history was archived.
	Archive *archive.Reader
	// ClickHouse, when set, serves the per-entity order lists.
	ClickHouse driver.Conn
	// Ingest, when set, serves POST /v1/orders/{id}/events (package ingest).
	Ingest http.Handler
	// Dispatch, when set, serves the dasher search and assignment routes
	// (package dispatch, dispatch.Routes).
	Dispatch http.Handler
}

// New returns the API server.
func New(cfg Config) *Server {
	s := &Server{
		reader: cfg.Reader, js: cfg.JS, log: cfg.Log, gatherer: cfg.Registry, ready: cfg.Ready, logger: cfg.Logger, archive: cfg.Archive, ch: cfg.ClickHouse, ingest: cfg.Ingest, dispatch: cfg.Dispatch,
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "orderflow_http_request_duration_seconds",
			Help:    "HTTP request latency by route and status code.",
			Buckets: prometheus.ExponentialBuckets(1e-4, 2, 16),
		}, []string{"route", "code"}),
	}
	cfg.Registry.MustRegister(s.duration)
	return s
}

// Handler returns the HTTP routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /v1/orders/{id}", s.timed("order", s.getOrder))
	mux.Handle("GET /v1/orders/{id}/timeline", s.timed("timeline", s.getTimeline))
	mux.HandleFunc("GET /v1/orders/{id}/watch", s.watch)
	mux.Handle("GET /v1/{entity}/{id}/orders", s.timed("entity_orders", s.entityOrders))
	if s.ingest != nil {
		mux.Handle("POST /v1/orders/{id}/events", s.ingest)
	}
	if s.dispatch != nil {
		for _, p := range dispatch.Routes {
			mux.Handle(p, s.dispatch)
		}
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.ready(); err != nil {
			httpjson.Write(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": err.Error()})
			return
		}
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}))
	return mux
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (s *Server) timed(route string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h(rec, r)
		s.duration.WithLabelValues(route, fmt.Sprint(rec.code)).Observe(time.Since(start).Seconds())
	})
}

func (s *Server) orderID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !schemas.ValidOrderID(id) {
		httpjson.WriteError(w, http.StatusBadRequest, "order id must match ^[A-Za-z0-9_-]{1,64}$")
		return "", false
	}
	return id, true
}

func (s *Server) getOrder(w http.ResponseWriter, r *http.Request) {
	id, ok := s.orderID(w, r)
	if !ok {
		return
	}
	v, err := s.reader.Get(r.Context(), id)
	if errors.Is(err, orders.ErrNotFound) {
		var o *archive.Order
		if o, err = s.archived(r.Context(), id); o != nil {
			httpjson.Write(w, http.StatusOK, archivedView{View: o.Current, Archived: true, ArchivedWalSeq: o.WalSeq})
			return
		}
	}
	if s.failed(w, err) {
		return
	}
	httpjson.Write(w, http.StatusOK, v)
}

// archivedView is an order answered from the archive: the same fields, and a flag
// saying where the answer came from.
type archivedView struct {
	resolver.View
	Archived       bool   `json:"archived"`
	ArchivedWalSeq uint64 `json:"archived_wal_seq"`
}

// archived looks up, in the archive, an order the live read path did not find. It
// returns the order, or orders.ErrNotFound when there is no archive or the order is
// not in it, or the lookup's error: an archive outage is not a 404.
func (s *Server) archived(ctx context.Context, id string) (*archive.Order, error) {
	if s.archive == nil {
		return nil, orders.ErrNotFound
	}
	o, found, err := s.archive.Lookup(ctx, id)
	switch {
	case err != nil:
		return nil, fmt.Errorf("archive lookup of %s: %w", id, err)
	case !found:
		return nil, orders.ErrNotFound
	}
	return o, nil
}

func (s *Server) getTimeline(w http.ResponseWriter, r *http.Request) {
	id, ok := s.orderID(w, r)
	if !ok {
		return
	}
	tl, err := s.reader.Timeline(r.Context(), id)
	if errors.Is(err, orders.ErrNotFound) {
		var o *archive.Order
		if o, err = s.archived(r.Context(), id); o != nil {
			httpjson.Write(w, http.StatusOK, o)
			return
		}
	}
	if s.failed(w, err) {
		return
	}
	httpjson.Write(w, http.StatusOK, tl)
}

// entityOrders lists a customer's, restaurant's or dasher's orders, newest first,
// with keyset pagination: pass the answer's next_cursor as ?cursor= for the next page.
func (s *Server) entityOrders(w http.ResponseWriter, r *http.Request) {
	entity := r.PathValue("entity")
	if entity != "customers" && entity != "restaurants" && entity != "dashers" {
		httpjson.WriteError(w, http.StatusNotFound, "no such collection: customers, restaurants or dashers")
		return
	}
	if s.ch == nil {
		httpjson.WriteError(w, http.StatusNotImplemented, "this instance has no ClickHouse sink (start serve with --clickhouse-dsn)")
		return
	}
	q, err := chsink.ParseOrdersQuery(entity, r.PathValue("id"), r.URL.Query(), time.Now())
	if err != nil {
		httpjson.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	page, err := chsink.ListOrders(r.Context(), s.ch, q)
	if errors.Is(err, chsink.ErrBadQuery) {
		httpjson.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if s.failed(w, err) {
		return
	}
	httpjson.Write(w, http.StatusOK, page)
}

// Watch is the SSE status watch, for routes that authenticate differently (the
// support console mounts it behind its session); it reads the {id} path value.
func (s *Server) Watch() http.Handler { return http.HandlerFunc(s.watch) }

// watch streams one SSE event per status change. It folds the order's WAL itself,
// from the first event and then live, so it sees every change, even those that a
// coalesced snapshot write never showed.
func (s *Server) watch(w http.ResponseWriter, r *http.Request) {
	id, ok := s.orderID(w, r)
	if !ok {
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		httpjson.WriteError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	ctx := r.Context()
	c, err := s.js.OrderedConsumer(ctx, topology.EventsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.log.OrderFilter(id)},
	})
	if s.failed(w, err) {
		return
	}
	it, err := c.Messages()
	if s.failed(w, err) {
		return
	}
	defer it.Stop()
	context.AfterFunc(ctx, it.Stop)

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()

	st := resolver.New(id)
	catchup := fold.Into(st, nil)
	var last resolver.View
	for {
		m, err := it.Next()
		if err != nil {
			return // client gone or server closing
		}
		md, err := m.Metadata()
		if err != nil {
			continue
		}
		seq := md.Sequence.Stream
		if err := catchup.Record(fold.Record{Seq: seq, Subject: m.Subject(), Data: m.Data(), Header: m.Headers(), Time: md.Timestamp}); err != nil {
			// The resolver panicked: go on from the order as the lanes have it, without
			// the event.
			if st, err = s.reader.Replay(ctx, id, seq); err != nil {
				return
			}
			catchup = fold.Into(st, nil)
		}
		v := st.View()
		if v.Status == "" || (v.Status == last.Status && v.Predicted == last.Predicted && v.StatusSource == last.StatusSource) {
			continue
		}
		last = v
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "id: %d\nevent: status\ndata: %s\n\n", seq, b); err != nil {
			return
		}
		flusher.Flush()
	}
}

// failed writes the error response for err and reports whether there was one.
func (s *Server) failed(w http.ResponseWriter, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, orders.ErrNotFound):
		httpjson.WriteError(w, http.StatusNotFound, "order not found")
	case errors.Is(err, context.Canceled):
		httpjson.WriteError(w, 499, "client closed request")
	default:
		s.logger.Error("request failed", "err", err)
		httpjson.WriteError(w, http.StatusServiceUnavailable, err.Error())
	}
	return true
}
