package handlers

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/schemas"
)

// Metrics are the pipeline's Prometheus metrics. Labels never carry order ids.
type Metrics struct {
	Events          *prometheus.CounterVec
	DLQ             *prometheus.CounterVec
	LaneLag         *prometheus.GaugeVec
	HandlerSeconds  prometheus.Histogram
	EndToEndSeconds prometheus.Histogram
	SnapshotWrites  *prometheus.CounterVec
	Milestones      *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderflow_events_total",
			Help: "Events folded by the status lanes, by source and decision.",
		}, []string{"source", "decision"}),
		DLQ: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderflow_dlq_events_total",
			Help: "Events set aside in ORDER_EVENTS_DLQ, by reason.",
		}, []string{"reason"}),
		LaneLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "orderflow_lane_lag_events",
			Help: "WAL events waiting for a lane after the one it last handled.",
		}, []string{"lane"}),
		HandlerSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "orderflow_handler_duration_seconds",
			Help:    "Time a lane spends on one handler call: one pulled batch of its deliveries.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12),
		}),
		EndToEndSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "orderflow_end_to_end_seconds",
			Help:    "From an event stored in the WAL to its effect durable in KV order_status.",
			Buckets: prometheus.ExponentialBuckets(1e-4, 2, 18),
		}),
		SnapshotWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderflow_snapshot_writes_total",
			Help: "Snapshot compare-and-set writes, by result (ok, conflict, error, unreadable). Conflicts are expected after a start or a failover: the first write of each order a lane did not hold is how it learns the order exists.",
		}, []string{"result"}),
		Milestones: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderflow_milestones_published_total",
			Help: "Milestones the lanes' relays saw ORDER_MILESTONES confirm, by kind. A relay retrying after a crash or a failover counts a milestone again; the stream still holds it once.",
		}, []string{"milestone"}),
	}
	reg.MustRegister(m.Events, m.DLQ, m.LaneLag, m.HandlerSeconds, m.EndToEndSeconds, m.SnapshotWrites, m.Milestones)
	m.initLabels()
	return m
}

// initLabels creates every known label value at zero, so that rate() and alert
// expressions over a value that has not happened yet (a first conflict, a first DLQ
// reason) see a series that starts at 0 instead of no data.
func (m *Metrics) initLabels() {
	for _, src := range schemas.Sources {
		for _, o := range []resolver.Outcome{resolver.Applied, resolver.Duplicate, resolver.Stale, resolver.Ignored, resolver.Rejected} {
			m.Events.WithLabelValues(string(src), string(o))
		}
	}
	for _, r := range []string{fold.ReasonPayloadTooLarge, fold.ReasonInvalidSubject, fold.ReasonDuplicateHeader, fold.ReasonReservedHeader,
		fold.ReasonMalformedJSON, fold.ReasonSourceMismatch, fold.ReasonOrderMismatch, fold.ReasonSchemaViolation, fold.ReasonHandlerPanic} {
		m.DLQ.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "conflict", "error", "unreadable"} {
		m.SnapshotWrites.WithLabelValues(r)
	}
	for _, k := range outbox.Milestones {
		m.Milestones.WithLabelValues(string(k))
	}
}

func laneLabel(p int) string { return strconv.Itoa(p) }

// decisionCounters caches orderflow_events_total's children: the lanes count every
// event, and a label lookup per event is measurable. Only a lane's delivery path
// uses its counters, so they need no lock.
type decisionCounters struct {
	vec *prometheus.CounterVec
	c   map[[2]string]prometheus.Counter
}

func newDecisionCounters(vec *prometheus.CounterVec) decisionCounters {
	return decisionCounters{vec: vec, c: map[[2]string]prometheus.Counter{}}
}

func (d *decisionCounters) inc(src schemas.Source, outcome resolver.Outcome) {
	k := [2]string{string(src), string(outcome)}
	c, ok := d.c[k]
	if !ok {
		c = d.vec.WithLabelValues(k[0], k[1])
		d.c[k] = c
	}
	c.Inc()
}
