package archive

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the archiver's Prometheus series (orderflow_archive_*).
type metrics struct {
	orders    prometheus.Counter
	events    prometheus.Counter
	bytes     prometheus.Counter
	purges    prometheus.Counter
	snapshots prometheus.Counter
	recovered prometheus.Counter
	heldBack  prometheus.Gauge
	runs      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		orders: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderflow_archive_orders_total",
			Help: "Order parts archived (files durable and indexed).",
		}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderflow_archive_events_total",
			Help: "WAL events archived.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderflow_archive_bytes_total",
			Help: "Bytes of Parquet files written.",
		}),
		purges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderflow_archive_wal_purges_total",
			Help: "Archived orders whose WAL events were purged (one purge request each).",
		}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderflow_archive_snapshots_removed_total",
			Help: "Snapshots of archived orders removed from KV order_status.",
		}),
		recovered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderflow_archive_recovered_batches_total",
			Help: "Batches a run found unfinished (a crash, or another archiver) and finished.",
		}),
		heldBack: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orderflow_archive_held_back_orders",
			Help: "Orders old enough to archive that a WAL consumer has not made durable yet (last run).",
		}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderflow_archive_runs_total",
			Help: "Archive runs by result: ok, busy (another archiver held the batch slot), error.",
		}, []string{"result"}),
	}
	// Every result exists from the start, so an alert on errors has a series to rate.
	for _, r := range []string{"ok", "busy", "error"} {
		m.runs.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.orders, m.events, m.bytes, m.purges, m.snapshots, m.recovered, m.heldBack, m.runs} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("archive metrics already registered: one archiver per registry")
			}
			return nil, err
		}
	}
	return m, nil
}
