// Package ingest is the HTTP write path of DESIGN §8.2: POST /v1/orders/{id}/events.
// A request is authenticated (bearer JWT: the token fixes the source and the actor),
// rate limited per actor, validated exactly as the status lanes will validate it
// (fold.Classify, the pipeline's own gate), and answered only once JetStream has
// stored it in the WAL, with the WAL's sequence.
//
// The guarantee callers rely on: a 202 means the event is in the WAL; a 4xx means
// it was not written. A 503 means the WAL did not answer in time, so the outcome is
// unknown: retrying with the same Idempotency-Key (which becomes Nats-Msg-Id) is safe
// within the stream's duplicate window and answers duplicate: true if it was stored.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/services/httpjson"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// Route is where the handler is mounted; it reads the {id} path value.
const Route = "POST /v1/orders/{id}/events"

// Publisher is what the handler needs of JetStream.
type Publisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// TokenVerifier checks a bearer token; its errors mean 401.
type TokenVerifier interface {
	Verify(ctx context.Context, raw string) (auth.Identity, error)
}

// Config configures the handler.
type Config struct {
	// JS publishes to the WAL; with NATS auth on, it is connected as the ingest role.
	JS     Publisher
	Tokens TokenVerifier
	// Limits are per actor, by the token's source; a source without one is unlimited.
	// Default DefaultLimits().
	Limits map[schemas.Source]Limit
	// Timeout bounds the wait for the WAL's ack before answering 503. Default 5s.
	Timeout time.Duration
	// MaxBodyBytes is the 413 threshold. Default and maximum schemas.MaxEventBytes,
	// which the lanes enforce too.
	MaxBodyBytes int64
	Registerer   prometheus.Registerer
	Logger       *slog.Logger
	// Now is the clock of the rate limiter. Default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Limits == nil {
		c.Limits = DefaultLimits()
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = schemas.MaxEventBytes
	}
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
	case c.JS == nil:
		return errors.New("ingest: JS is required")
	case c.Tokens == nil:
		return errors.New("ingest: Tokens is required")
	case c.Registerer == nil:
		return errors.New("ingest: Registerer is required")
	case c.Timeout < 0:
		return errors.New("ingest: Timeout must be > 0")
	case c.MaxBodyBytes < 1 || c.MaxBodyBytes > schemas.MaxEventBytes:
		return fmt.Errorf("ingest: MaxBodyBytes must be in 1..%d (the lanes refuse larger events)", schemas.MaxEventBytes)
	}
	for src, l := range c.Limits {
		if !src.Valid() || l.Rate <= 0 || l.Burst < 1 {
			return fmt.Errorf("ingest: limit %s=%v: want a known source, rate > 0, burst >= 1", src, l)
		}
	}
	return nil
}

// Handler serves POST /v1/orders/{id}/events.
type Handler struct {
	cfg      Config
	limiter  *limiter
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	limited  *prometheus.CounterVec
}

// New returns the handler and registers its metrics.
func New(cfg Config) (*Handler, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Handler{
		cfg:     cfg,
		limiter: newLimiter(cfg.Limits),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderflow_ingest_requests_total",
			Help: "Ingest API requests by the token's source (unknown before authentication) and HTTP status code.",
		}, []string{"source", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "orderflow_ingest_request_duration_seconds",
			Help:    "Ingest API latency, from request to answer (a 202 includes the WAL's ack).",
			Buckets: prometheus.ExponentialBuckets(1e-4, 2, 16),
		}, []string{"source"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderflow_ingest_rate_limited_total",
			Help: "Ingest API requests refused with 429 by the per-actor token bucket.",
		}, []string{"source"}),
	}
	for _, c := range []prometheus.Collector{h.requests, h.duration, h.limited} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("ingest metrics: %w", err)
		}
	}
	return h, nil
}

// Accepted is the 202 body.
type Accepted struct {
	Stream    string `json:"stream"`
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
}

// Problem is one entry of a 400's list (the validator's path and message).
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// ErrorBody is every refusal's body.
type ErrorBody struct {
	Error    string    `json:"error"`
	Problems []Problem `json:"problems,omitempty"`
}

var (
	// An Idempotency-Key becomes a NATS header value and a dedupe key: printable
	// ASCII without spaces, as long as an event_id may be.
	idempotencyPattern = regexp.MustCompile(`^[\x21-\x7e]{1,64}$`)
)

// actorBound are the sources whose events carry the bearer's own actor_id.
var actorBound = map[schemas.Source]bool{schemas.SourceDriver: true, schemas.SourceMerchant: true, schemas.SourceAgent: true}

