// Package simulate owns the synthetic workload: a seeded, pure (no I/O) generator of
// the order events real delivery platforms see — N orders moving through the
// lifecycle with duplicates, cross-source reordering, late estimator predictions,
// merchant/driver races, cancellations and agent corrections — plus optional
// invalid input for dead-letter tests.
//
// It feeds `orderflow simulate`, `orderflow bench` and the crash/fault tests, which
// all need the same thing: a workload that is realistic enough to exercise every
// resolution rule of DESIGN §3 and reproducible byte for byte from a seed, so a
// failing run can be replayed exactly.
package simulate

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"time"

	"github.com/orderflow/orderflow/schemas"
)

// Off disables a rate. A zero rate means "use the default", so that a Config with
// only Seed and Orders set is already a realistic workload; set a rate to Off (any
// negative value) to turn that kind of contention off entirely.
const Off = -1.0

// Defaults, chosen to resemble a busy city on a delivery platform.
const (
	DefaultOrders           = 1000
	DefaultDuplicateRate    = 0.03 // of events: producer retries that reach the broker twice
	DefaultReorderRate      = 0.20 // of orders: events arrive interleaved out of lifecycle order
	DefaultCancelRate       = 0.05 // of orders
	DefaultAgentRate        = 0.02 // of orders: a support agent corrects the status
	DefaultEstimatorRate    = 0.60 // of orders: the ETA service sends 1–4 predictions
	DefaultMissingReadyRate = 0.04 // of orders: merchant forgets ready_for_pickup or sends it late
	DefaultCustomers        = 2000
	DefaultRestaurants      = 150
	DefaultDashers          = 400
	DefaultInterleave       = 100
	DefaultReorderWindow    = 4
	DefaultMaxBodyBytes     = schemas.MaxEventBytes
)

// DefaultStart is the fixed base of occurred_at, so output never depends on the wall clock.
var DefaultStart = time.Date(2026, time.January, 5, 11, 30, 0, 0, time.UTC)

