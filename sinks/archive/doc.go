// Package archive owns the archive of finished orders: orders that have been terminal
// (delivered or cancelled) for longer than a configured age are written as Parquet
// files, their WAL events are purged from ORDER_EVENTS and their snapshots removed
// from KV order_status; reads of archived orders are then answered from the files.
//
// # Layout
//
// A Store (a local directory by default, see DirStore) holds, per batch and per UTC
// day on which the order became terminal (by WAL time):
//
//	events/day=YYYY-MM-DD/<batch>.parquet   one row per WAL event, raw body included
//	orders/day=YYYY-MM-DD/<batch>.parquet   one row per order: its final view
//
// (Hive-style day= directories, so DuckDB, ClickHouse and Spark read them as a
// partitioned table.) KV bucket order_archive holds the index: "order.<id>" → where
// the order's events are; and one key "batch", the slot of the batch in progress.
//
// # Exactly once
//
// A batch goes through the slot, one at a time, in states the slot records:
//
//  1. open: an archiver created the slot (kv.Create, so only one can) and, holding
//     it, checks each candidate against the index. Nobody else writes the index
//     while the slot is held, so the check cannot go stale.
//  2. writing: the slot lists each order with its WAL range (after, upto]. From
//     here anyone may finish the batch, and everything that follows is idempotent:
//     files are built from that list alone (the WAL range, untouched until step 4,
//     and earlier archive parts, which never change) and stored create-only (Put
//     fails with ErrExists, and an existing file is complete: Put is atomic).
//  3. Each order's index entry gets the part (compare-and-set; a part already there
//     for this batch is left alone); then the slot becomes committed.
//  4. committed: the WAL of each order is purged up to upto only (a late event has a
//     higher sequence and stays), its snapshot is removed if it has folded nothing
//     after upto, and the slot is deleted.
//
// Every run first finishes a slot it finds. So a crash between the files and the
// index (state writing) redoes the index from the same list and the same files: an
// order is indexed once, in the file that holds it, and no second batch can take it
// meanwhile because the slot is held. A crash between the index and the purge (state
// committed) redoes the purge, which is bounded by the archived sequence. Nothing is
// purged before its file is durable and indexed, and an event is purged only after
// every consumer of the WAL has made it durable (lane checkpoints, ack floors of the
// other durable consumers such as the ClickHouse sink), so a pending milestone or an
// unsunk event is never taken from under the pipeline.
//
// Two archivers (two serve instances) are safe: the slot serialises new batches,
// and finishing someone else's batch is the idempotent roll-forward above. An open
// slot older than Config.OpenTimeout is taken to be abandoned and deleted (with a
// revision check, so a slot that moved on is not).
//
// # Late events
//
// An event for an archived order that reaches the WAL after the archive decision is
// not purged (the purge stops at the archived sequence) and is not in the archive.
// The pipeline then starts a fresh state for the order, as it does for any order
// whose history has left the WAL. The archive keeps the whole history: once the
// order's newest event is again older than MinAge and it is terminal judged on
// archive plus WAL, the leftover events are archived as a further part of the same
// index entry, with decisions and the final view folded over the full history.
// A reader that wants the full-history answer while late events are still in the
// WAL reads it through ReadOrder: archived events, then the WAL's.
//
// # Costs
//
// Finding candidates folds, partition by partition with the resolver (one
// ordered-consumer pass, memory for one partition's orders), only the part of the
// WAL stored before now - MinAge, stopping after the partition that fills a batch,
// and checks each candidate's newest event with one direct get. Once archiving
// keeps up, that part holds little beyond orders still open after MinAge, so a run
// costs what is old, not what is live. Building a batch reads each order with direct gets. Lookup reads the
// whole events file of each part (a batch of BatchOrders orders) and keeps its rows.
//
// # S3
//
// S3Store keeps the files in an S3-compatible bucket (Config.Location
// "s3://bucket/prefix?endpoint=host:port"): Put is a PUT with "If-None-Match: *"
// (create-only, durable once acknowledged), Get a GET, List ListObjectsV2 with a
// prefix. Every instance of a cluster must archive to the same store, which a bucket
// gives without a shared file system. DirStore is the default.
package archive
