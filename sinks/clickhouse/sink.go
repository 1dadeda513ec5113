package clickhouse

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/retry"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// errConsumerReset: the consumer's delivery sequence went backwards, so it was
// recreated (a replay): the sink rebuilds its position and state.
var errConsumerReset = errors.New("sink consumer was recreated")

// chunkMax bounds the messages handled together (one prefetch round).
const chunkMax = 1024

// Sink copies the WAL into ClickHouse. See the package doc for how it stays exact.
type Sink struct {
	cfg    Config
	js     jetstream.JetStream
	conn   driver.Conn
	logger *slog.Logger
	m      *metrics
	lags   lagSamples

	// features is set by prepare before the writer starts.
	features Features
	// history, when set, replaces the WAL for rebuilding orders (WithHistory).
	history OrderLog

	// Reader state, owned by the reader goroutine.
	f        *folder
	cons     jetstream.Consumer
	lastSeq  uint64 // newest WAL sequence folded into a batch
	consSeq  uint64 // consumer delivery sequence of the last message received
	open     *batch
	openedAt time.Time

	// Shared between reader, writer and metrics.
	confirmedSeq atomic.Uint64 // every event up to it is confirmed in ClickHouse
	processed    atomic.Uint64
	confirmed    atomic.Uint64
	numPending   atomic.Uint64
	batches      atomic.Uint64
	rows         atomic.Uint64
	redelivered  atomic.Uint64
	failures     atomic.Uint64
	lookups      atomic.Uint64
	inflightMu   sync.Mutex
	inflight     []time.Time // WAL time of the first event of each unconfirmed batch
}

