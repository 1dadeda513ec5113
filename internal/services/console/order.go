package console

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/services/orders"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// orderView is one order as the order page shows it.
type orderView struct {
	ID             string
	Archived       bool
	ArchivedWalSeq uint64
	Current        resolver.View
	Events         []eventRow
	Versions       []versionRow
	// ObservedJSON is Current.Version as a correction sends it: the vector on screen.
	ObservedJSON string
	// Sent are the milestone messages published for the order, oldest first.
	Sent []sentMilestone
	// Owed are the milestone messages the current status calls for that are not
	// published yet (the lanes' relay sends them within moments).
	Owed []string
	// Entities reports whether the ids link to per-entity lists (ClickHouse is on).
	Entities bool
}

// eventRow is one timeline entry with its explanation.
type eventRow struct {
	fold.TimelineEvent
	Explanation string
	// Deciding marks the event whose claim is the current status.
	Deciding bool
	// Mine marks the correction the agent just sent.
	Mine bool
}

type versionRow struct {
	Source schemas.Source
	Seq    uint64
}

type sentMilestone struct {
	Kind string
	At   time.Time
	Seq  uint64
}

// loadOrder reads an order: its timeline from the WAL, else from the archive.
// orders.ErrNotFound when neither has it.
func (c *Console) loadOrder(ctx context.Context, id string) (*orderView, error) {
	ov := &orderView{ID: id, Entities: c.cfg.ClickHouse != nil}
	tl, err := c.cfg.Reader.Timeline(ctx, id)
	var events []fold.TimelineEvent
	switch {
	case err == nil:
		events = tl.Events
		if tl.Current != nil {
			ov.Current = *tl.Current
		} else {
			ov.Current = resolver.View{OrderID: id, Version: map[schemas.Source]uint64{}}
		}
	case errors.Is(err, orders.ErrNotFound) && c.cfg.Archive != nil:
		a, found, aerr := c.cfg.Archive.Lookup(ctx, id)
		if aerr != nil {
			return nil, fmt.Errorf("archive lookup of %s: %w", id, aerr)
		}
		if !found {
			return nil, orders.ErrNotFound
		}
		ov.Archived, ov.ArchivedWalSeq, ov.Current = true, a.WalSeq, a.Current
		for _, e := range a.Events {
			events = append(events, e.TimelineEvent)
		}
	default:
		return nil, err
	}

	decider := deciding(ov.Current, events)
	for _, e := range events {
		ov.Events = append(ov.Events, eventRow{TimelineEvent: e, Explanation: explain(e.Reason), Deciding: decider != 0 && e.WalSeq == decider})
	}
	for _, s := range schemas.Sources {
		if v, ok := ov.Current.Version[s]; ok {
			ov.Versions = append(ov.Versions, versionRow{Source: s, Seq: v})
		}
	}
	b, err := json.Marshal(ov.Current.Version)
	if err != nil {
		return nil, err
	}
	ov.ObservedJSON = string(b)

	if ov.Sent, err = c.sentMilestones(ctx, id); err != nil {
		return nil, err
	}
	if !ov.Archived && len(events) > 0 {
		// Milestones are judged on the authoritative status, which the view hides
		// while a prediction leads: ask the resolver, at the timeline's point.
		st, err := c.cfg.Reader.Replay(ctx, id, events[len(events)-1].WalSeq)
		if err != nil {
			return nil, err
		}
		ob := outbox.Outbox{Emitted: kinds(ov.Sent)}
		ob.Update(st.Milestones())
		ov.Owed = ob.Pending
	}
	return ov, nil
}

// deciding returns the WAL sequence of the event that decides the current status:
// of the events the resolver did not reject or drop as a retry, one from the
// status's source claiming that status, the highest of the source's sequence (the
// claim the resolver keeps), the later in the WAL on a tie. 0 when none is.
func deciding(cur resolver.View, events []fold.TimelineEvent) uint64 {
	if cur.Status == "" || cur.StatusSource == "" {
		return 0
	}
	var best *fold.TimelineEvent
	for i := range events {
		e := &events[i]
		if e.Source != cur.StatusSource || e.Status != cur.Status ||
			e.Decision == string(resolver.Rejected) || e.Decision == string(resolver.Duplicate) {
			continue
		}
		if best == nil || e.SourceSeq >= best.SourceSeq {
			best = e
		}
	}
	if best == nil {
		return 0
	}
	return best.WalSeq
}

