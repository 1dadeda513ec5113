package clickhouse

import (
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the sink's Prometheus series (orderflow_sink_clickhouse_*).
type metrics struct {
	rows          *prometheus.CounterVec
	events        prometheus.Counter
	batchSeconds  prometheus.Histogram
	batchFailures prometheus.Counter
	eventLag      prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, lagEvents, lagSeconds func() float64) (*metrics, error) {
	m := &metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderflow_sink_clickhouse_rows_total",
			Help: "Rows ClickHouse confirmed, by table (retried batches count once).",
		}, []string{"table"}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderflow_sink_clickhouse_events_total",
			Help: "WAL events whose rows ClickHouse confirmed.",
		}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "orderflow_sink_clickhouse_batch_duration_seconds",
			Help:    "Time to write one batch to every table, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
		}),
		batchFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderflow_sink_clickhouse_batch_failures_total",
			Help: "Failed insert attempts (each is rebuilt and retried).",
		}),
		eventLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "orderflow_sink_clickhouse_event_lag_seconds",
			Help:    "Time from JetStream storing an event to ClickHouse confirming its rows.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16),
		}),
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.rows, m.events, m.batchSeconds, m.batchFailures, m.eventLag,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "orderflow_sink_clickhouse_lag_events",
			Help: "WAL events not yet confirmed in ClickHouse: undelivered plus in memory.",
		}, lagEvents),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "orderflow_sink_clickhouse_lag_seconds",
			Help: "Age of the oldest event the sink read that ClickHouse has not confirmed; 0 when caught up.",
		}, lagSeconds),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("clickhouse sink metrics already registered: one sink per registry")
			}
			return nil, err
		}
	}
	return m, nil
}

// lagSamples keeps the most recent per-event lags for quantiles (bench, tests).
type lagSamples struct {
	mu  sync.Mutex
	buf []float64
	n   int // total observed
}

const lagSampleCap = 1 << 17

// observeSince records now minus each stored time.
func (l *lagSamples) observeSince(now time.Time, stored []time.Time) {
	l.mu.Lock()
	if l.buf == nil {
		l.buf = make([]float64, lagSampleCap)
	}
	for _, t := range stored {
		l.buf[l.n%lagSampleCap] = now.Sub(t).Seconds()
		l.n++
	}
	l.mu.Unlock()
}

func (l *lagSamples) reset() {
	l.mu.Lock()
	l.n = 0
	l.mu.Unlock()
}

// quantiles returns the q-quantiles of the retained samples (nearest rank).
func (l *lagSamples) quantiles(qs ...float64) []time.Duration {
	l.mu.Lock()
	n := min(l.n, lagSampleCap)
	s := append([]float64(nil), l.buf[:n]...)
	l.mu.Unlock()
	out := make([]time.Duration, len(qs))
	if n == 0 {
		return out
	}
	sort.Float64s(s)
	for i, q := range qs {
		k := int(q*float64(n)+0.999999) - 1
		k = max(0, min(n-1, k))
		out[i] = time.Duration(s[k] * float64(time.Second))
	}
	return out
}
