package fold

import "time"

// Record is one stored WAL message.
type Record struct {
	Seq     uint64
	Subject string // the stored subject, orders.wal.<partition>.<source>.<order_id>
	Data    []byte
	// Header holds the stored headers (a nats.Header is assignable to it). Nil on
	// the lanes' hot path unless a header must be rejected.
	Header map[string][]string
	Time   time.Time // when JetStream stored it
}
