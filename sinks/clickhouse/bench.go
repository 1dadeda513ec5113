package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// BenchConfig describes one sink benchmark.
type BenchConfig struct {
	// Events is how many simulated events to publish as the backlog. Default 100000.
	Events int
	// Seed seeds the workload.
	Seed int64
	// Sink tunes the sink under test; its Consumer is replaced by a temporary one.
	Sink Config
	// LiveRate, when > 0, then publishes at this many events per second for
	// LiveDuration (default 10s) and measures the sink's per-event lag.
	LiveRate     float64
	LiveDuration time.Duration
	Logger       *slog.Logger
}

// BenchResult compares the sink with the two raw baselines on the same events.
type BenchResult struct {
	Events int `json:"events"`
	// JetStream: durable consumer, consume + explicit ack of the backlog, msgs/s.
	JetStream float64 `json:"jetstream_consume_ack_per_s"`
	// ClickHouse: clickhouse-go batch insert of the backlog's order_events rows, in
	// batches of the sink's BatchSize, rows/s.
	ClickHouse float64 `json:"clickhouse_insert_rows_per_s"`
	// Sink: WAL events per second the sink drained from the backlog into every table
	// (confirmed and acked); SinkRows counts the rows of all tables.
	Sink     float64 `json:"sink_events_per_s"`
	SinkRows float64 `json:"sink_rows_per_s"`
	// Ratio is Sink / min(JetStream, ClickHouse); the target is >= 0.5.
	Ratio float64 `json:"ratio"`
	// Live lag at LiveRate, when measured.
	LiveRate float64       `json:"live_rate,omitempty"`
	LagP50   time.Duration `json:"lag_p50,omitempty"`
	LagP99   time.Duration `json:"lag_p99,omitempty"`
	LagMax   time.Duration `json:"lag_max,omitempty"`
}

func (r BenchResult) String() string {
	s := fmt.Sprintf("%d events: jetstream consume+ack %.0f/s, clickhouse insert %.0f rows/s, sink %.0f events/s (%.0f rows/s); sink / slower baseline = %.2f",
		r.Events, r.JetStream, r.ClickHouse, r.Sink, r.SinkRows, r.Ratio)
	if r.LiveRate > 0 {
		s += fmt.Sprintf("; live %.0f events/s: lag p50 %s p99 %s max %s", r.LiveRate,
			r.LagP50.Round(time.Millisecond), r.LagP99.Round(time.Millisecond), r.LagMax.Round(time.Millisecond))
	}
	return s
}

