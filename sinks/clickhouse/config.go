package clickhouse

import (
	"errors"
	"fmt"
	"time"
)

// DefaultConsumer is the durable consumer name of the sink on ORDER_EVENTS.
const DefaultConsumer = "sink-clickhouse"

// ConsumerGroup is the priority group of the sink's consumer: its pinned client is
// the one instance that feeds ClickHouse; another takes over when it goes silent.
const ConsumerGroup = "sink"

// Config tunes the sink. Zero values take the defaults of SetDefaults.
type Config struct {
	// DSN is the ClickHouse DSN (native protocol, clickhouse://host:9000/db). The
	// sink only uses it to create the database when the server says it is missing;
	// the connection itself is passed to NewSink.
	DSN string
	// Cluster, when set, is the ClickHouse cluster (remote_servers) the schema is
	// migrated on: replicated local tables under Distributed ones (see Layout). The
	// sink then inserts into the local tables of the server it is connected to.
	// Empty: one server.
	Cluster string
	// Consumer is the durable consumer name on ORDER_EVENTS. Default DefaultConsumer.
	Consumer string
	// BatchSize bounds the WAL events of one batch. Default 20000.
	BatchSize int
	// BatchWait bounds how long the first event of a batch waits for the batch to
	// fill before it is written anyway. Default 500ms. A batch of at least a quarter
	// of BatchSize is written as soon as the sink has caught up with the WAL.
	BatchWait time.Duration
	// RetryBackoff is the first pause after a failed insert; it doubles up to
	// RetryMaxBackoff. Defaults 100ms and 5s.
	RetryBackoff    time.Duration
	RetryMaxBackoff time.Duration
	// InsertTimeout bounds one insert attempt. Default 30s.
	InsertTimeout time.Duration
	// CacheSize bounds the orders whose resolver state is kept in memory. An evicted
	// order is rebuilt from the WAL when its next event arrives. Default 50000.
	CacheSize int
	// PullMaxMessages is how many messages the consumer buffers client-side. Default 4096.
	PullMaxMessages int
	// MaxAckPending is the consumer's limit of delivered, unacknowledged messages. It
	// must hold two batches plus the client buffer, or the sink cannot pipeline.
	// Default 4*BatchSize + PullMaxMessages.
	MaxAckPending int
	// AckWait is how long JetStream waits for an ack before it redelivers. Redeliveries
	// of events already in a batch are skipped, so a long outage costs only CPU.
	// Default 60s.
	AckWait time.Duration
	// PinnedTTL is how long a silent instance keeps the consumer before another
	// instance takes over. Default 10s.
	PinnedTTL time.Duration
	// ShutdownTimeout is how long Run keeps writing handed-off batches after its
	// context ends. Negative: stop at once (whatever was not acked is redelivered).
	// Default 5s.
	ShutdownTimeout time.Duration
	// Lookups bounds the concurrent WAL reads that rebuild orders missing from the
	// cache. Default 16.
	Lookups int
}

// SetDefaults fills unset fields.
func (c *Config) SetDefaults() {
	if c.Consumer == "" {
		c.Consumer = DefaultConsumer
	}
	if c.BatchSize == 0 {
		c.BatchSize = 20_000
	}
	if c.BatchWait == 0 {
		c.BatchWait = 500 * time.Millisecond
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 100 * time.Millisecond
	}
	if c.RetryMaxBackoff == 0 {
		c.RetryMaxBackoff = 5 * time.Second
	}
	if c.InsertTimeout == 0 {
		c.InsertTimeout = 30 * time.Second
	}
	if c.CacheSize == 0 {
		c.CacheSize = 50_000
	}
	if c.PullMaxMessages == 0 {
		c.PullMaxMessages = 4096
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 4*c.BatchSize + c.PullMaxMessages
	}
	if c.AckWait == 0 {
		c.AckWait = 60 * time.Second
	}
	if c.PinnedTTL == 0 {
		c.PinnedTTL = 10 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 5 * time.Second
	}
	if c.Lookups == 0 {
		c.Lookups = 16
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if err := c.layout().Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.BatchSize < 1 || c.BatchSize > 1_000_000 {
		errs = append(errs, fmt.Errorf("batch size must be 1..1000000, got %d", c.BatchSize))
	}
	if c.BatchWait < time.Millisecond {
		errs = append(errs, fmt.Errorf("batch wait must be at least 1ms, got %s", c.BatchWait))
	}
	if c.RetryBackoff <= 0 || c.RetryMaxBackoff < c.RetryBackoff {
		errs = append(errs, fmt.Errorf("retry backoff must be > 0 and <= max backoff, got %s and %s", c.RetryBackoff, c.RetryMaxBackoff))
	}
	if c.InsertTimeout < time.Second {
		errs = append(errs, fmt.Errorf("insert timeout must be at least 1s, got %s", c.InsertTimeout))
	}
	if c.CacheSize < 1 {
		errs = append(errs, fmt.Errorf("cache size must be >= 1, got %d", c.CacheSize))
	}
	if c.PullMaxMessages < 1 {
		errs = append(errs, fmt.Errorf("pull max messages must be >= 1, got %d", c.PullMaxMessages))
	}
	if c.MaxAckPending < 2*c.BatchSize+c.PullMaxMessages {
		errs = append(errs, fmt.Errorf("max ack pending must be >= 2*batch size + pull max messages (%d), got %d",
			2*c.BatchSize+c.PullMaxMessages, c.MaxAckPending))
	}
	if c.AckWait < time.Second {
		errs = append(errs, fmt.Errorf("ack wait must be at least 1s, got %s", c.AckWait))
	}
	if c.PinnedTTL < time.Second {
		errs = append(errs, fmt.Errorf("pinned TTL must be at least 1s, got %s", c.PinnedTTL))
	}
	if c.Lookups < 1 {
		errs = append(errs, fmt.Errorf("lookups must be >= 1, got %d", c.Lookups))
	}
	return errors.Join(errs...)
}

// layout is where the sink's tables live.
func (c Config) layout() Layout { return Layout{Cluster: c.Cluster} }
