package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/services/ingest"
	"github.com/orderflow/orderflow/schemas"
)

// correctionForm is what the agent sent, kept to fill the form again.
type correctionForm struct {
	Status   string
	Reason   string
	Observed string
	// Nonce makes the event id: sending the same form twice is one event.
	Nonce string
}

var noncePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{16,43}$`)

func newNonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// eventID is the id of the event a form sends.
func (f correctionForm) eventID() string { return "console-" + f.Nonce }

// preview is what a correction would do, by the resolver's own rules, to the
// order as the WAL holds it now.
type preview struct {
	From, To  schemas.Status
	Backwards bool
	// Revoked are the milestones the correction takes back: downstream receives
	// <milestone>_revoked.
	Revoked  []string
	Decision string
	Reason   string
}

func (p preview) needsConfirmation() bool { return p.Backwards || len(p.Revoked) > 0 }

// confirmPage asks before a correction moves an order backwards.
type confirmPage struct {
	chrome
	ID      string
	Form    correctionForm
	Preview preview
}

func (c *Console) correct(w http.ResponseWriter, r *http.Request) {
	s, ok := c.form(w, r)
	if !ok {
		return
	}
	ov, ok := c.load(w, r, s)
	if !ok {
		return
	}
	id := ov.ID
	f := correctionForm{
		Status:   r.PostForm.Get("status"),
		Reason:   strings.TrimSpace(r.PostForm.Get("reason")),
		Observed: r.PostForm.Get("observed"),
		Nonce:    r.PostForm.Get("nonce"),
	}
	again := func(code int, msg string) {
		p := c.newOrderPage(s, ov)
		p.Error, p.Form = msg, f
		if !noncePattern.MatchString(f.Nonce) {
			p.Form.Nonce = newNonce()
		}
		c.render(w, code, "order", p)
	}
	if ov.Archived {
		again(http.StatusConflict, "This order is archived: its history is read-only here, so it cannot be corrected.")
		return
	}
	var observed map[schemas.Source]uint64
	switch {
	case !schemas.Status(f.Status).Valid():
		again(http.StatusBadRequest, "Choose the status the order should have.")
		return
	case f.Reason == "":
		again(http.StatusBadRequest, "Write a reason for the correction: the timeline shows it to everyone who looks at this order. Nothing was sent.")
		return
	case utf8.RuneCountInString(f.Reason) > schemas.MaxReasonLen:
		again(http.StatusBadRequest, fmt.Sprintf("The reason is too long: at most %d characters. Nothing was sent.", schemas.MaxReasonLen))
		return
	case !noncePattern.MatchString(f.Nonce):
		again(http.StatusBadRequest, "The form is incomplete; check the order below and send the correction again.")
		return
	case json.Unmarshal([]byte(f.Observed), &observed) != nil:
		again(http.StatusBadRequest, "The form's version vector is unreadable; check the order below and send the correction again.")
		return
	}
	for src := range observed {
		if !src.Valid() {
			again(http.StatusBadRequest, "The form's version vector names an unknown source; check the order below and send the correction again.")
			return
		}
	}

	// The same form sent again (a double click, a retry after a timeout): it is
	// one event, already in the timeline.
	for _, e := range ov.Events {
		if e.Source == schemas.SourceAgent && e.EventID == f.eventID() {
			http.Redirect(w, r, resultURL(id, e.WalSeq, true), http.StatusSeeOther)
			return
		}
	}
	ev := schemas.Event{
		SchemaVersion: schemas.SchemaVersion,
		EventID:       f.eventID(),
		OrderID:       id,
		Source:        schemas.SourceAgent,
		SourceSeq:     ov.Current.Version[schemas.SourceAgent] + 1,
		OccurredAt:    c.cfg.Now().UTC(),
		Status:        schemas.Status(f.Status),
		ActorID:       s.id.ActorID,
		Reason:        f.Reason,
		Observed:      observed,
	}
	if len(ev.Observed) == 0 {
		ev.Observed = nil
	}
	pv, err := c.preview(r.Context(), ov, &ev)
	if err != nil {
		c.fail(w, s, http.StatusServiceUnavailable, "Cannot read order "+id+" now; retry in a moment", err)
		return
	}
	if pv.needsConfirmation() && r.PostForm.Get("confirm") != "yes" {
		title := "Confirm the correction"
		if pv.Backwards {
			title = fmt.Sprintf("Move order %s back to %s?", id, words(f.Status))
		}
		c.render(w, http.StatusOK, "confirm", confirmPage{chrome: s.chrome(title, "", ""), ID: id, Form: f, Preview: pv})
		return
	}

	code, body := c.send(r.Context(), s, &ev)
	switch code {
	case http.StatusAccepted:
		var a ingest.Accepted
		if err := json.Unmarshal(body, &a); err != nil {
			c.fail(w, s, http.StatusBadGateway, "The correction was stored, but its answer was unreadable", err)
			return
		}
		http.Redirect(w, r, resultURL(id, a.Seq, a.Duplicate), http.StatusSeeOther)
	case http.StatusUnauthorized:
		clearCookie(w, r, sessionCookie)
		c.signInPage(w, r, http.StatusUnauthorized, msgSessionEnded+" The correction was not sent.", "", "")
	default:
		again(code, refusal(code, body))
	}
}

func resultURL(id string, seq uint64, dup bool) string {
	q := url.Values{"sent": {strconv.FormatUint(seq, 10)}}
	if dup {
		q.Set("dup", "1")
	}
	return Prefix + "/orders/" + id + "?" + q.Encode() + "#result"
}

// preview folds ev into a fresh copy of the order with the resolver and compares
// status and milestones before and after.
func (c *Console) preview(ctx context.Context, ov *orderView, ev *schemas.Event) (preview, error) {
	st, err := c.cfg.Reader.Replay(ctx, ev.OrderID, 0)
	if err != nil {
		return preview{}, err
	}
	before, reached := st.View(), st.Milestones()
	d, ok := fold.Apply(st, ev, st.WalSeq()+1)
	if !ok {
		return preview{}, fmt.Errorf("the resolver failed on the correction")
	}
	pv := preview{
		From: before.Status, To: st.View().Status,
		Backwards: resolver.Precedes(ev.Status, before.Status),
		Decision:  string(d.Outcome), Reason: string(d.Reason),
	}
	// What the outbox owes after the correction, counting what it owes now as sent:
	// the revocations are the correction's doing.
	ob := outbox.Outbox{Emitted: kinds(ov.Sent)}
	ob.Update(reached)
	ob.Emitted, ob.Pending = append(ob.Emitted, ob.Pending...), nil
	ob.Update(st.Milestones())
	for _, k := range ob.Pending {
		if m, ok := strings.CutSuffix(k, outbox.Revoked); ok {
			pv.Revoked = append(pv.Revoked, m)
		}
	}
	return pv, nil
}

// send posts ev through the ingest handler as the agent: the same token check,
// rate limit, validation and WAL write as any producer's event.
func (c *Console) send(ctx context.Context, s *session, ev *schemas.Event) (int, []byte) {
	body, err := json.Marshal(ev)
	if err != nil {
		return http.StatusInternalServerError, []byte(`{"error":"encode the event"}`)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "/v1/orders/"+ev.OrderID+"/events", bytes.NewReader(body))
	if err != nil {
		return http.StatusInternalServerError, []byte(`{"error":"build the request"}`)
	}
	req.SetPathValue("id", ev.OrderID)
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", ev.EventID)
	rec := &recorder{header: http.Header{}, code: http.StatusOK}
	c.cfg.Ingest.ServeHTTP(rec, req)
	return rec.code, rec.body.Bytes()
}

// refusal words an ingest refusal for the agent.
func refusal(code int, body []byte) string {
	var e ingest.ErrorBody
	_ = json.Unmarshal(body, &e)
	var ps []string
	for _, p := range e.Problems {
		ps = append(ps, strings.TrimSpace(p.Path+" "+p.Message))
	}
	detail := e.Error
	if len(ps) > 0 {
		detail += ": " + strings.Join(ps, "; ")
	}
	switch code {
	case http.StatusTooManyRequests:
		return "You sent many corrections in a short time; wait a few seconds and send it again (" + detail + "). Nothing was sent."
	case http.StatusServiceUnavailable:
		return "The WAL did not answer in time, so the correction may or may not be stored. Send the same form again: it cannot be stored twice."
	}
	return "The correction was refused (" + strconv.Itoa(code) + "): " + detail + ". Nothing was sent."
}

// recorder is the in-process answer of the ingest handler.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
	wrote  bool
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.code, r.wrote = code, true
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}