// Bench publishes a backlog of simulated events to ORDER_EVENTS (which must exist),
// then measures, in this order and on the same events: a raw JetStream durable
// consume+ack, a raw clickhouse-go insert of the same order_events rows, and the
// sink draining the backlog through a temporary consumer. The events stay in the
// WAL and their rows in the tables: rows are idempotent, so the real sink writing
// them again changes nothing. conn's database is migrated first.
func Bench(ctx context.Context, js jetstream.JetStream, conn driver.Conn, cfg BenchConfig) (BenchResult, error) {
	if cfg.Events == 0 {
		cfg.Events = 100_000
	}
	if cfg.LiveDuration == 0 {
		cfg.LiveDuration = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cfg.Sink.SetDefaults()
	res := BenchResult{}
	if _, err := Migrate(ctx, conn, Layout{}); err != nil {
		return res, err
	}
	run := time.Now().UnixNano() % 1e9
	first, last, err := benchPublish(ctx, js, cfg.Seed, fmt.Sprintf("b%d-", run), cfg.Events, 0)
	if err != nil {
		return res, err
	}
	res.Events = int(last - first + 1)

	recs, secs, err := benchJetStream(ctx, js, fmt.Sprintf("bench-js-%d", run), first, last)
	if err != nil {
		return res, fmt.Errorf("jetstream baseline: %w", err)
	}
	res.JetStream = float64(len(recs)) / secs

	if res.ClickHouse, err = benchClickHouse(ctx, js, conn, recs, cfg.Sink.BatchSize, fmt.Sprintf("bench_order_events_%d", run)); err != nil {
		return res, fmt.Errorf("clickhouse baseline: %w", err)
	}

	scfg := cfg.Sink
	scfg.Consumer = fmt.Sprintf("bench-sink-%d", run)
	// A durable consumer holds back archiving: the server drops an abandoned one.
	want := ConsumerConfig(scfg)
	want.DeliverPolicy, want.OptStartSeq, want.InactiveThreshold = jetstream.DeliverByStartSequencePolicy, first, time.Minute
	if _, err := js.CreateConsumer(ctx, topology.EventsStream, want); err != nil {
		return res, err
	}
	defer deleteConsumer(js, scfg.Consumer)
	s, err := NewSink(scfg, js, conn, nil, cfg.Logger)
	if err != nil {
		return res, err
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- s.Run(sctx) }()
	defer func() { stop(); <-done }()
	if err := s.WaitConfirmed(ctx, last); err != nil {
		return res, err
	}
	secs = time.Since(began).Seconds()
	res.Sink = float64(res.Events) / secs
	res.SinkRows = float64(s.Stats().Rows) / secs
	res.Ratio = res.Sink / min(res.JetStream, res.ClickHouse)

	if cfg.LiveRate > 0 {
		s.ResetLag()
		n := int(cfg.LiveRate * cfg.LiveDuration.Seconds())
		_, last, err := benchPublish(ctx, js, cfg.Seed+1, fmt.Sprintf("l%d-", run), n, cfg.LiveRate)
		if err != nil {
			return res, err
		}
		if err := s.WaitConfirmed(ctx, last); err != nil {
			return res, err
		}
		q := s.LagQuantiles(0.5, 0.99, 1)
		res.LiveRate, res.LagP50, res.LagP99, res.LagMax = cfg.LiveRate, q[0], q[1], q[2]
	}
	return res, nil
}

// benchPublish publishes n simulated events (all of them, rate 0, or paced) and
// returns the WAL range they got.
func benchPublish(ctx context.Context, js jetstream.JetStream, seed int64, prefix string, n int, rate float64) (uint64, uint64, error) {
	stream, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return 0, 0, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	before := info.State.LastSeq
	g, err := simulate.NewGenerator(simulate.Config{Seed: seed, Orders: max(1, n/5), OrderIDPrefix: prefix})
	if err != nil {
		return 0, 0, err
	}
	sent := 0
	next := func() (simulate.Message, bool) {
		if sent == n {
			return simulate.Message{}, false
		}
		sent++
		return g.Next()
	}
	if _, err := simulate.Publish(ctx, js, next, rate, nil); err != nil {
		return 0, 0, err
	}
	info, err = stream.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	if info.State.LastSeq <= before {
		return 0, 0, errors.New("no event was stored")
	}
	return before + 1, info.State.LastSeq, nil
}

// benchJetStream consumes first..last through a durable consumer with explicit
// acks, as a sink without batching would, and returns the records and the seconds.
func benchJetStream(ctx context.Context, js jetstream.JetStream, name string, first, last uint64) ([]wal.Record, float64, error) {
	stream, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return nil, 0, err
	}
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: name, FilterSubject: topology.WALPrefix + ".>",
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: first,
		AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 100_000, InactiveThreshold: time.Minute,
	})
	if err != nil {
		return nil, 0, err
	}
	defer deleteConsumer(js, name)
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return nil, 0, err
	}
	defer it.Stop()
	recs := make([]wal.Record, 0, last-first+1)
	began := time.Now()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, 0, err
		}
		md, err := m.Metadata()
		if err != nil {
			return nil, 0, err
		}
		recs = append(recs, wal.Record{Seq: md.Sequence.Stream, Subject: m.Subject(), Data: m.Data(), Header: m.Headers(), Time: md.Timestamp})
		if err := m.Ack(); err != nil {
			return nil, 0, err
		}
		if md.Sequence.Stream >= last {
			return recs, time.Since(began).Seconds(), nil
		}
	}
}

// benchClickHouse folds recs into order_events rows (not timed), then inserts them
// into a scratch copy of order_events in batches of batchSize, and returns rows/s.
func benchClickHouse(ctx context.Context, js jetstream.JetStream, conn driver.Conn, recs []wal.Record, batchSize int, table string) (float64, error) {
	log, err := wal.Open(ctx, js)
	if err != nil {
		return 0, err
	}
	var lookups atomic.Uint64
	f := newFolder(log, len(recs)+1, 16, 100*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), &lookups)
	var batches []*batch
	for i := 0; i < len(recs); i += batchSize {
		b := &batch{}
		for _, r := range recs[i:min(len(recs), i+batchSize)] {
			ev, rej := fold.Classify(r)
			if err := f.fold(ctx, r, ev, rej, b); err != nil {
				return 0, err
			}
		}
		batches = append(batches, b)
	}
	if err := conn.Exec(ctx, "CREATE TABLE "+table+" AS "+TableEvents); err != nil {
		return 0, err
	}
	defer func() { _ = conn.Exec(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS "+table) }()
	query := "INSERT INTO " + table + " (" + columnNames(eventColumns) + ")"
	began := time.Now()
	for _, b := range batches {
		bt, err := conn.PrepareBatch(ctx, query)
		if err != nil {
			return 0, err
		}
		for i, col := range b.events.columns() {
			if err := bt.Column(i).Append(col); err != nil {
				return 0, err
			}
		}
		if err := bt.Send(); err != nil {
			return 0, err
		}
	}
	return float64(len(recs)) / time.Since(began).Seconds(), nil
}

func deleteConsumer(js jetstream.JetStream, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s, err := js.Stream(ctx, topology.EventsStream); err == nil {
		_ = s.DeleteConsumer(ctx, name) // best effort: a leftover only holds a position
	}
}