// NewSink returns a sink writing through conn. reg may be nil (no metrics
// exported); logger may be nil. Run does the work.
func NewSink(cfg Config, js jetstream.JetStream, conn driver.Conn, reg prometheus.Registerer, logger *slog.Logger) (*Sink, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("clickhouse sink config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Sink{cfg: cfg, js: js, conn: conn, logger: logger}
	m, err := newMetrics(reg, s.lagEvents, s.lagSeconds)
	if err != nil {
		return nil, err
	}
	s.m = m
	return s, nil
}

// WithHistory makes the sink rebuild orders missing from its cache through h
// instead of the WAL alone. Give it a reader that yields an order's archived
// events before its WAL events when the archive purges completed orders from the
// WAL: otherwise a late event of an archived order is folded without the purged
// history (its decision may differ from the timeline, and the order's created_at,
// taken from its first event still in the WAL, may move). Call before Run.
func (s *Sink) WithHistory(h OrderLog) *Sink {
	s.history = h
	return s
}

// Stats is a snapshot of the sink's progress.
type Stats struct {
	// ConfirmedSeq: every WAL event up to it has its rows confirmed in ClickHouse.
	ConfirmedSeq uint64
	// Events: WAL events confirmed by this sink since it started (replays included).
	Events uint64
	// Rows confirmed, over every table.
	Rows uint64
	// Batches written, and failed insert attempts (each retried).
	Batches, Failures uint64
	// Lookups: orders rebuilt from the WAL because they were not in the cache.
	Lookups uint64
	// Redelivered: deliveries skipped because their event was already read.
	Redelivered uint64
}

// Stats returns the sink's progress counters.
func (s *Sink) Stats() Stats {
	return Stats{
		ConfirmedSeq: s.confirmedSeq.Load(),
		Events:       s.confirmed.Load(),
		Rows:         s.rows.Load(),
		Batches:      s.batches.Load(),
		Failures:     s.failures.Load(),
		Lookups:      s.lookups.Load(),
		Redelivered:  s.redelivered.Load(),
	}
}

// LagQuantiles returns quantiles of the per-event lag (JetStream store to ClickHouse
// confirm) over the most recent events; ResetLag starts a new window.
func (s *Sink) LagQuantiles(qs ...float64) []time.Duration { return s.lags.quantiles(qs...) }

// ResetLag forgets the lag samples, e.g. after a warm-up.
func (s *Sink) ResetLag() { s.lags.reset() }

// WaitConfirmed waits until every WAL event up to seq is confirmed in ClickHouse.
func (s *Sink) WaitConfirmed(ctx context.Context, seq uint64) error {
	for s.confirmedSeq.Load() < seq {
		select {
		case <-ctx.Done():
			return fmt.Errorf("clickhouse sink confirmed %d of %d: %w", s.confirmedSeq.Load(), seq, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func (s *Sink) lagEvents() float64 {
	return float64(s.numPending.Load() + s.processed.Load() - s.confirmed.Load())
}

func (s *Sink) lagSeconds() float64 {
	s.inflightMu.Lock()
	defer s.inflightMu.Unlock()
	if len(s.inflight) == 0 {
		return 0
	}
	return time.Since(s.inflight[0]).Seconds()
}

// Run migrates the schema, then copies the WAL into ClickHouse until ctx ends. It
// waits out unreachable servers (ClickHouse or NATS) instead of failing: the sink
// lags, it never drops. It returns nil once ctx has ended, or at once an error
// wrapping ErrIncompatibleConsumer. Call it once per Sink.
func (s *Sink) Run(ctx context.Context) error {
	if err := s.prepare(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	writeCtx, stopWrites := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWrites()
	// After ctx ends, batches already handed over get ShutdownTimeout to land.
	stop := context.AfterFunc(ctx, func() {
		if s.cfg.ShutdownTimeout < 0 {
			stopWrites()
			return
		}
		time.AfterFunc(s.cfg.ShutdownTimeout, stopWrites)
	})
	defer stop()
	out := make(chan *batch, 1)
	written := make(chan struct{})
	go func() {
		defer close(written)
		s.writeLoop(writeCtx, out)
	}()
	s.readLoop(ctx, writeCtx, out)
	close(out)
	<-written
	s.unpin()
	return nil
}

// unpin lets another instance (or this one restarted) take the consumer now rather
// than after PinnedTTL.
func (s *Sink) unpin() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if stream, err := s.js.Stream(ctx, topology.EventsStream); err == nil {
		_ = stream.UnpinConsumer(ctx, s.cfg.Consumer, ConsumerGroup)
	}
}

// prepare migrates the schema, ensures the consumer and opens the WAL, retrying
// until it succeeds or ctx ends (ctx.Err()). A consumer it cannot use is an error
// no retry fixes.
func (s *Sink) prepare(ctx context.Context) error {
	backoff := s.cfg.RetryBackoff
	for {
		err := s.tryPrepare(ctx)
		if err == nil || errors.Is(err, ErrIncompatibleConsumer) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.logger.Warn("clickhouse sink not ready, retrying", "err", err, "retry_in", backoff)
		if !retry.Sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(2*backoff, s.cfg.RetryMaxBackoff)
	}
}

func (s *Sink) tryPrepare(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.InsertTimeout)
	defer cancel()
	applied, err := Migrate(ctx, s.conn, s.cfg.layout())
	if isCode(err, codeUnknownDatabase) && s.cfg.DSN != "" {
		opts, perr := parseDSN(s.cfg.DSN)
		if perr != nil {
			return perr
		}
		if err := ensureDatabase(ctx, opts); err != nil {
			return err
		}
		applied, err = Migrate(ctx, s.conn, s.cfg.layout())
	}
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if len(applied) > 0 {
		s.logger.Info("clickhouse schema migrated", "applied", applied)
	}
	if s.features, err = DetectFeatures(ctx, s.conn); err != nil {
		return err
	}
	if err := EnsureConsumer(ctx, s.js, s.cfg); err != nil {
		return err
	}
	var log OrderLog = s.history
	if log == nil {
		if log, err = wal.Open(ctx, s.js); err != nil {
			return err
		}
	}
	s.f = newFolder(log, s.cfg.CacheSize, s.cfg.Lookups, s.cfg.RetryBackoff, s.logger, &s.lookups)
	s.logger.Info("clickhouse sink started", "server", s.features.Version, "dedup_token", s.features.DedupToken,
		"consumer", s.cfg.Consumer, "batch_size", s.cfg.BatchSize, "batch_wait", s.cfg.BatchWait)
	return nil
}

// readLoop runs consumer sessions until ctx ends; each failure (NATS restart,
// consumer reset) starts a new one from the consumer's ack floor.
func (s *Sink) readLoop(ctx, writeCtx context.Context, out chan<- *batch) {
	backoff := s.cfg.RetryBackoff
	for ctx.Err() == nil && writeCtx.Err() == nil {
		began := time.Now()
		err := s.session(ctx, writeCtx, out)
		if ctx.Err() != nil || writeCtx.Err() != nil {
			break
		}
		if time.Since(began) > time.Minute {
			backoff = s.cfg.RetryBackoff
		}
		s.logger.Warn("clickhouse sink consumer session ended, resuming from the ack floor", "err", err, "retry_in", backoff)
		if !retry.Sleep(ctx, backoff) {
			break
		}
		backoff = min(2*backoff, s.cfg.RetryMaxBackoff)
	}
	// Let the writer land what was read, within ShutdownTimeout.
	_ = s.handOff(writeCtx, out)
}

// item is one delivered message with what the reader worked out about it.
type item struct {
	m          jetstream.Msg
	md         *jetstream.MsgMetadata
	rec        wal.Record
	ev         *schemas.Event
	rej        *fold.Rejection
	classified bool
}

// session consumes from the consumer's ack floor until an error or ctx ends.
func (s *Sink) session(ctx, writeCtx context.Context, out chan<- *batch) error {
	// The new position comes from the ack floor, so everything read so far must be
	// confirmed first; then memory is rebuilt from nothing.
	if err := s.flush(writeCtx, out); err != nil {
		return err
	}
	stream, err := s.js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", topology.EventsStream, err)
	}
	sinfo, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", topology.EventsStream, err)
	}
	cons, err := stream.Consumer(ctx, s.cfg.Consumer)
	if err != nil {
		return fmt.Errorf("sink consumer %s (recreate it with a restart or a replay): %w", s.cfg.Consumer, err)
	}
	s.cons = cons
	info := cons.CachedInfo()
	s.lastSeq = info.AckFloor.Stream
	if info.Config.DeliverPolicy == jetstream.DeliverByStartSequencePolicy && info.Config.OptStartSeq > 0 {
		s.lastSeq = max(s.lastSeq, info.Config.OptStartSeq-1)
	}
	s.consSeq = 0
	s.confirmedSeq.Store(s.lastSeq)
	s.f.reset(sinfo.State.Msgs == 0 || s.lastSeq+1 <= sinfo.State.FirstSeq)
	s.logger.Debug("clickhouse sink consuming", "from", s.lastSeq+1, "from_start", s.f.fromStart)
	// Events delivered to an earlier session but never acked come back only after
	// AckWait: read them from the WAL now. Their redeliveries are then skipped.
	if d := info.Delivered.Stream; d > s.lastSeq {
		if err := s.fill(ctx, writeCtx, out, d); err != nil {
			return err
		}
	}

	it, err := cons.Messages(
		jetstream.PullMaxMessages(s.cfg.PullMaxMessages),
		jetstream.PullPriorityGroup(ConsumerGroup),
		// Pull often enough that a live instance keeps its pin.
		jetstream.PullExpiry(max(time.Second, s.cfg.PinnedTTL/3)),
	)
	if err != nil {
		return fmt.Errorf("consume %s: %w", s.cfg.Consumer, err)
	}
	defer it.Stop()
	msgs := make(chan jetstream.Msg, chunkMax)
	errc := make(chan error, 1)
	stopFwd := make(chan struct{})
	defer close(stopFwd)
	go func() {
		for {
			m, err := it.Next()
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-stopFwd:
				return
			}
		}
	}()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	armed := false
	chunk := make([]jetstream.Msg, 0, chunkMax)
	items := make([]item, 0, chunkMax)
	for {
		if open := s.open != nil && !s.open.empty(); open && !armed {
			timer.Reset(s.cfg.BatchWait - time.Since(s.openedAt))
			armed = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return fmt.Errorf("consume %s: %w", s.cfg.Consumer, err)
		case <-timer.C:
			armed = false
			if rest := s.cfg.BatchWait - time.Since(s.openedAt); rest > 0 && s.open != nil && !s.open.empty() {
				timer.Reset(rest)
				armed = true
				continue
			}
			if err := s.handOff(writeCtx, out); err != nil {
				return err
			}
		case m := <-msgs:
			chunk = append(chunk[:0], m)
		drain:
			for len(chunk) < chunkMax {
				select {
				case m := <-msgs:
					chunk = append(chunk, m)
				default:
					break drain
				}
			}
			var err error
			if items, err = s.handleChunk(ctx, writeCtx, out, chunk, items[:0]); err != nil {
				return err
			}
			// Caught up (nothing buffered, nothing pending on the server) with a
			// good-sized batch: waiting out BatchWait would only add latency, e.g.
			// at the end of a backlog.
			if len(msgs) == 0 && s.numPending.Load() == 0 && s.open != nil && s.open.events.len() >= s.cfg.BatchSize/4 {
				if err := s.handOff(writeCtx, out); err != nil {
					return err
				}
			}
		}
	}
}

// handleChunk folds delivered messages in order. It first rebuilds, concurrently,
// the orders the chunk needs that are not cached.
func (s *Sink) handleChunk(ctx, writeCtx context.Context, out chan<- *batch, chunk []jetstream.Msg, items []item) ([]item, error) {
	var ups []lookup
	hi := s.lastSeq
	for _, m := range chunk {
		md, err := m.Metadata()
		if err != nil {
			return items, fmt.Errorf("message metadata: %w", err)
		}
		it := item{m: m, md: md, rec: wal.Record{Seq: md.Sequence.Stream, Subject: m.Subject(), Data: m.Data(), Header: wal.StoredHeaders(m.Headers()), Time: md.Timestamp}}
		if it.rec.Seq > hi {
			hi = it.rec.Seq
			it.classified = true
		}
		items = append(items, it)
	}
	// Decoding is pure and the costliest step per event: spread it over the cores.
	classifyAll(items)
	for i := range items {
		if it := &items[i]; it.classified && it.ev != nil {
			ups = append(ups, lookup{it.ev.OrderID, it.rec.Seq})
		}
	}
	s.f.prefetch(ctx, ups)
	for i := range items {
		it := &items[i]
		cseq := it.md.Sequence.Consumer
		if s.consSeq != 0 && cseq <= s.consSeq {
			return items, errConsumerReset
		}
		// A hole in delivery sequences means a delivery was lost (reconnect, another
		// instance held the pin): read what we missed from the WAL itself.
		gap := s.consSeq == 0 || cseq != s.consSeq+1
		s.consSeq = cseq
		s.numPending.Store(it.md.NumPending)
		seq := it.rec.Seq
		if seq <= s.lastSeq {
			s.redelivered.Add(1)
			// A redelivery of an event already in a batch. Ack it if that batch is
			// confirmed (its ack may have been lost); otherwise the batch's ack covers it.
			if seq <= s.confirmedSeq.Load() {
				_ = it.m.Ack()
			}
			continue
		}
		if gap && seq > s.lastSeq+1 {
			if err := s.catchUp(ctx, writeCtx, out, seq-1); err != nil {
				return items, err
			}
		}
		if !it.classified {
			it.ev, it.rej = fold.Classify(it.rec)
		}
		if err := s.add(ctx, writeCtx, out, it.rec, it.ev, it.rej, it.m); err != nil {
			return items, err
		}
	}
	return items, nil
}

// catchUp makes every event up to upto folded before the next one. What another
// instance acked meanwhile (it held the pin while this one stood by) is confirmed
// in ClickHouse already: skip to its ack floor, with a fresh cache, instead of
// re-reading all of it. The rest is read from the WAL.
func (s *Sink) catchUp(ctx, writeCtx context.Context, out chan<- *batch, upto uint64) error {
	info, err := s.cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("sink consumer info: %w", err)
	}
	if floor := min(info.AckFloor.Stream, upto); floor > s.lastSeq {
		if err := s.handOff(writeCtx, out); err != nil {
			return err
		}
		s.logger.Info("clickhouse sink skipping to the ack floor another instance reached", "from", s.lastSeq+1, "to", floor)
		s.lastSeq = floor
		s.f.reset(false)
	}
	return s.fill(ctx, writeCtx, out, upto)
}

