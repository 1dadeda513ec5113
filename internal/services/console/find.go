package console

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/orderflow/orderflow/schemas"
	chsink "github.com/orderflow/orderflow/sinks/clickhouse"
)

// homePage is the find page.
type homePage struct {
	chrome
	ClickHouse bool
	Statuses   []schemas.Status
	Query      entityQuery
}

// entityQuery is the per-entity list form, as the URL of its result carries it.
type entityQuery struct {
	Entity, ID, Status, Since, Until, Limit string
}

func entityQueryOf(v url.Values) entityQuery {
	return entityQuery{
		Entity: v.Get("entity"), ID: strings.TrimSpace(v.Get("id")), Status: v.Get("status"),
		Since: strings.TrimSpace(v.Get("since")), Until: strings.TrimSpace(v.Get("until")), Limit: strings.TrimSpace(v.Get("limit")),
	}
}

func (q entityQuery) values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"entity": q.Entity, "id": q.ID, "status": q.Status, "since": q.Since, "until": q.Until, "limit": q.Limit} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

func (c *Console) homePage(s *session, notice, errMsg string) homePage {
	return homePage{chrome: s.chrome("Find an order", notice, errMsg), ClickHouse: c.cfg.ClickHouse != nil, Statuses: schemas.Statuses}
}

func (c *Console) home(w http.ResponseWriter, r *http.Request) {
	s, ok := c.page(w, r)
	if !ok {
		return
	}
	c.render(w, http.StatusOK, "home", c.homePage(s, "", ""))
}

// find opens an order by id: a form post that redirects to the order's page.
func (c *Console) find(w http.ResponseWriter, r *http.Request) {
	s, ok := c.form(w, r)
	if !ok {
		return
	}
	id := strings.TrimSpace(r.PostForm.Get("order_id"))
	if !schemas.ValidOrderID(id) {
		c.render(w, http.StatusBadRequest, "home", c.homePage(s, "", "Order ids are 1 to 64 letters, digits, _ or -."))
		return
	}
	http.Redirect(w, r, Prefix+"/orders/"+id, http.StatusSeeOther)
}

// searchEntities turns the list form into the list's URL, which can be bookmarked
// and paged.
func (c *Console) searchEntities(w http.ResponseWriter, r *http.Request) {
	if _, ok := c.form(w, r); !ok {
		return
	}
	http.Redirect(w, r, Prefix+"/entities?"+entityQueryOf(r.PostForm).values().Encode(), http.StatusSeeOther)
}

// entitiesPage is a customer's, restaurant's or dasher's orders.
type entitiesPage struct {
	homePage
	Page     chsink.OrdersPage
	Searched bool
	NextURL  string
}

// entities lists an entity's orders with the ClickHouse index queries the API's
// /v1/{customers|restaurants|dashers}/{id}/orders uses.
func (c *Console) entities(w http.ResponseWriter, r *http.Request) {
	s, ok := c.page(w, r)
	if !ok {
		return
	}
	p := entitiesPage{homePage: c.homePage(s, "", "")}
	p.Title = "Orders by customer, restaurant or dasher"
	p.Query = entityQueryOf(r.URL.Query())
	if c.cfg.ClickHouse == nil {
		c.render(w, http.StatusOK, "entities", p)
		return
	}
	switch p.Query.Entity {
	case "customer", "restaurant", "dasher":
	default:
		p.Error = "Choose whose orders to list: a customer's, a restaurant's or a dasher's."
		c.render(w, http.StatusBadRequest, "entities", p)
		return
	}
	if p.Query.ID == "" {
		p.Error = "Enter the " + p.Query.Entity + "'s id."
		c.render(w, http.StatusBadRequest, "entities", p)
		return
	}
	q, err := chsink.ParseOrdersQuery(p.Query.Entity, p.Query.ID, r.URL.Query(), c.cfg.Now())
	if err != nil {
		p.Error = strings.TrimPrefix(err.Error(), chsink.ErrBadQuery.Error()+": ")
		c.render(w, http.StatusBadRequest, "entities", p)
		return
	}
	page, err := chsink.ListOrders(r.Context(), c.cfg.ClickHouse, q)
	switch {
	case errors.Is(err, chsink.ErrBadQuery):
		p.Error = strings.TrimPrefix(err.Error(), chsink.ErrBadQuery.Error()+": ")
		c.render(w, http.StatusBadRequest, "entities", p)
		return
	case err != nil:
		c.fail(w, s, http.StatusServiceUnavailable, "ClickHouse did not answer; retry in a moment", err)
		return
	}
	p.Page, p.Searched = page, true
	if page.NextCursor != "" {
		v := p.Query.values()
		v.Set("cursor", page.NextCursor)
		p.NextURL = Prefix + "/entities?" + v.Encode()
	}
	c.render(w, http.StatusOK, "entities", p)
}
