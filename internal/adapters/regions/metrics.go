package regions

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the per-peer replication gauges of /metrics.
type Metrics struct {
	lagEvents, lagSeconds, linkUp, replicated *prometheus.GaugeVec
}

// NewMetrics registers the region gauges on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	g := func(name, help string) *prometheus.GaugeVec {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"peer"})
		reg.MustRegister(v)
		return v
	}
	return &Metrics{
		lagEvents:  g("orderflow_region_replication_lag_events", "Events of the peer region's ingest log this region's WAL does not hold yet (JetStream's source lag)."),
		lagSeconds: g("orderflow_region_replication_lag_seconds", "Age of the oldest peer event not replicated here yet; while the link is down, time since the peer was last heard from."),
		linkUp:     g("orderflow_region_link_up", "1 when the peer region's JetStream answers through the link, else 0."),
		replicated: g("orderflow_region_replicated_sequence", "Last sequence of the peer's ORDER_INGEST held in this region's WAL."),
	}
}

// Observe sets the gauges from a status.
func (m *Metrics) Observe(st Status) {
	for _, p := range st.Peers {
		m.lagEvents.WithLabelValues(p.Peer).Set(float64(p.LagEvents))
		m.lagSeconds.WithLabelValues(p.Peer).Set(p.LagSeconds)
		m.replicated.WithLabelValues(p.Peer).Set(float64(p.ReplicatedSeq))
		up := 0.0
		if p.Link == "up" {
			up = 1
		}
		m.linkUp.WithLabelValues(p.Peer).Set(up)
	}
}

// Poll reads the status every interval until ctx ends and updates m. Reading it
// costs a few JetStream API calls, local and over the link, so it is polled rather
// than read on each scrape (a cut link would slow every scrape down).
func (m *Metrics) Poll(ctx context.Context, nc *nats.Conn, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		st, err := Read(ctx, nc)
		if err == nil {
			m.Observe(st)
		} else if ctx.Err() == nil {
			log.Debug("region status", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