// classifyAll classifies the items marked classified, in parallel for big chunks.
func classifyAll(items []item) {
	const minPerWorker = 128
	workers := min(runtime.GOMAXPROCS(0), len(items)/minPerWorker)
	if workers <= 1 {
		for i := range items {
			if it := &items[i]; it.classified {
				it.ev, it.rej = fold.Classify(it.rec)
			}
		}
		return
	}
	var wg sync.WaitGroup
	per := (len(items) + workers - 1) / workers
	for w := range workers {
		part := items[w*per : min(len(items), (w+1)*per)]
		wg.Go(func() {
			for i := range part {
				if it := &part[i]; it.classified {
					it.ev, it.rej = fold.Classify(it.rec)
				}
			}
		})
	}
	wg.Wait()
}

// fill folds the WAL events after lastSeq up to upto that were not delivered.
func (s *Sink) fill(ctx, writeCtx context.Context, out chan<- *batch, upto uint64) error {
	from := s.lastSeq + 1
	n := 0
	err := wal.ReadRange(ctx, s.js, topology.WALPrefix+".>", from, upto, func(rec wal.Record) error {
		if rec.Seq <= s.lastSeq {
			return nil
		}
		n++
		ev, rej := fold.Classify(rec)
		return s.add(ctx, writeCtx, out, rec, ev, rej, nil)
	})
	if err != nil {
		return fmt.Errorf("read missed WAL events %d..%d: %w", from, upto, err)
	}
	if n > 0 {
		s.logger.Info("clickhouse sink read undelivered WAL events", "from", from, "to", upto, "events", n)
	}
	return nil
}

