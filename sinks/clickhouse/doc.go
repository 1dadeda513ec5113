// Package clickhouse owns orderflow's ClickHouse projection: the schema and its
// versioned migrations, the sink that keeps it current from the WAL, and the
// analyst queries (orders per customer, restaurant or dasher; status counts;
// pickup-to-delivery durations) that the CLI and the HTTP API serve.
//
// # Tables
//
//	order_events          one row per WAL message with its timeline decision
//	                      ReplacingMergeTree, ORDER BY (stored_at, wal_seq)
//	orders                each order's state, one row per batch that touched it
//	                      ReplacingMergeTree(version), ORDER BY order_id
//	orders_by_customer    the same rows keyed by entity for keyset pages, plus
//	orders_by_restaurant  active (0: a tombstone, the order moved to another id)
//	orders_by_dasher      ReplacingMergeTree(version), ORDER BY (<entity>_id, created_at, order_id)
//
// testdata/schema-*.sql holds the exact DDL per server generation. version is the
// order's wal_seq; created_at is when JetStream stored the order's first event, so it
// never changes (it is the partition and sort key). Times are DateTime (UTC seconds):
// 18.16 has no DateTime64, and "none" is 1970-01-01 00:00:00 because argMax over
// Nullable is unreliable there. Queries that must be exact read the newest row per
// key with argMax(col, version) (or FINAL, or uniqExact over the key), never a raw
// count: a replacing table may hold duplicates until a merge.
//
// # Decisions match the timeline
//
// The sink consumes the whole WAL in stream order through one durable consumer
// (sink-clickhouse, filter orders.wal.>, AckAll, pinned priority group "sink" so one
// instance feeds ClickHouse and another takes over when it goes silent). It folds
// each order's events with the pure resolver in WAL order, exactly as the HTTP
// timeline does, so every event's decision and reason equal the timeline's. Events
// that Classify rejects (they are in the DLQ) get decision "rejected" and the DLQ
// reason and detail; their order_id and source are the subject's tokens as the
// producer sent them, valid or not, so per-order counts match the WAL exactly.
//
// Order states live in a bounded cache (Config.CacheSize, terminal orders evicted
// first). On a miss the order is rebuilt by folding its earlier WAL events
// (wal.Log.ReadOrder up to seq-1); misses of one delivery chunk are rebuilt
// concurrently. A sink that has read the WAL from its first stored event needs no
// lookup for an order it never evicted (a small Bloom filter remembers evictions).
//
// The archive purges completed orders from the WAL, but never past the sink's ack
// floor, so the sink sees every event. A late event of an order purged earlier is
// folded without the purged history unless the sink was given a reader that
// yields archived events too (Sink.WithHistory; serve gives it the archiver's
// ReadOrder whenever both run).
//
// Ordering is guarded on both sides: a redelivered event (stream sequence at or
// below the last one folded) is skipped; a hole in the consumer's delivery
// sequence (a lost delivery after a reconnect, or another instance held the pin) is
// filled by reading the missing range from the WAL itself; at start, events an
// earlier run received but never acked are read from the WAL at once instead of
// waiting AckWait for their redelivery; a delivery sequence going backwards means
// the consumer was recreated (ResetConsumer, a replay) and the sink starts over
// from its new position with an empty cache.
//
// # Never lost, never double-counted
//
// Events are batched (Config.BatchSize events or Config.BatchWait after the first,
// whichever comes first; a batch of a quarter of BatchSize or more is written as
// soon as the sink has caught up with the WAL). A batch is written to the five tables concurrently; a
// table whose insert fails is rebuilt from the batch's columns (a clickhouse-go
// batch whose Send failed cannot be re-sent) and retried with exponential backoff
// until ClickHouse confirms it, forever. Only then is the batch acked: AckAll on its
// newest delivered message (one ack per batch). While a batch is retried the
// reader fills the next one and then waits: back-pressure, with memory bounded by
// two batches plus the client buffer and MaxAckPending; when ClickHouse returns the
// sink catches up at full speed. A crash or stop loses only unacked batches, which
// the next run reads again.
//
// Writing a batch twice (a retry after a timeout that had in fact succeeded, a
// redelivery, a replay) is harmless because every row is a deterministic function
// of the WAL: order_events rows are keyed by (stored_at, wal_seq) and identical on
// every write; orders and index rows are keyed by order (and entity) and versioned
// by wal_seq. On servers with insert_deduplication_token (22.2+, detected from
// version()) each insert also carries the token "orderflow:<table>:<first>-<last>"
// and migration 0002 gives the tables a non-replicated deduplication window, so a
// retried batch is dropped on arrival instead of at the next merge. The token is
// safe because a batch's rows depend only on its WAL range.
//
// An order that moves to another entity id (an agent reassigns the dasher) gets,
// in the same batch, an active row under the new id and a tombstone (active = 0,
// higher version) replacing its row under the old one.
//
// # Migrations
//
// Migrate applies, in order, each migration of Migrations that the server can take
// and orderflow_schema_migrations does not record. Statements are idempotent (IF
// NOT EXISTS), so instances may race. A migration that needs a newer server is
// skipped and applied by the first Migrate after an upgrade. The DDL avoids what
// 18.16 lacks: DateTime64, LowCardinality, Nullable aggregates, INSERT ... VALUES
// through the native query path (18.16 waits for a data block; migrations insert
// with INSERT ... SELECT).
//
// # On a cluster
//
// With a Layout's Cluster set (Config.Cluster, --clickhouse-cluster), migrations run
// ON CLUSTER: each table becomes <name>_local with the Replicated variant of its
// engine ({shard}/{replica} macros in the ZooKeeper path) and a Distributed table
// under the public name, so every query reads the public names unchanged. The sink
// inserts into the local tables of its server: a replicated insert is confirmed once
// that server stored it, while a Distributed insert is only queued there. That is
// one shard of any number of replicas; the README ("ClickHouse on a cluster") lists
// what 18.16 takes and refuses.
//
// # Metrics
//
//	orderflow_sink_clickhouse_rows_total{table}            rows confirmed
//	orderflow_sink_clickhouse_events_total                 WAL events confirmed
//	orderflow_sink_clickhouse_batch_duration_seconds       batch write time, retries included
//	orderflow_sink_clickhouse_batch_failures_total         failed insert attempts
//	orderflow_sink_clickhouse_event_lag_seconds            per event: JetStream store to ClickHouse confirm
//	orderflow_sink_clickhouse_lag_events                   undelivered + unconfirmed events
//	orderflow_sink_clickhouse_lag_seconds                  age of the oldest unconfirmed event read, 0 when caught up
package clickhouse
