// Package fold owns the one decision every reader of the WAL makes: what does this
// stored record do to its order? Classify turns a record into a valid event or a
// rejection (the DLQ's reason), Apply folds an event into a resolver.State without
// ever panicking, and Step does both and explains the result as a timeline entry.
// Catchup folds a run of stored records into order states as every reader that
// catches up does, and Rebuild folds again without an event the resolver panicked
// on, as the lanes set it aside.
//
// The status lanes, the read path, the API's watch, verify, the ClickHouse sink and
// the archive all call this package, so they cannot disagree about an event. It is
// pure: no NATS, no I/O.
package fold
