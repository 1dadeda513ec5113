package clickhouse

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/orderflow/orderflow/schemas"
)

// ErrBadQuery marks an OrdersQuery (or stats range) that cannot be answered as
// asked: HTTP maps it to 400, the CLI to a usage error.
var ErrBadQuery = errors.New("bad query")

// Query limits.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// OrdersQuery selects orders, newest first. Since and Until filter created_at
// (when JetStream stored the order's first event) as since <= created_at < until;
// created_at has whole seconds, so both bounds round up to the next whole second.
// Status filters the current status. Zero values mean unbounded / any.
type OrdersQuery struct {
	// Entity is customer, restaurant or dasher; "" lists all orders (a table scan:
	// fine for analysts, not for a hot path).
	Entity string
	ID     string // the entity id, required with Entity
	Status string
	Since  time.Time
	Until  time.Time
	Limit  int // default DefaultLimit, at most MaxLimit
	// Cursor is NextCursor of the previous page.
	Cursor string
}

// OrderRow is one order's current state as ClickHouse holds it.
type OrderRow struct {
	OrderID      string     `json:"order_id"`
	Status       string     `json:"status"`
	StatusSource string     `json:"status_source,omitempty"`
	Predicted    bool       `json:"predicted"`
	CustomerID   string     `json:"customer_id,omitempty"`
	RestaurantID string     `json:"restaurant_id,omitempty"`
	DasherID     string     `json:"dasher_id,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    *time.Time `json:"updated_at,omitempty"`
	LastEventAt  time.Time  `json:"last_event_at"`
	ETA          *time.Time `json:"eta,omitempty"`
	PickedUpAt   *time.Time `json:"picked_up_at,omitempty"`
	DeliveredAt  *time.Time `json:"delivered_at,omitempty"`
	CancelledAt  *time.Time `json:"cancelled_at,omitempty"`
	WalSeq       uint64     `json:"wal_seq"`
	Events       uint32     `json:"events"`
}

// OrdersPage is one page of ListOrders. NextCursor is "" on the last page.
type OrdersPage struct {
	Orders     []OrderRow `json:"orders"`
	NextCursor string     `json:"next_cursor,omitempty"`
}

// Validate checks q and fills defaults.
func (q *OrdersQuery) Validate() error {
	var errs []string
	if q.Entity != "" {
		if _, ok := entityTables[q.Entity]; !ok {
			errs = append(errs, fmt.Sprintf("entity must be customer, restaurant or dasher, got %q", q.Entity))
		}
		if !validEntityID(q.ID) {
			errs = append(errs, "entity id must be 1..64 characters without control characters")
		}
	} else if q.ID != "" {
		errs = append(errs, "an id needs an entity (customer, restaurant or dasher)")
	}
	if q.Status != "" && !schemas.Status(q.Status).Valid() {
		errs = append(errs, fmt.Sprintf("unknown status %q", q.Status))
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Until.After(q.Since) {
		errs = append(errs, "until must be after since")
	}
	if q.Limit == 0 {
		q.Limit = DefaultLimit
	}
	if q.Limit < 1 || q.Limit > MaxLimit {
		errs = append(errs, fmt.Sprintf("limit must be 1..%d, got %d", MaxLimit, q.Limit))
	}
	if q.Cursor != "" {
		if _, _, err := decodeCursor(q.Cursor); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrBadQuery, strings.Join(errs, "; "))
	}
	return nil
}

func validEntityID(id string) bool {
	if len(id) < 1 || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// The cursor is the last row's (created_at, order_id), opaque to callers.
func encodeCursor(created time.Time, orderID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(created.Unix(), 10) + ":" + orderID))
}

func decodeCursor(c string) (int64, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", errors.New("malformed cursor")
	}
	ts, id, ok := strings.Cut(string(raw), ":")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || sec < 0 || sec > math.MaxUint32 || id == "" {
		return 0, "", errors.New("malformed cursor")
	}
	return sec, id, nil
}

// ceilSeconds rounds t up to a whole second, as Unix seconds.
func ceilSeconds(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return max(s, 0)
}

// latestColumns picks each order's newest row (highest version). argMax instead of
// FINAL: exact on every release, before and after merges.
const latestColumns = `order_id, created_at,
	argMax(status, version) AS cur_status,
	argMax(status_source, version) AS cur_status_source,
	argMax(predicted, version) AS cur_predicted,
	argMax(customer_id, version) AS cur_customer_id,
	argMax(restaurant_id, version) AS cur_restaurant_id,
	argMax(dasher_id, version) AS cur_dasher_id,
	argMax(updated_at, version) AS cur_updated_at,
	argMax(last_event_at, version) AS cur_last_event_at,
	argMax(eta, version) AS cur_eta,
	argMax(picked_up_at, version) AS cur_picked_up_at,
	argMax(delivered_at, version) AS cur_delivered_at,
	argMax(cancelled_at, version) AS cur_cancelled_at,
	max(version) AS cur_version,
	argMax(events, version) AS cur_events`

// ListOrders returns one page of orders, newest created first, ties by order id
// descending. Pages follow each other by keyset (the cursor), so an order appears
// on exactly one page however the data changes between pages; its status may
// change meanwhile, which the status filter then sees.
func ListOrders(ctx context.Context, conn driver.Conn, q OrdersQuery) (OrdersPage, error) {
	if err := q.Validate(); err != nil {
		return OrdersPage{}, err
	}
	table, active := TableOrders, ""
	var where []string
	var args []any
	if q.Entity != "" {
		t := entityTables[q.Entity]
		table, active = t.table, ", argMax(active, version) AS cur_active"
		where = append(where, t.key+" = ?")
		args = append(args, q.ID)
	}
	if !q.Since.IsZero() {
		where = append(where, "created_at >= toDateTime(?)")
		args = append(args, ceilSeconds(q.Since))
	}
	if !q.Until.IsZero() {
		where = append(where, "created_at < toDateTime(?)")
		args = append(args, ceilSeconds(q.Until))
	}
	if q.Cursor != "" {
		sec, id, _ := decodeCursor(q.Cursor)
		where = append(where, "(created_at < toDateTime(?) OR (created_at = toDateTime(?) AND order_id < ?))")
		args = append(args, sec, sec, id)
	}
	having := []string{"cur_status != ''"}
	if active != "" {
		having = append(having, "cur_active = 1")
	}
	if q.Status != "" {
		having = append(having, "cur_status = ?")
		args = append(args, q.Status)
	}
	sql := "SELECT " + latestColumns + active + "\nFROM " + table
	if len(where) > 0 {
		sql += "\nWHERE " + strings.Join(where, " AND ")
	}
	sql += "\nGROUP BY order_id, created_at\nHAVING " + strings.Join(having, " AND ") +
		"\nORDER BY created_at DESC, order_id DESC\nLIMIT " + strconv.Itoa(q.Limit+1)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return OrdersPage{}, fmt.Errorf("list orders: %w", err)
	}
	defer rows.Close()
	page := OrdersPage{Orders: []OrderRow{}}
	for rows.Next() {
		var r OrderRow
		var predicted, activeFlag uint8
		var updated, eta, picked, delivered, cancelled time.Time
		dest := []any{&r.OrderID, &r.CreatedAt, &r.Status, &r.StatusSource, &predicted, &r.CustomerID, &r.RestaurantID,
			&r.DasherID, &updated, &r.LastEventAt, &eta, &picked, &delivered, &cancelled, &r.WalSeq, &r.Events}
		if active != "" {
			dest = append(dest, &activeFlag)
		}
		if err := rows.Scan(dest...); err != nil {
			return OrdersPage{}, fmt.Errorf("list orders: %w", err)
		}
		r.Predicted = predicted == 1
		r.CreatedAt, r.LastEventAt = r.CreatedAt.UTC(), r.LastEventAt.UTC()
		r.UpdatedAt, r.ETA = optionalTime(updated), optionalTime(eta)
		r.PickedUpAt, r.DeliveredAt, r.CancelledAt = optionalTime(picked), optionalTime(delivered), optionalTime(cancelled)
		page.Orders = append(page.Orders, r)
	}
	if err := rows.Err(); err != nil {
		return OrdersPage{}, fmt.Errorf("list orders: %w", err)
	}
	if len(page.Orders) > q.Limit {
		page.Orders = page.Orders[:q.Limit]
		last := page.Orders[q.Limit-1]
		page.NextCursor = encodeCursor(last.CreatedAt, last.OrderID)
	}
	return page, nil
}

func optionalTime(t time.Time) *time.Time {
	if t.Unix() <= 0 {
		return nil
	}
	u := t.UTC()
	return &u
}

// StatusCount is how many orders entered a status within one time bucket.
type StatusCount struct {
	Bucket time.Time `json:"bucket"`
	Status string    `json:"status"`
	Orders uint64    `json:"orders"`
}

// StatusCounts counts, per bucket of WAL time and per status, the orders that
// entered that status (authoritatively: predictions are not counted; an order
// counts once per bucket and status). since <= stored_at < until; buckets are
// aligned to the Unix epoch (UTC) and at least one second long.
func StatusCounts(ctx context.Context, conn driver.Conn, since, until time.Time, bucket time.Duration) ([]StatusCount, error) {
	if bucket < time.Second {
		return nil, fmt.Errorf("%w: bucket must be at least 1s, got %s", ErrBadQuery, bucket)
	}
	if err := checkRange(since, until); err != nil {
		return nil, err
	}
	n := int64(bucket / time.Second)
	sql := fmt.Sprintf(`SELECT toDateTime(intDiv(toUInt32(stored_at), %[1]d) * %[1]d) AS bucket, transition, uniqExact(order_id) AS orders
FROM %[2]s
WHERE transition != '' AND stored_at >= toDateTime(?) AND stored_at < toDateTime(?)
GROUP BY bucket, transition
ORDER BY bucket, transition`, n, TableEvents)
	rows, err := conn.Query(ctx, sql, ceilSeconds(since), ceilSeconds(until))
	if err != nil {
		return nil, fmt.Errorf("status counts: %w", err)
	}
	defer rows.Close()
	out := []StatusCount{}
	for rows.Next() {
		var c StatusCount
		if err := rows.Scan(&c.Bucket, &c.Status, &c.Orders); err != nil {
			return nil, fmt.Errorf("status counts: %w", err)
		}
		c.Bucket = c.Bucket.UTC()
		out = append(out, c)
	}
	return out, rows.Err()
}

func checkRange(since, until time.Time) error {
	if since.IsZero() || until.IsZero() || !until.After(since) {
		return fmt.Errorf("%w: need since < until, got %s and %s", ErrBadQuery, since.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	return nil
}

// DeliveryDurations summarises, for one restaurant, the time from pickup to
// delivery of its orders delivered in the range.
type DeliveryDurations struct {
	RestaurantID string        `json:"restaurant_id"`
	Orders       uint64        `json:"orders"`
	P50          time.Duration `json:"p50"`
	P90          time.Duration `json:"p90"`
	Avg          time.Duration `json:"avg"`
}

// PickupToDelivery reports pickup-to-delivery durations per restaurant over orders
// whose current status is delivered and whose delivered_at is in [since, until).
// Both times are the producers' occurred_at of the events that first reached the
// milestones (the driver's clock for both, normally), at second precision; orders
// missing a pickup time, or with delivery before pickup, are left out.
// Quantiles are exact: the value at rank floor(q*n) of the sorted durations.
func PickupToDelivery(ctx context.Context, conn driver.Conn, since, until time.Time) ([]DeliveryDurations, error) {
	if err := checkRange(since, until); err != nil {
		return nil, err
	}
	sql := `SELECT restaurant, count() AS orders,
	quantileExact(0.5)(d) AS p50, quantileExact(0.9)(d) AS p90, avg(d) AS mean
FROM (
	SELECT argMax(restaurant_id, version) AS restaurant, argMax(status, version) AS st,
		toInt64(argMax(picked_up_at, version)) AS p, toInt64(argMax(delivered_at, version)) AS dl, dl - p AS d
	FROM ` + TableOrders + `
	GROUP BY order_id
)
WHERE st = 'delivered' AND p > 0 AND dl >= p AND dl >= ? AND dl < ?
GROUP BY restaurant
ORDER BY restaurant`
	rows, err := conn.Query(ctx, sql, ceilSeconds(since), ceilSeconds(until))
	if err != nil {
		return nil, fmt.Errorf("pickup to delivery: %w", err)
	}
	defer rows.Close()
	out := []DeliveryDurations{}
	for rows.Next() {
		var d DeliveryDurations
		var p50, p90 int64
		var avg float64
		if err := rows.Scan(&d.RestaurantID, &d.Orders, &p50, &p90, &avg); err != nil {
			return nil, fmt.Errorf("pickup to delivery: %w", err)
		}
		d.P50, d.P90 = time.Duration(p50)*time.Second, time.Duration(p90)*time.Second
		d.Avg = time.Duration(avg * float64(time.Second))
		out = append(out, d)
	}
	return out, rows.Err()
}

// ParseTime reads a time bound as the CLI and the HTTP API take it: RFC 3339
// ("2026-01-05T12:00:00Z"), Unix seconds ("1767614400"), or a Go duration meaning
// that long before now ("2h", "90m").
func ParseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if sec, err := strconv.ParseInt(s, 10, 64); err == nil && sec >= 0 {
		return time.Unix(sec, 0).UTC(), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%w: time %q: want RFC 3339, Unix seconds or a duration before now (2h)", ErrBadQuery, s)
}

// ParseOrdersQuery reads GET /v1/{customers|restaurants|dashers}/{id}/orders: entity
// is the path's collection (plural or singular), v its query parameters since,
// until, status, limit and cursor. The result is validated.
func ParseOrdersQuery(entity, id string, v url.Values, now time.Time) (OrdersQuery, error) {
	q := OrdersQuery{Entity: strings.TrimSuffix(entity, "s"), ID: id, Status: v.Get("status"), Cursor: v.Get("cursor")}
	var err error
	if s := v.Get("since"); s != "" {
		if q.Since, err = ParseTime(s, now); err != nil {
			return q, err
		}
	}
	if s := v.Get("until"); s != "" {
		if q.Until, err = ParseTime(s, now); err != nil {
			return q, err
		}
	}
	if s := v.Get("limit"); s != "" {
		if q.Limit, err = strconv.Atoi(s); err != nil || q.Limit == 0 {
			return q, fmt.Errorf("%w: limit %q: want 1..%d", ErrBadQuery, s, MaxLimit)
		}
	}
	return q, q.Validate()
}