// batchRoom is how many events a new batch makes room for: BatchSize, unless the
// delivery that opens it says fewer are coming (pending on the server, plus what
// a pull may already hold). A trickle then does not allocate full-size columns for
// a batch of a few events; a batch that outgrows its room still grows.
func (s *Sink) batchRoom(m jetstream.Msg) int {
	if m != nil {
		if meta, err := m.Metadata(); err == nil && meta.NumPending < uint64(s.cfg.BatchSize) {
			return min(s.cfg.BatchSize, int(meta.NumPending)+s.cfg.PullMaxMessages+1)
		}
	}
	return s.cfg.BatchSize
}

// add folds one record into the open batch and hands the batch over when full.
func (s *Sink) add(ctx, writeCtx context.Context, out chan<- *batch, rec wal.Record, ev *schemas.Event, rej *fold.Rejection, m jetstream.Msg) error {
	if s.open == nil {
		s.open = newBatch(s.batchRoom(m))
	}
	b := s.open
	opening := b.empty()
	if err := s.f.fold(ctx, rec, ev, rej, b); err != nil {
		return err // nothing was added
	}
	if opening {
		b.first, b.firstAt, s.openedAt = rec.Seq, rec.Time, time.Now()
		s.inflightMu.Lock()
		s.inflight = append(s.inflight, rec.Time)
		s.inflightMu.Unlock()
	}
	b.last, s.lastSeq = rec.Seq, rec.Seq
	if m != nil {
		b.ack = m
	}
	s.processed.Add(1)
	if b.events.len() >= s.cfg.BatchSize {
		return s.handOff(writeCtx, out)
	}
	return nil
}

