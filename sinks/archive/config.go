package archive

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Failpoints: a crash at each of these must lose nothing and archive nothing twice.
// ORDERFLOW_FAILPOINT arms them in a real process (serve wires handlers.Failpoints
// into Config.Failpoint); tests set Config.Failpoint.
const (
	// FailAfterFiles: the batch's files are durable, the index does not name them.
	FailAfterFiles = "archive-after-files"
	// FailAfterIndex: files and index are durable, nothing is purged.
	FailAfterIndex = "archive-after-index"
	// FailAfterPurge: WAL and snapshots are purged, the batch slot is not released.
	FailAfterPurge = "archive-after-purge"
)

// DefaultMinAge is how long the commands wait, by default, before archiving a
// finished order.
const DefaultMinAge = 7 * 24 * time.Hour

// Config tunes the archiver. Zero values take the defaults of SetDefaults.
type Config struct {
	// Location names the store the Parquet files go to: a local directory, or
	// s3://bucket/prefix for S3-compatible storage (see ParseS3URL, OpenStore).
	Location string
	// MinAge is how long an order must have been finished before it is archived,
	// measured from the WAL time of its newest event (producers' clocks are never
	// trusted). No default: 0 archives terminal orders as soon as every WAL consumer
	// has made them durable.
	MinAge time.Duration
	// BatchOrders bounds the orders of one batch (the slot lists them in one KV
	// value, so keep it well under the server's max payload). Default 1000.
	BatchOrders int
	// Interval is the pause between runs of Run, and after a failed run. Default 1m.
	Interval time.Duration
	// MaxFailures is how many runs in a row may fail before Run gives up and
	// returns the last error: an archive that keeps failing no longer purges the
	// WAL, which then grows until the disk is full, so the caller must hear of it.
	// Default 10 (ten minutes at the default Interval); negative: Run never gives
	// up and logs every failed run at error.
	MaxFailures int
	// OpenTimeout is how long a batch slot may stay open (its owner checking
	// candidates, which takes a few KV reads) before another archiver deletes it as
	// abandoned. Default 2m.
	OpenTimeout time.Duration
	// MarkerTTL is how long KV order_status keeps the purge marker left where an
	// archived order's snapshot was. Default 1h.
	MarkerTTL time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Failpoint, for tests, is called at each Fail* step; an error stops the run
	// there, as a crash would.
	Failpoint func(step string) error
}

// SetDefaults fills unset fields.
func (c *Config) SetDefaults() {
	if c.BatchOrders == 0 {
		c.BatchOrders = 1000
	}
	if c.Interval == 0 {
		c.Interval = time.Minute
	}
	if c.MaxFailures == 0 {
		c.MaxFailures = 10
	}
	if c.OpenTimeout == 0 {
		c.OpenTimeout = 2 * time.Minute
	}
	if c.MarkerTTL == 0 {
		c.MarkerTTL = time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.Location == "" {
		errs = append(errs, errors.New("archive needs a Location"))
	}
	if c.MinAge < 0 {
		errs = append(errs, fmt.Errorf("min age must be >= 0, got %s", c.MinAge))
	}
	if c.BatchOrders < 1 || c.BatchOrders > 5000 {
		errs = append(errs, fmt.Errorf("batch orders must be 1..5000, got %d", c.BatchOrders))
	}
	if c.Interval < time.Second {
		errs = append(errs, fmt.Errorf("interval must be at least 1s, got %s", c.Interval))
	}
	if c.OpenTimeout < time.Second {
		errs = append(errs, fmt.Errorf("open timeout must be at least 1s, got %s", c.OpenTimeout))
	}
	if c.MarkerTTL < time.Second {
		errs = append(errs, fmt.Errorf("marker TTL must be at least 1s, got %s", c.MarkerTTL))
	}
	return errors.Join(errs...)
}