// ServeHTTP answers one event.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	source := "unknown"
	code := h.serve(w, r, &source)
	h.requests.WithLabelValues(source, strconv.Itoa(code)).Inc()
	h.duration.WithLabelValues(source).Observe(time.Since(start).Seconds())
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, source *string) int {
	raw, ok := auth.BearerToken(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="orderflow"`)
		return refuse(w, http.StatusUnauthorized, "missing bearer token: send Authorization: Bearer <token>")
	}
	id, err := h.cfg.Tokens.Verify(r.Context(), raw)
	if err != nil {
		if !errors.Is(err, auth.ErrInvalidToken) {
			// The key source failed (JWKS unreachable and nothing cached): not the caller's fault.
			h.cfg.Logger.Error("ingest: token keys unavailable", "err", err)
			w.Header().Set("Retry-After", "5")
			return refuse(w, http.StatusServiceUnavailable, "token keys unavailable")
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="orderflow", error="invalid_token"`)
		return refuse(w, http.StatusUnauthorized, err.Error())
	}
	*source = string(id.Source)

	if ok, wait := h.limiter.allow(id.Source, id.ActorID, h.cfg.Now()); !ok {
		h.limited.WithLabelValues(*source).Inc()
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		return refuse(w, http.StatusTooManyRequests, fmt.Sprintf("rate limit of %s %s exceeded; retry after %s", id.Source, id.ActorID, wait.Round(time.Millisecond)))
	}

	orderID := r.PathValue("id")
	if !schemas.ValidOrderID(orderID) {
		return refuse(w, http.StatusBadRequest, "order id must match ^[A-Za-z0-9_-]{1,64}$")
	}
	keys := r.Header.Values("Idempotency-Key")
	if len(keys) > 1 {
		return refuse(w, http.StatusBadRequest, "Idempotency-Key appears more than once")
	}
	if len(keys) == 1 && !idempotencyPattern.MatchString(keys[0]) {
		return refuse(w, http.StatusBadRequest, "Idempotency-Key must be 1..64 printable ASCII characters without spaces")
	}

	if r.ContentLength > h.cfg.MaxBodyBytes {
		return refuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", h.cfg.MaxBodyBytes))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return refuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", h.cfg.MaxBodyBytes))
		}
		return refuse(w, http.StatusBadRequest, "reading body: "+err.Error())
	}

	// The token, not the body, says the source: the event goes to that source's
	// subject, where the lanes check the body against it.
	subject := schemas.Subject(id.Source, orderID)
	ev, rej := fold.Classify(fold.Record{Subject: subject, Data: body})
	if rej != nil {
		return h.invalid(w, id, subject, body, rej)
	}
	if actorBound[id.Source] && ev.ActorID != id.ActorID {
		return refuse(w, http.StatusForbidden, fmt.Sprintf("actor_id %q is not the token's actor %q: a %s posts only as itself", ev.ActorID, id.ActorID, id.Source))
	}

	key := ev.EventID
	if len(keys) == 1 {
		key = keys[0]
	}
	msg := nats.NewMsg(subject)
	msg.Data = body
	msg.Header.Set(jetstream.MsgIDHeader, MsgID(id.Source, id.ActorID, key))
	// The answer must say what happened to the event, so a client hanging up does
	// not cut the wait short: only the WAL timeout does.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), h.cfg.Timeout)
	defer cancel()
	ack, err := h.cfg.JS.PublishMsg(ctx, msg, jetstream.WithExpectStream(topology.EventsStream))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && walFull(apiErr) {
			// Discard-new at --wal-max-bytes: nothing was stored, so a retry is safe
			// once the archive, an age limit or an operator made room.
			h.cfg.Logger.Warn("ingest: WAL full, event refused", "subject", subject, "err", err)
			w.Header().Set("Retry-After", "30")
			return refuse(w, http.StatusInsufficientStorage, "the WAL is full (its --wal-max-bytes limit): the event was not stored; retry later with the same Idempotency-Key")
		}
		if errors.As(err, &apiErr) {
			h.cfg.Logger.Error("ingest: WAL refused an event", "subject", subject, "err", err)
			return refuse(w, http.StatusInternalServerError, "the WAL refused the event: "+apiErr.Description)
		}
		h.cfg.Logger.Warn("ingest: WAL did not answer", "subject", subject, "err", err)
		w.Header().Set("Retry-After", "1")
		return refuse(w, http.StatusServiceUnavailable, "the WAL did not answer in time; retry with the same Idempotency-Key")
	}
	httpjson.Write(w, http.StatusAccepted, Accepted{Stream: ack.Stream, Seq: ack.Sequence, Duplicate: ack.Duplicate})
	return http.StatusAccepted
}

// invalid answers an event the lanes would reject: 403 when it claims another
// source than the token's, else 400 with every problem the validator found.
func (h *Handler) invalid(w http.ResponseWriter, id auth.Identity, subject string, body []byte, rej *fold.Rejection) int {
	if rej.Reason == fold.ReasonPayloadTooLarge {
		return refuse(w, http.StatusRequestEntityTooLarge, rej.Detail)
	}
	if rej.Reason == fold.ReasonSourceMismatch {
		return refuse(w, http.StatusForbidden, fmt.Sprintf("the token is for source %s; the body names another", id.Source))
	}
	out := ErrorBody{Error: "invalid event: " + rej.Reason}
	// The same decoder the lanes run, for its list: Classify keeps only a summary.
	if _, err := schemas.Decode(subject, body); err != nil {
		if ps, ok := err.(schemas.Problems); ok {
			for _, p := range ps {
				out.Problems = append(out.Problems, Problem{Path: p.Path, Message: p.Message})
			}
		}
	}
	if len(out.Problems) == 0 {
		out.Problems = []Problem{{Message: rej.Detail}}
	}
	httpjson.Write(w, http.StatusBadRequest, out)
	return http.StatusBadRequest
}

// walFull reports JetStream's refusal of a store at a stream's size or count limit
// (error 10077 with the store's reason).
func walFull(e *jetstream.APIError) bool {
	return e.ErrorCode == 10077 && (strings.Contains(e.Description, "maximum bytes") || strings.Contains(e.Description, "maximum messages"))
}

// MsgID is the Nats-Msg-Id of an event posted with idempotency key key: scoped to
// the token's source and actor, because JetStream deduplicates across the whole
// stream. A client's key then can never match the id of an event another
// producer publishes (dispatch's and the estimator's ids are predictable), which
// would make JetStream drop that event as a duplicate; a retry by the same actor
// with the same key still deduplicates.
func MsgID(src schemas.Source, actor, key string) string {
	return "ingest:" + string(src) + ":" + actor + ":" + key
}

func refuse(w http.ResponseWriter, code int, msg string) int {
	httpjson.Write(w, code, ErrorBody{Error: msg})
	return code
}
