package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/services/httpjson"
	"github.com/orderflow/orderflow/schemas"
)

// Routes are the HTTP patterns Handler serves, for the API to mount.
var Routes = []string{
	"GET /v1/dashers/nearby",
	"POST /v1/orders/{id}/assign",
	"POST /v1/orders/{id}/assign/{action}",
}

// Search limits of GET /v1/dashers/nearby.
const (
	MaxRadiusM    = 50_000
	DefaultRadius = 1000
	DefaultLimit  = 10
	MaxLimit      = 1000
)

// TokenVerifier checks bearer tokens (package auth).
type TokenVerifier interface {
	Verify(ctx context.Context, raw string) (auth.Identity, error)
}

// HTTP serves the dispatch routes.
type HTTP struct {
	index      *Index
	dispatcher *Dispatcher
	tokens     TokenVerifier
}

// NewHTTP serves searches from index and assignments through d. With tokens set
// (serve --auth), assign needs a platform token, and accept/decline/release a
// platform token or the dasher's own driver token.
func NewHTTP(index *Index, d *Dispatcher, tokens TokenVerifier) *HTTP {
	return &HTTP{index: index, dispatcher: d, tokens: tokens}
}

// Handler returns the routes.
func (h *HTTP) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(Routes[0], h.nearby)
	mux.HandleFunc(Routes[1], h.assign)
	mux.HandleFunc(Routes[2], h.action)
	return mux
}

type problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

func (h *HTTP) nearby(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var ps []problem
	num := func(name string, def, lo, hi float64, required bool) float64 {
		s := q.Get(name)
		if s == "" {
			if required {
				ps = append(ps, problem{name, "is required"})
			}
			return def
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || !(v >= lo && v <= hi) {
			ps = append(ps, problem{name, "must be a number in [" + strconv.FormatFloat(lo, 'f', -1, 64) + ", " + strconv.FormatFloat(hi, 'f', -1, 64) + "]"})
		}
		return v
	}
	lat := num("lat", 0, -90, 90, true)
	lng := num("lng", 0, -180, 180, true)
	radius := num("radius_m", DefaultRadius, 1, MaxRadiusM, false)
	limit := num("limit", DefaultLimit, 1, MaxLimit, false)
	if limit != float64(int(limit)) {
		ps = append(ps, problem{"limit", "must be an integer"})
	}
	if len(ps) > 0 {
		httpjson.Write(w, http.StatusBadRequest, map[string]any{"error": "invalid search", "problems": ps})
		return
	}
	hits := h.index.Nearby(Query{Center: Point{Lat: lat, Lng: lng}, RadiusM: radius, Limit: int(limit)})
	if hits == nil {
		hits = []Hit{}
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"dashers": hits})
}

func (h *HTTP) assign(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !schemas.ValidOrderID(id) {
		httpjson.WriteError(w, http.StatusBadRequest, "order id must match ^[A-Za-z0-9_-]{1,64}$")
		return
	}
	if !h.authorize(w, r, "") {
		return
	}
	var req AssignRequest
	if !readJSON(w, r, &req) {
		return
	}
	var ps []problem
	if !req.Pickup.Valid() || (req.Pickup == Point{}) {
		ps = append(ps, problem{"/pickup", "must be a position {lat, lng}"})
	}
	if req.Dropoff != nil && !req.Dropoff.Valid() {
		ps = append(ps, problem{"/dropoff", "must be a position {lat, lng}"})
	}
	if req.RadiusM < 0 || req.RadiusM > MaxRadiusM {
		ps = append(ps, problem{"/radius_m", "must be in [0, 50000]"})
	}
	if len(ps) > 0 {
		httpjson.Write(w, http.StatusBadRequest, map[string]any{"error": "invalid assignment request", "problems": ps})
		return
	}
	a, err := h.dispatcher.Assign(r.Context(), id, req)
	if h.failed(w, err) {
		return
	}
	code := http.StatusCreated
	if a.Existing {
		code = http.StatusOK
	}
	httpjson.Write(w, code, a)
}

// action is accept, decline or release, with body {"dasher_id"}.
func (h *HTTP) action(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !schemas.ValidOrderID(id) {
		httpjson.WriteError(w, http.StatusBadRequest, "order id must match ^[A-Za-z0-9_-]{1,64}$")
		return
	}
	var body struct {
		DasherID string `json:"dasher_id"`
	}
	if !readJSON(w, r, &body) {
		return
	}
	if !ValidDasherID(body.DasherID) {
		httpjson.WriteError(w, http.StatusBadRequest, "dasher_id must match ^[A-Za-z0-9_-]{1,64}$")
		return
	}
	if !h.authorize(w, r, body.DasherID) {
		return
	}
	var err error
	var a Assignment
	switch r.PathValue("action") {
	case "accept":
		a, err = h.dispatcher.Accept(r.Context(), id, body.DasherID)
	case "decline":
		err = h.dispatcher.Decline(r.Context(), id, body.DasherID)
		a = Assignment{OrderID: id, DasherID: body.DasherID, State: "declined"}
	case "release":
		err = h.dispatcher.Release(r.Context(), id, body.DasherID)
		a = Assignment{OrderID: id, DasherID: body.DasherID, State: "released"}
	default:
		httpjson.WriteError(w, http.StatusNotFound, "no such action: accept, decline or release")
		return
	}
	if h.failed(w, err) {
		return
	}
	httpjson.Write(w, http.StatusOK, a)
}

// authorize checks the bearer when auth is on: a platform token, or (dasher != "")
// the dasher's own driver token.
func (h *HTTP) authorize(w http.ResponseWriter, r *http.Request, dasher string) bool {
	if h.tokens == nil {
		return true
	}
	raw, ok := auth.BearerToken(r)
	id, err := h.tokens.Verify(r.Context(), raw)
	if !ok || err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="orderflow"`)
		httpjson.WriteError(w, http.StatusUnauthorized, "a valid bearer token is required")
		return false
	}
	if id.Source == schemas.SourcePlatform || (dasher != "" && id.Source == schemas.SourceDriver && id.ActorID == dasher) {
		return true
	}
	httpjson.WriteError(w, http.StatusForbidden, "needs a platform token, or the dasher's own driver token")
	return false
}

func (h *HTTP) failed(w http.ResponseWriter, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrNoDasher):
		w.Header().Set("Retry-After", "5")
		httpjson.WriteError(w, http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, ErrOrderNotFound), errors.Is(err, ErrNoLease):
		httpjson.WriteError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrOrderClosed):
		httpjson.WriteError(w, http.StatusConflict, err.Error())
	case errors.Is(err, ErrContended), errors.Is(err, ErrEventIDTaken):
		w.Header().Set("Retry-After", "1")
		httpjson.WriteError(w, http.StatusConflict, err.Error())
	default:
		w.Header().Set("Retry-After", "1")
		httpjson.WriteError(w, http.StatusServiceUnavailable, err.Error())
	}
	return true
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		httpjson.WriteError(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}