// sentMilestones reads, from stream ORDER_MILESTONES, the messages published for
// the order: at most one per kind, so at most nine direct gets.
func (c *Console) sentMilestones(ctx context.Context, id string) ([]sentMilestone, error) {
	s, err := c.cfg.JS.Stream(ctx, topology.MilestonesStream)
	if err != nil {
		return nil, fmt.Errorf("milestone stream: %w", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(outbox.Subject(id, "*")))
	if err != nil {
		return nil, fmt.Errorf("milestones of %s: %w", id, err)
	}
	var out []sentMilestone
	for subj := range info.State.Subjects {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("milestone %s: %w", subj, err)
		}
		kind := strings.TrimSuffix(strings.TrimPrefix(subj, topology.MilestonesPrefix+"."), "."+id)
		out = append(out, sentMilestone{Kind: kind, At: m.Time, Seq: m.Sequence})
	}
	slices.SortFunc(out, func(a, b sentMilestone) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, nil
}

func kinds(ms []sentMilestone) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Kind
	}
	return out
}

// orderPage is the order page.
type orderPage struct {
	chrome
	Order    *orderView
	Statuses []schemas.Status
	Form     correctionForm
	Result   *sentResult
}

// sentResult is the banner after a correction: what the resolver made of it.
type sentResult struct {
	Seq       uint64
	Duplicate bool
	Found     bool
	Event     eventRow
}

func (c *Console) order(w http.ResponseWriter, r *http.Request) {
	s, ok := c.page(w, r)
	if !ok {
		return
	}
	ov, ok := c.load(w, r, s)
	if !ok {
		return
	}
	p := c.newOrderPage(s, ov)
	if seq, err := strconv.ParseUint(r.URL.Query().Get("sent"), 10, 64); err == nil && seq > 0 {
		p.Result = &sentResult{Seq: seq, Duplicate: r.URL.Query().Get("dup") == "1"}
		for i := range ov.Events {
			if ov.Events[i].WalSeq == seq {
				ov.Events[i].Mine = true
				p.Result.Found, p.Result.Event = true, ov.Events[i]
			}
		}
	}
	c.render(w, http.StatusOK, "order", p)
}

func (c *Console) newOrderPage(s *session, ov *orderView) orderPage {
	return orderPage{
		chrome:   s.chrome("Order "+ov.ID, "", ""),
		Order:    ov,
		Statuses: schemas.Statuses,
		Form:     correctionForm{Nonce: newNonce()},
	}
}

// orderID reads and checks the {id} path value, or answers 400.
func (c *Console) orderID(w http.ResponseWriter, r *http.Request, s *session) (string, bool) {
	id := r.PathValue("id")
	if !schemas.ValidOrderID(id) {
		c.render(w, http.StatusBadRequest, "home", c.homePage(s, "", "Order ids are 1 to 64 letters, digits, _ or -."))
		return "", false
	}
	return id, true
}

// load reads the order of the {id} path value, or answers: 400 for a bad id, 404
// with the find form when the order is unknown.
func (c *Console) load(w http.ResponseWriter, r *http.Request, s *session) (*orderView, bool) {
	id, ok := c.orderID(w, r, s)
	if !ok {
		return nil, false
	}
	ov, err := c.loadOrder(r.Context(), id)
	switch {
	case errors.Is(err, orders.ErrNotFound):
		c.render(w, http.StatusNotFound, "home", c.homePage(s, "",
			fmt.Sprintf("No order %s: no event was ever stored for it, and the archive does not have it. Check the id.", id)))
		return nil, false
	case err != nil:
		c.fail(w, s, http.StatusServiceUnavailable, "Cannot read order "+id+" now; retry in a moment", err)
		return nil, false
	}
	return ov, true
}

// live answers the live part of the order page, for the page's script.
func (c *Console) live(w http.ResponseWriter, r *http.Request) {
	if _, err := c.session(r); err != nil {
		http.Error(w, "sign in again", http.StatusUnauthorized)
		return
	}
	id := r.PathValue("id")
	if !schemas.ValidOrderID(id) {
		http.Error(w, "bad order id", http.StatusBadRequest)
		return
	}
	ov, err := c.loadOrder(r.Context(), id)
	switch {
	case errors.Is(err, orders.ErrNotFound):
		http.Error(w, "order not found", http.StatusNotFound)
		return
	case err != nil:
		c.cfg.Logger.Error("console: live", "order", id, "err", err)
		http.Error(w, "cannot read the order now", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := c.pages["order"].ExecuteTemplate(w, "live", ov); err != nil {
		c.cfg.Logger.Error("console: render live", "err", err)
	}
}

// watch is the API's SSE status watch behind the console's session.
func (c *Console) watch(w http.ResponseWriter, r *http.Request) {
	if _, err := c.session(r); err != nil {
		http.Error(w, "sign in again", http.StatusUnauthorized)
		return
	}
	c.cfg.Watch.ServeHTTP(w, r)
}
