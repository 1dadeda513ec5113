package estimator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// Config configures a Service.
type Config struct {
	// Tick is how often every open order is re-estimated; default 1s.
	Tick   time.Duration
	Now    func() time.Time
	Logger *slog.Logger
	// Published, if set, sees every event the service publishes (tests, logs).
	Published func(schemas.Event)
	// Name keys this estimator's checkpoint in KV estimator_checkpoints (a KV key
	// without dots; see CheckpointStore); default "estimator". Two estimators
	// running at once need different names.
	Name string
}

// Service follows the WAL and the location firehose and publishes estimator events.
//
// Restarts: the WAL is the estimator's memory, and the checkpoint (see
// Checkpoint) a bookmark in it. On start it loads its checkpoint, reads the WAL
// after it (from the beginning without one), its own events included, up to the
// last sequence stored at that moment, and publishes nothing before: so it knows
// every source_seq it used and every stage and eta it said, continues after them,
// and does not repeat them. An event whose publish failed, or that was pending at
// the checkpoint, is published again as the same event (same id, same seq). The
// checkpoint is written after a round when anything changed, at the pace
// checkpointPace sets.
type Service struct {
	cfg         Config
	nc          *nats.Conn
	js          jetstream.JetStream
	records     jetstream.KeyValue
	checkpoints *CheckpointStore

	mu      sync.Mutex
	model   *Model
	pending map[string]schemas.Event // published but not acknowledged
	walSeq  uint64                   // the last WAL message folded into model
	// walCreated identifies the WAL walSeq counts in (its creation time): from the
	// checkpoint until Run reads the stream's.
	walCreated time.Time
	changes    uint64 // counts changes to model, pending and walSeq
	saved      uint64 // changes when the checkpoint was last written

	nextCheckpoint time.Time // no checkpoint before (wall clock; Run's goroutine only)
}

// New returns a service on nc.
func New(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config) (*Service, error) {
	if cfg.Tick == 0 {
		cfg.Tick = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		cfg.Name = "estimator"
	}
	records, err := js.KeyValue(ctx, topology.DispatchBucket)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", topology.DispatchBucket, err)
	}
	kv, err := js.KeyValue(ctx, topology.EstimatorBucket)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", topology.EstimatorBucket, err)
	}
	checkpoints, err := NewCheckpointStore(kv, cfg.Name)
	if err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, nc: nc, js: js, records: records, checkpoints: checkpoints, model: NewModel(), pending: map[string]schemas.Event{}}, nil
}

// restore loads the checkpoint, if there is one.
func (s *Service) restore(ctx context.Context) error {
	c, found, err := s.checkpoints.Load(ctx)
	if err != nil {
		return fmt.Errorf("read the checkpoint: %w", err)
	}
	if !found {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.model, s.walSeq, s.walCreated = ModelFromState(c.Model), c.WALSeq, c.WALCreated
	for _, ev := range c.Pending {
		s.pending[ev.OrderID] = ev
	}
	return nil
}

// checkpointPace: after a checkpoint that took d (copying the model under the
// lock, encoding, writing), the next waits until checkpointPace×d has passed
// since it started, so checkpoints take at most a tenth of the estimator's time
// whatever the number of open orders: a few hundred are written every round,
// 100k every few seconds. The restart guarantees do not depend on how often; a
// later checkpoint only means more WAL to read again.
const checkpointPace = 10

// checkpoint writes what changed since the last write, if its pace allows.
func (s *Service) checkpoint(ctx context.Context) error {
	start := time.Now()
	if start.Before(s.nextCheckpoint) {
		return nil
	}
	s.mu.Lock()
	if s.changes == s.saved {
		s.mu.Unlock()
		return nil
	}
	c := Checkpoint{WALSeq: s.walSeq, WALCreated: s.walCreated, Model: s.model.State()}
	for _, ev := range s.pending {
		c.Pending = append(c.Pending, ev)
	}
	changes := s.changes
	s.mu.Unlock()
	st, err := s.checkpoints.Save(ctx, c)
	if err != nil {
		return fmt.Errorf("write the checkpoint: %w", err)
	}
	s.nextCheckpoint = start.Add(checkpointPace * time.Since(start))
	s.cfg.Logger.Debug("estimator checkpoint written", "wal_seq", c.WALSeq, "open_orders", len(c.Model.Orders),
		"generation", st.Generation, "bytes", st.Bytes, "chunks", st.Chunks, "encode", st.Encode, "write", st.Write)
	s.mu.Lock()
	s.saved = changes
	s.mu.Unlock()
	return nil
}

// Run serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if err := s.restore(ctx); err != nil {
		return err
	}
	sub, err := s.nc.Subscribe(dispatch.LocationsPrefix+"*", func(m *nats.Msg) {
		id, p, reason := dispatch.ParseLocation(m.Subject, m.Data, s.cfg.Now())
		if reason != "" {
			return
		}
		s.mu.Lock()
		s.model.Move(id, p)
		s.mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("subscribe to locations: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	stream, err := s.js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return fmt.Errorf("open the WAL: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("read the WAL: %w", err)
	}
	startLast := info.State.LastSeq
	if other := !s.walCreated.IsZero() && !s.walCreated.Equal(info.Created); other || s.walSeq > startLast {
		// The checkpoint counts in another WAL (this one was created again): its
		// sequences mean other events now. Start over from the WAL.
		s.cfg.Logger.Warn("estimator checkpoint is of another WAL; reading the WAL from the start", "checkpoint_seq", s.walSeq, "wal_last_seq", startLast,
			"checkpoint_wal_created", s.walCreated, "wal_created", info.Created)
		s.mu.Lock()
		s.model, s.pending, s.walSeq = NewModel(), map[string]schemas.Event{}, 0
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.walCreated = info.Created
	s.mu.Unlock()
	caughtUp := make(chan struct{})
	var once sync.Once
	if startLast <= s.walSeq {
		once.Do(func() { close(caughtUp) })
	}
	// Read by sequence, not through a consumer: the estimator's credentials may not
	// create consumers on the WAL (they could rewrite the lanes').
	followCtx, stopFollowing := context.WithCancel(ctx)
	followed := make(chan struct{})
	defer func() { stopFollowing(); <-followed }()
	go func() {
		defer close(followed)
		_ = wal.Follow(followCtx, s.js, s.walSeq+1, wal.FollowConfig{
			OnError: func(err error) { s.cfg.Logger.Warn("estimator: reading the WAL failed; retrying", "err", err) },
		}, func(r wal.Record) error {
			s.observe(followCtx, r.Seq, r.Subject, r.Data)
			if r.Seq >= startLast {
				once.Do(func() { close(caughtUp) })
			}
			return nil
		})
	}()
	select {
	case <-caughtUp:
	case <-ctx.Done():
		return nil
	}
	s.cfg.Logger.Info("estimator caught up with the WAL", "wal_seq", startLast)
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.round(ctx)
			if err := s.checkpoint(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("estimator checkpoint failed; retrying next round", "err", err)
			}
		}
	}
}

