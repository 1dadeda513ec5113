-- Example queries for analysts (clickhouse-client --database orderflow).
-- Rows are versioned: always read an order's newest row with argMax(col, version),
-- and count events with FINAL or uniqExact(wal_seq), never a raw count().
-- TestQueries runs every statement of this file against ClickHouse 18.16.

-- Orders of a restaurant delivered between two times.
SELECT order_id, created_at, delivered_at, dasher_id
FROM
(
    SELECT order_id, any(created_at) AS created_at,
        argMax(status, version) AS st, argMax(active, version) AS live,
        argMax(delivered_at, version) AS delivered_at, argMax(dasher_id, version) AS dasher_id
    FROM orders_by_restaurant
    WHERE restaurant_id = 'res-0001'
    GROUP BY order_id
)
WHERE live = 1 AND st = 'delivered'
    AND delivered_at >= toDateTime('2026-01-05 00:00:00') AND delivered_at < toDateTime('2026-01-06 00:00:00')
ORDER BY delivered_at;

-- Cancellations per hour over the last day (WAL time).
SELECT toStartOfHour(stored_at) AS hour, uniqExact(order_id) AS cancellations
FROM order_events
WHERE has(milestones, 'cancelled') AND stored_at >= now() - INTERVAL 1 DAY
GROUP BY hour
ORDER BY hour;

-- Orders entering each status per hour (predictions excluded).
SELECT toStartOfHour(stored_at) AS hour, transition AS status, uniqExact(order_id) AS orders
FROM order_events
WHERE transition != '' AND stored_at >= now() - INTERVAL 1 DAY
GROUP BY hour, status
ORDER BY hour, status;

-- Time from pickup to delivery per restaurant, in seconds (producer clocks).
SELECT restaurant, count() AS orders,
    quantileExact(0.5)(d) AS p50_s, quantileExact(0.9)(d) AS p90_s, round(avg(d)) AS avg_s
FROM
(
    SELECT argMax(restaurant_id, version) AS restaurant, argMax(status, version) AS st,
        argMax(picked_up_at, version) AS pickup, argMax(delivered_at, version) AS delivery,
        toInt64(delivery) - toInt64(pickup) AS d
    FROM orders
    GROUP BY order_id
)
WHERE st = 'delivered' AND pickup > toDateTime(0) AND d >= 0
GROUP BY restaurant
ORDER BY p50_s DESC
LIMIT 20;

-- Every order of a customer, newest first, 50 per page. For the next page, add the
-- last row's created_at and order_id as the commented condition shows.
SELECT order_id, created_at, argMax(status, version) AS st, argMax(restaurant_id, version) AS restaurant
FROM orders_by_customer
WHERE customer_id = 'cus-000001'
    -- AND (created_at < toDateTime('2026-01-05 12:00:00') OR (created_at = toDateTime('2026-01-05 12:00:00') AND order_id < 's1-0042'))
GROUP BY order_id, created_at
HAVING argMax(active, version) = 1
ORDER BY created_at DESC, order_id DESC
LIMIT 50;

-- Orders of a dasher in the last two hours, with their current status.
SELECT order_id, created_at, argMax(status, version) AS st
FROM orders_by_dasher
WHERE dasher_id = 'dsh-00001' AND created_at >= now() - INTERVAL 2 HOUR
GROUP BY order_id, created_at
HAVING argMax(active, version) = 1
ORDER BY created_at DESC, order_id DESC;

-- Current orders by status.
SELECT st, count() AS orders
FROM (SELECT argMax(status, version) AS st FROM orders GROUP BY order_id)
GROUP BY st
ORDER BY orders DESC;

-- One order's events with the decision each got (as GET /v1/orders/{id}/timeline).
SELECT wal_seq, stored_at, source, source_seq, status, decision, reason, order_status
FROM order_events FINAL
WHERE order_id = 's41-1'
ORDER BY wal_seq;

-- Events set aside (the DLQ), per day and reason.
SELECT toDate(stored_at) AS day, reason, count() AS events
FROM order_events FINAL
WHERE decision = 'rejected'
GROUP BY day, reason
ORDER BY day, reason;
