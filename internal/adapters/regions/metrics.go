package regions

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/pipelines/topology"
)

// Metrics are the per-peer replication gauges of /metrics.
type Metrics struct {
	lagEvents, lagSeconds, linkUp, replicated *prometheus.GaugeVec
	resumes                                   *prometheus.CounterVec
	milestonesQueued, milestonesCopyLag       prometheus.Gauge
	milestonesHeld                            prometheus.Gauge
}

// NewMetrics registers the region gauges on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	g := func(name, help string) *prometheus.GaugeVec {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"peer"})
		reg.MustRegister(v)
		return v
	}
	resumes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "orderflow_region_source_restarts_total",
		Help: "Times a stalled stream source from the peer region was restarted."}, []string{"peer"})
	reg.MustRegister(resumes)
	queued := prometheus.NewGauge(prometheus.GaugeOpts{Name: "orderflow_region_milestones_queued",
		Help: "Milestones of this region waiting for the milestones home to store them (ORDER_MILESTONES_QUEUE)."})
	copyLag := prometheus.NewGauge(prometheus.GaugeOpts{Name: "orderflow_region_milestones_copy_lag",
		Help: "Milestones of the home's ledger this region's copy does not hold yet (0 at the home)."})
	held := prometheus.NewGauge(prometheus.GaugeOpts{Name: "orderflow_region_milestones_held",
		Help: "1 while this region, the milestones home, holds its ledger (takes no milestones): the peer has not confirmed it copies this region's ledger, or holds a ledger too (region status says why)."})
	reg.MustRegister(queued, copyLag, held)
	return &Metrics{
		resumes:           resumes,
		milestonesQueued:  queued,
		milestonesCopyLag: copyLag,
		milestonesHeld:    held,
		lagEvents:         g("orderflow_region_replication_lag_events", "Events of the peer region's ingest log this region's WAL does not hold yet (JetStream's source lag)."),
		lagSeconds:        g("orderflow_region_replication_lag_seconds", "Age of the oldest peer event not replicated here yet; while the link is down, time since the peer was last heard from."),
		linkUp:            g("orderflow_region_link_up", "1 when the peer region's JetStream answers through the link, else 0."),
		replicated:        g("orderflow_region_replicated_sequence", "Last sequence of the peer's ORDER_INGEST held in this region's WAL."),
	}
}

// Observe sets the gauges from a status.
func (m *Metrics) Observe(st Status) {
	m.milestonesQueued.Set(float64(st.Milestones.Queued))
	lag := 0.0
	if c := st.Milestones.Copy; c != nil {
		lag = float64(c.LagEvents)
	}
	m.milestonesCopyLag.Set(lag)
	held := 0.0
	if st.Milestones.Held != "" {
		held = 1
	}
	m.milestonesHeld.Set(held)
	for _, p := range st.Peers {
		// The restart counter exists at 0 from the first poll, so rate() and
		// increase() over it (dashboard, alert) have a series before any restart.
		m.resumes.WithLabelValues(p.Peer)
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

// resumeGrace is how long a stall must last before Poll restarts the source.
const resumeGrace = 3 * time.Second

// Poll reads the status every interval until ctx ends, updates m, and restarts a
// stalled peer source (see Resume). Reading it costs a few JetStream API calls,
// local and over the link, so it is polled rather than read on each scrape (a cut
// link would slow every scrape down).
func (m *Metrics) Poll(ctx context.Context, nc *nats.Conn, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Error("region status", "err", err)
		return
	}
	since := map[string]time.Time{} // when each peer's source was first seen stalled
	for {
		st, err := Read(ctx, nc)
		if err == nil {
			m.Observe(st)
			if c := st.Milestones.Copy; c != nil && c.Link == "up" {
				if err := recordHomeEpoch(ctx, nc, js, st.Milestones.Home); err != nil && ctx.Err() == nil {
					log.Debug("record the milestones home's epoch on the copy", "err", err)
				}
			}
			peers := st.Peers
			if c := st.Milestones.Copy; c != nil {
				peers = append(peers[:len(peers):len(peers)], *c)
			}
			for i, p := range peers {
				stream, key := topology.EventsStream, p.Peer
				if i >= len(st.Peers) {
					stream, key = topology.MilestonesStream, "milestones@"+p.Peer
				}
				p.Peer = key
				if !stalled(p) {
					delete(since, p.Peer)
					continue
				}
				if _, ok := since[p.Peer]; !ok {
					since[p.Peer] = time.Now()
				}
				if time.Since(since[p.Peer]) < resumeGrace {
					continue // give JetStream's own retry a chance first
				}
				delete(since, p.Peer)
				peer := strings.TrimPrefix(p.Peer, "milestones@")
				log.Warn("replication from a peer region stalled with the link up; restarting its stream source",
					"peer", peer, "stream", stream, "lag_events", p.LagEvents, "last_heard", p.LastHeard)
				if err := Resume(ctx, js, stream, peer); err != nil {
					log.Error("restart stream source", "peer", peer, "stream", stream, "err", err)
				}
				m.resumes.WithLabelValues(peer).Inc()
			}
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