// handOff seals the open batch and gives it to the writer, waiting while the writer
// is busy: that wait is the back-pressure that bounds memory during an outage.
func (s *Sink) handOff(writeCtx context.Context, out chan<- *batch) error {
	b := s.open
	if b == nil || b.empty() {
		return nil
	}
	s.f.seal(b)
	s.open = nil
	select {
	case out <- b:
		return nil
	case <-writeCtx.Done():
		return writeCtx.Err()
	}
}

// flush hands over the open batch and waits until the writer confirmed everything.
func (s *Sink) flush(writeCtx context.Context, out chan<- *batch) error {
	if err := s.handOff(writeCtx, out); err != nil {
		return err
	}
	bar := &batch{barrier: make(chan struct{})}
	select {
	case out <- bar:
	case <-writeCtx.Done():
		return writeCtx.Err()
	}
	select {
	case <-bar.barrier:
		return nil
	case <-writeCtx.Done():
		return writeCtx.Err()
	}
}

// writeLoop writes batches in order until in closes or ctx ends.
func (s *Sink) writeLoop(ctx context.Context, in <-chan *batch) {
	for b := range in {
		if b.barrier != nil {
			close(b.barrier)
			continue
		}
		if err := s.write(ctx, b); err != nil {
			return // ctx ended: what was not acked is redelivered to the next run
		}
	}
}

// insertJob is one table's share of a batch.
type insertJob struct {
	table string
	query string
	data  []any
	rows  int
}