// observe folds WAL message seq; a platform assignment brings the order's places.
// The places are read before the lock, so folding the message, its places and
// the WAL position is one step a checkpoint sees whole or not at all.
func (s *Service) observe(ctx context.Context, seq uint64, walSubject string, body []byte) {
	ev, err := schemas.Decode(schemas.ProducerSubject(walSubject), body)
	var rec *dispatch.Record
	if err == nil && ev.Source == schemas.SourcePlatform && ev.DasherID != "" {
		rec = s.record(ctx, ev.OrderID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.walSeq = max(s.walSeq, seq)
	s.changes++
	if err != nil {
		return // the lanes send it to the DLQ; nothing to learn from it
	}
	s.model.Observe(*ev)
	if p, ok := s.pending[ev.OrderID]; ok && p.EventID == ev.EventID {
		delete(s.pending, ev.OrderID)
	}
	if rec != nil && rec.Dropoff != nil {
		s.model.SetPlaces(ev.OrderID, rec.Pickup, rec.Dropoff)
	}
}

// record reads an order's dispatch record, nil when there is none to read.
func (s *Service) record(ctx context.Context, orderID string) *dispatch.Record {
	e, err := s.records.Get(ctx, orderID)
	if err != nil {
		return nil
	}
	var rec dispatch.Record
	if json.Unmarshal(e.Value(), &rec) != nil {
		return nil
	}
	return &rec
}

// round re-estimates every open order and publishes what changed.
func (s *Service) round(ctx context.Context) {
	now := s.cfg.Now()
	var out []schemas.Event
	s.mu.Lock()
	for _, ev := range s.pending {
		out = append(out, ev)
	}
	for _, id := range s.model.Active() {
		if _, waiting := s.pending[id]; waiting {
			continue
		}
		if ev, ok := s.model.Decide(id, now); ok {
			s.pending[id] = ev
			s.changes++
			out = append(out, ev)
		}
	}
	s.mu.Unlock()
	for _, ev := range out {
		if err := s.publish(ctx, ev); err != nil {
			if !errors.Is(err, context.Canceled) {
				s.cfg.Logger.Warn("estimator publish failed; retrying", "order", ev.OrderID, "event", ev.EventID, "err", err)
			}
			continue
		}
		s.mu.Lock()
		if p, ok := s.pending[ev.OrderID]; ok && p.EventID == ev.EventID {
			delete(s.pending, ev.OrderID)
			s.changes++
		}
		s.mu.Unlock()
		if s.cfg.Published != nil {
			s.cfg.Published(ev)
		}
	}
}

func (s *Service) publish(ctx context.Context, ev schemas.Event) error {
	if ps := ev.Validate(); len(ps) > 0 {
		return ps
	}
	body, _ := json.Marshal(ev)
	m := nats.NewMsg(schemas.Subject(ev.Source, ev.OrderID))
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, ev.EventID)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := s.js.PublishMsg(ctx, m)
	return err
}