// maxOrderIDLen leaves room inside the 64-character event_id for
// "x<n>" (invalid-input orders), "-estimator-" and the source_seq.
const maxOrderIDLen = 40

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]*$`)

// Config describes a workload. Zero values take the defaults above (see Off).
// Rates of orders are per order; DuplicateRate and InvalidRate are per event.
type Config struct {
	// Seed makes the workload reproducible: the same Config gives byte-identical output.
	Seed int64
	// Orders is how many orders to simulate.
	Orders int
	// OrderIDPrefix starts every order_id. Default "s<Seed>-", so that workloads of
	// different seeds never share an event_id (they would collide in JetStream's
	// duplicate window) while re-running one seed is deduplicated as a replay should be.
	OrderIDPrefix string
	// Start is the base of occurred_at; default DefaultStart.
	Start time.Time

	DuplicateRate    float64 // fraction of events re-sent with the same event_id
	ReorderRate      float64 // fraction of orders whose events arrive out of lifecycle order
	CancelRate       float64 // fraction of orders cancelled (platform or merchant), some racing the pickup
	AgentRate        float64 // fraction of orders an agent corrects (driver offline, mistaken delivered)
	EstimatorRate    float64 // fraction of orders with estimator predictions and ETAs
	MissingReadyRate float64 // fraction of orders whose ready_for_pickup is never sent or sent after picked_up
	// InvalidRate is the fraction of events followed by one bad message (malformed
	// JSON, schema violation, source/subject mismatch, oversize body) for DLQ tests.
	// Default 0: unlike the other rates, zero means none.
	InvalidRate float64

	// Entity pools: customers, restaurants and dashers recur across orders, as the
	// per-entity queries expect.
	Customers, Restaurants, Dashers int
	// Interleave is how many orders are in flight at once, so events of different
	// orders interleave in publish order like live traffic. 1 publishes orders one by one.
	Interleave int
	// ReorderWindow bounds reordering: an event moves fewer than this many positions
	// within its order's stream.
	ReorderWindow int
	// MaxBodyBytes is the body limit oversize invalid messages exceed; default the
	// pipeline's own, schemas.MaxEventBytes.
	MaxBodyBytes int
}

func (c *Config) setDefaults() {
	if c.Orders == 0 {
		c.Orders = DefaultOrders
	}
	if c.OrderIDPrefix == "" {
		c.OrderIDPrefix = "s" + strconv.FormatInt(c.Seed, 10) + "-"
	}
	if c.Start.IsZero() {
		c.Start = DefaultStart
	}
	c.Start = c.Start.UTC()
	def := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.DuplicateRate, DefaultDuplicateRate)
	def(&c.ReorderRate, DefaultReorderRate)
	def(&c.CancelRate, DefaultCancelRate)
	def(&c.AgentRate, DefaultAgentRate)
	def(&c.EstimatorRate, DefaultEstimatorRate)
	def(&c.MissingReadyRate, DefaultMissingReadyRate)
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defInt(&c.Customers, DefaultCustomers)
	defInt(&c.Restaurants, DefaultRestaurants)
	defInt(&c.Dashers, DefaultDashers)
	defInt(&c.Interleave, DefaultInterleave)
	defInt(&c.ReorderWindow, DefaultReorderWindow)
	defInt(&c.MaxBodyBytes, DefaultMaxBodyBytes)
}

// Validate reports every problem of a Config after defaults were applied.
func (c Config) Validate() error {
	var errs []error
	if c.Orders < 1 {
		errs = append(errs, fmt.Errorf("orders must be >= 1, got %d", c.Orders))
	}
	rates := []struct {
		name string
		v    float64
	}{
		{"duplicate", c.DuplicateRate}, {"reorder", c.ReorderRate}, {"cancel", c.CancelRate},
		{"agent", c.AgentRate}, {"estimator", c.EstimatorRate}, {"missing ready", c.MissingReadyRate},
		{"invalid", c.InvalidRate},
	}
	for _, r := range rates {
		if math.IsNaN(r.v) || r.v > 1 {
			errs = append(errs, fmt.Errorf("%s rate must be in [0,1] or Off, got %v", r.name, r.v))
		}
	}
	// One draw decides cancel vs agent correction, so together they must fit in 1.
	if prob(c.CancelRate)+prob(c.AgentRate) > 1 {
		errs = append(errs, fmt.Errorf("cancel rate + agent rate must be <= 1, got %v", prob(c.CancelRate)+prob(c.AgentRate)))
	}
	for _, p := range []struct {
		name string
		v    int
	}{
		{"customers", c.Customers}, {"restaurants", c.Restaurants}, {"dashers", c.Dashers},
		{"interleave", c.Interleave}, {"reorder window", c.ReorderWindow},
	} {
		if p.v < 1 {
			errs = append(errs, fmt.Errorf("%s must be >= 1, got %d", p.name, p.v))
		}
	}
	if c.MaxBodyBytes < 1024 || c.MaxBodyBytes > 512<<10 {
		// Above ~1 MB NATS refuses the publish itself, so the message would never reach the DLQ.
		errs = append(errs, fmt.Errorf("max body bytes must be in [1024, 524288], got %d", c.MaxBodyBytes))
	}
	if !prefixRE.MatchString(c.OrderIDPrefix) {
		errs = append(errs, fmt.Errorf("order id prefix %q: only [A-Za-z0-9_-] allowed", c.OrderIDPrefix))
	}
	if n := len(c.OrderIDPrefix) + len(strconv.Itoa(max(c.Orders, 1))); n > maxOrderIDLen {
		errs = append(errs, fmt.Errorf("order ids would be %d characters, at most %d fit", n, maxOrderIDLen))
	}
	return errors.Join(errs...)
}

// prob maps a configured rate (possibly Off) to a probability.
func prob(v float64) float64 { return max(v, 0) }
