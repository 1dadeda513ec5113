package verify

import (
	"context"
	"fmt"
	"sort"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/orderflow/orderflow/handlers/resolver"
)

// RowDifference is one order whose ClickHouse rows disagree with the WAL.
type RowDifference struct {
	OrderID string `json:"order_id"`
	What    string `json:"what"`
}

func (d RowDifference) String() string { return fmt.Sprintf("order %s: %s", d.OrderID, d.What) }

// CheckClickHouse compares ClickHouse with the WAL, folded once by the caller
// (FoldWAL): want is every order's recomputed state and events its count of valid
// WAL events. Every order's newest `orders` row must carry the recomputed status,
// source, prediction flag and ids, and `order_events` must hold exactly the order's
// valid WAL events (rows of events the DLQ took carry no event id and are not
// counted). Orders the sink has not reached yet are reported too: run it when the
// sink has caught up.
func CheckClickHouse(ctx context.Context, conn driver.Conn, want map[string]*resolver.State, events map[string]uint64) ([]RowDifference, error) {
	type row struct {
		status, source, customer, restaurant, dasher string
		predicted                                    uint8
	}
	got := map[string]row{}
	rows, err := conn.Query(ctx, `SELECT order_id, argMax(status, version), argMax(status_source, version), argMax(predicted, version),
		argMax(customer_id, version), argMax(restaurant_id, version), argMax(dasher_id, version) FROM orders GROUP BY order_id`)
	if err != nil {
		return nil, fmt.Errorf("read orders: %w", err)
	}
	for rows.Next() {
		var id string
		var r row
		if err := rows.Scan(&id, &r.status, &r.source, &r.predicted, &r.customer, &r.restaurant, &r.dasher); err != nil {
			rows.Close()
			return nil, err
		}
		got[id] = r
	}
	rows.Close()
	counts := map[string]uint64{}
	rows, err = conn.Query(ctx, `SELECT order_id, uniqExactIf(wal_seq, event_id != '') FROM order_events GROUP BY order_id`)
	if err != nil {
		return nil, fmt.Errorf("read order_events: %w", err)
	}
	for rows.Next() {
		var id string
		var n uint64
		if err := rows.Scan(&id, &n); err != nil {
			rows.Close()
			return nil, err
		}
		counts[id] = n
	}
	rows.Close()

	var diffs []RowDifference
	for id, v := range Views(want) {
		g, ok := got[id]
		switch {
		case !ok:
			diffs = append(diffs, RowDifference{id, "no row in orders"})
		case g.status != string(v.Status) || g.source != string(v.StatusSource) || (g.predicted == 1) != v.Predicted ||
			g.customer != v.CustomerID || g.restaurant != v.RestaurantID || g.dasher != v.DasherID:
			diffs = append(diffs, RowDifference{id, fmt.Sprintf("orders row says %s/%s predicted=%d, the WAL %s/%s predicted=%v",
				g.status, g.source, g.predicted, v.Status, v.StatusSource, v.Predicted)})
		}
	}
	for id, n := range events {
		if counts[id] != n {
			diffs = append(diffs, RowDifference{id, fmt.Sprintf("order_events holds %d events, the WAL %d", counts[id], n)})
		}
	}
	sort.Slice(diffs, func(i, j int) bool { return diffs[i].OrderID < diffs[j].OrderID })
	return diffs, nil
}
