// Package streamstats exports the state of orderflow's JetStream streams as
// Prometheus gauges (orderflow_stream_*): how many events and bytes each holds
// against its limits, and how old its oldest event is. Operators alert on the WAL
// nearing --wal-max-bytes (where producers start being refused) or --wal-max-age
// (where unconsumed events would expire) from these.
package streamstats

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector reads stream info on scrape, at most once per MaxStaleness, so that
// several scrapers (or a fast scrape interval) cost one request per stream.
type Collector struct {
	js      jetstream.JetStream
	streams []string
	log     *slog.Logger
	// MaxStaleness is how long one read of the streams' info answers scrapes.
	MaxStaleness time.Duration
	// Timeout bounds one stream info request.
	Timeout time.Duration

	mu    sync.Mutex
	at    time.Time
	infos []*jetstream.StreamInfo

	messages, bytes, maxBytes, maxAge, firstAge, infoErrors *prometheus.Desc
	errors                                                  map[string]float64
}

// New returns a collector of the named streams; register it on the instance's registry.
func New(js jetstream.JetStream, log *slog.Logger, streams ...string) *Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"stream"}, nil)
	}
	return &Collector{
		js: js, streams: streams, log: log, MaxStaleness: 2 * time.Second, Timeout: 2 * time.Second,
		messages: d("orderflow_stream_messages", "Messages a JetStream stream holds."),
		bytes:    d("orderflow_stream_bytes", "Bytes a JetStream stream holds."),
		maxBytes: d("orderflow_stream_max_bytes", "The stream's size limit (only for a stream that has one, e.g. ORDER_EVENTS with --wal-max-bytes); at it, ORDER_EVENTS refuses new events."),
		maxAge:   d("orderflow_stream_max_age_seconds", "The stream's age limit (only for a stream that has one, e.g. ORDER_EVENTS with --wal-max-age); older messages are removed."),
		firstAge: d("orderflow_stream_first_message_age_seconds", "Age of the oldest message the stream holds; 0 when empty."),
		infoErrors: d("orderflow_stream_info_errors_total",
			"Stream info requests that failed (the other orderflow_stream_* series of that stream are then missing)."),
		errors: map[string]float64{},
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.messages, c.bytes, c.maxBytes, c.maxAge, c.firstAge, c.infoErrors} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A stream whose info cannot be read is
// left out of this scrape (and counted in orderflow_stream_info_errors_total)
// rather than failing the whole scrape.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.infos == nil || now.Sub(c.at) >= c.MaxStaleness {
		c.infos, c.at = c.read(), now
	}
	for _, name := range c.streams {
		ch <- prometheus.MustNewConstMetric(c.infoErrors, prometheus.CounterValue, c.errors[name], name)
	}
	for _, in := range c.infos {
		name := in.Config.Name
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, name)
		}
		g(c.messages, float64(in.State.Msgs))
		g(c.bytes, float64(in.State.Bytes))
		if in.Config.MaxBytes > 0 {
			g(c.maxBytes, float64(in.Config.MaxBytes))
		}
		if in.Config.MaxAge > 0 {
			g(c.maxAge, in.Config.MaxAge.Seconds())
		}
		age := 0.0
		if in.State.Msgs > 0 && !in.State.FirstTime.IsZero() {
			age = max(0, now.Sub(in.State.FirstTime).Seconds())
		}
		g(c.firstAge, age)
	}
}

func (c *Collector) read() []*jetstream.StreamInfo {
	var out []*jetstream.StreamInfo
	for _, name := range c.streams {
		ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
		in, err := c.info(ctx, name)
		cancel()
		if err != nil {
			c.errors[name]++
			if c.log != nil {
				c.log.Warn("stream info for metrics", "stream", name, "err", err)
			}
			continue
		}
		out = append(out, in)
	}
	return out
}

func (c *Collector) info(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	s, err := c.js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.CachedInfo(), nil
}
