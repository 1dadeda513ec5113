package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/pipelines/topology"
)

// LocationsConfig configures the firehose subscriber.
type LocationsConfig struct {
	// Workers is how many subscriptions share the firehose in this instance (a
	// queue group private to it); default 2.
	Workers int
	// StoreEvery is the least device time between two stored positions of one
	// dasher; default 10s. Negative turns the store off.
	StoreEvery time.Duration
	// Now is the clock that bounds `at`; default time.Now.
	Now        func() time.Time
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

func (c *LocationsConfig) setDefaults() {
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.StoreEvery == 0 {
		c.StoreEvery = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Locations feeds the index from the firehose and keeps the latest-position store.
type Locations struct {
	cfg      LocationsConfig
	nc       *nats.Conn
	index    *Index
	applied  prometheus.Counter
	stale    prometheus.Counter
	rejected *prometheus.CounterVec
	indexed  prometheus.GaugeFunc
}

// NewLocations returns the subscriber for index over nc. It registers its metrics.
func NewLocations(nc *nats.Conn, index *Index, cfg LocationsConfig) (*Locations, error) {
	cfg.setDefaults()
	l := &Locations{
		cfg: cfg, nc: nc, index: index,
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderflow_dasher_locations_applied_total", Help: "Dasher positions that moved a dasher in the index.",
		}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orderflow_dasher_locations_stale_total", Help: "Valid dasher positions older than the one indexed (late or duplicate), ignored.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderflow_dasher_locations_rejected_total", Help: "Dasher location messages dropped, by reason.",
		}, []string{"reason"}),
	}
	l.indexed = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "orderflow_dashers_indexed", Help: "Dashers in this instance's nearby index.",
	}, func() float64 { return float64(index.Len()) })
	for _, r := range Reasons {
		l.rejected.WithLabelValues(string(r))
	}
	for _, c := range []prometheus.Collector{l.applied, l.stale, l.rejected, l.indexed} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("dispatch metrics: %w", err)
		}
	}
	return l, nil
}

// Handle takes one firehose message. It is safe for concurrent use.
func (l *Locations) Handle(subject string, body []byte) {
	id, p, reason := ParseLocation(subject, body, l.cfg.Now())
	if reason != "" {
		l.rejected.WithLabelValues(string(reason)).Inc()
		return
	}
	applied, store := l.index.Update(id, p, l.cfg.StoreEvery)
	if !applied {
		l.stale.Inc()
		return
	}
	l.applied.Inc()
	if store {
		l.store(id, p, body)
	}
}

// store writes the position to KV dasher_locations without waiting: a lost write
// is replaced StoreEvery later, and the firehose must never wait on disk. The
// message id names the time slot, so instances storing the same dasher in the same
// slot are deduplicated by the stream.
func (l *Locations) store(id string, p Position, body []byte) {
	m := nats.NewMsg("$KV." + topology.LocationsBucket + "." + id)
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, id+"."+strconv.FormatInt(p.At.UnixNano()/int64(l.cfg.StoreEvery), 10))
	_ = l.nc.PublishMsg(m)
}

// Run subscribes to the firehose, rebuilds the index from the store, and serves
// until ctx ends. It subscribes first, so nothing published during the rebuild is
// missed (the index keeps the newest by device time either way).
func (l *Locations) Run(ctx context.Context, js jetstream.JetStream) error {
	queue := "dispatch-index-" + nats.NewInbox()[len(nats.InboxPrefix):]
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	for range l.cfg.Workers {
		s, err := l.nc.QueueSubscribe(LocationsPrefix+"*", queue, func(m *nats.Msg) { l.Handle(m.Subject, m.Data) })
		if err != nil {
			return fmt.Errorf("subscribe to %s*: %w", LocationsPrefix, err)
		}
		// The firehose is bursty; a slow consumer drops messages (counted by NATS),
		// it never blocks the server or the publishers.
		_ = s.SetPendingLimits(1<<20, 256<<20)
		subs = append(subs, s)
	}
	if err := l.nc.Flush(); err != nil {
		return err
	}
	n, err := l.Rebuild(ctx, js)
	if err != nil {
		return err
	}
	l.cfg.Logger.Info("dasher index rebuilt from the store", "dashers", n)
	<-ctx.Done()
	return nil
}

// Rebuild loads every stored position into the index and returns how many there were.
func (l *Locations) Rebuild(ctx context.Context, js jetstream.JetStream) (int, error) {
	kv, err := js.KeyValue(ctx, topology.LocationsBucket)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", topology.LocationsBucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return 0, fmt.Errorf("watch %s: %w", topology.LocationsBucket, err)
	}
	defer func() { _ = w.Stop() }()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return n, errors.New("the store's watcher closed during the rebuild")
			}
			if e == nil { // every stored value delivered
				return n, nil
			}
			p, reason := ParsePosition(e.Value(), l.cfg.Now())
			if !ValidDasherID(e.Key()) {
				reason = ReasonInvalidSubject
			}
			if reason != "" {
				l.rejected.WithLabelValues(string(reason)).Inc()
				continue
			}
			l.index.Update(e.Key(), p, 0)
			n++
		}
	}
}