func (s *Sink) jobs(b *batch) []insertJob {
	l := s.cfg.layout()
	job := func(table string, cols []column, data []any, rows int) insertJob {
		return insertJob{table, "INSERT INTO " + l.InsertTable(table) + " (" + columnNames(cols) + ")", data, rows}
	}
	jobs := []insertJob{
		job(TableEvents, eventColumns, b.events.columns(), b.events.len()),
		job(TableOrders, orderColumns, b.orders.columns(false), b.orders.len()),
	}
	for k := range numKinds {
		jobs = append(jobs, job(entityTables[kindNames[k]].table, indexColumns(), b.index[k].columns(true), b.index[k].len()))
	}
	return jobs
}

// write inserts every table's rows, retrying failed tables with backoff until
// ClickHouse confirms them all, then acks the batch. It fails only when ctx ends.
func (s *Sink) write(ctx context.Context, b *batch) error {
	start := time.Now()
	var pending []insertJob
	for _, j := range s.jobs(b) {
		if j.rows > 0 {
			pending = append(pending, j)
		}
	}
	backoff := s.cfg.RetryBackoff
	for attempt := 1; len(pending) > 0; attempt++ {
		errs := make([]error, len(pending))
		var wg sync.WaitGroup
		for i, j := range pending {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = s.insert(ctx, j, b)
			}()
		}
		wg.Wait()
		var failed []insertJob
		var firstErr error
		var tables []string
		for i, err := range errs {
			if err != nil {
				failed = append(failed, pending[i])
				tables = append(tables, pending[i].table)
				firstErr = cmp.Or(firstErr, err)
				s.failures.Add(1)
				s.m.batchFailures.Inc()
			} else {
				s.m.rows.WithLabelValues(pending[i].table).Add(float64(pending[i].rows))
				s.rows.Add(uint64(pending[i].rows))
			}
		}
		pending = failed
		if len(pending) == 0 {
			break
		}
		s.logger.Warn("clickhouse insert failed, retrying", "tables", tables, "wal_from", b.first,
			"wal_to", b.last, "attempt", attempt, "retry_in", backoff, "err", firstErr)
		if !retry.Sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(2*backoff, s.cfg.RetryMaxBackoff)
	}
	now := time.Now()
	s.m.batchSeconds.Observe(now.Sub(start).Seconds())
	s.m.events.Add(float64(b.events.len()))
	for _, t := range b.events.storedAt {
		s.m.eventLag.Observe(now.Sub(t).Seconds())
	}
	s.lags.observeSince(now, b.events.storedAt)
	s.confirmedSeq.Store(b.last)
	s.confirmed.Add(uint64(b.events.len()))
	s.batches.Add(1)
	s.inflightMu.Lock()
	if len(s.inflight) > 0 {
		s.inflight = s.inflight[1:]
	}
	s.inflightMu.Unlock()
	if b.ack != nil {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := b.ack.DoubleAck(actx); err != nil {
			// Harmless: the events are redelivered, skipped and acked again.
			s.logger.Debug("clickhouse sink ack failed", "wal_to", b.last, "err", err)
		}
		cancel()
	}
	return nil
}

// insert sends one table's rows as one INSERT, built afresh from the batch's
// columns (a batch whose Send failed cannot be re-sent).
func (s *Sink) insert(ctx context.Context, j insertJob, b *batch) error {
	ictx, cancel := context.WithTimeout(ctx, s.cfg.InsertTimeout)
	defer cancel()
	if s.features.DedupToken {
		token := fmt.Sprintf("orderflow:%s:%d-%d", j.table, b.first, b.last)
		ictx = ch.Context(ictx, ch.WithSettings(ch.Settings{"insert_deduplication_token": token}))
	}
	bt, err := s.conn.PrepareBatch(ictx, j.query)
	if err != nil {
		return fmt.Errorf("prepare insert into %s: %w", j.table, err)
	}
	defer bt.Close()
	for i, col := range j.data {
		if err := bt.Column(i).Append(col); err != nil {
			return fmt.Errorf("insert into %s, column %d: %w", j.table, i, err)
		}
	}
	if err := bt.Send(); err != nil {
		return fmt.Errorf("insert into %s: %w", j.table, err)
	}
	return nil
}
