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
}

// Service follows the WAL and the location firehose and publishes estimator events.
//
// Restarts: the WAL is the estimator's memory. On start it reads the WAL from the
// beginning (its own events included) up to the last sequence stored at that
// moment, and publishes nothing before: so it knows every source_seq it used and
// every stage and eta it said, continues after them, and does not repeat them. An
// event whose publish failed is retried as the same event (same id, same seq).
type Service struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	records jetstream.KeyValue

	mu      sync.Mutex
	model   *Model
	pending map[string]schemas.Event // published but not acknowledged
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
	records, err := js.KeyValue(ctx, topology.DispatchBucket)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", topology.DispatchBucket, err)
	}
	return &Service{cfg: cfg, nc: nc, js: js, records: records, model: NewModel(), pending: map[string]schemas.Event{}}, nil
}

// Run serves until ctx ends.
func (s *Service) Run(ctx context.Context) error {
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
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return fmt.Errorf("follow the WAL: %w", err)
	}
	caughtUp := make(chan struct{})
	var once sync.Once
	if startLast == 0 {
		once.Do(func() { close(caughtUp) })
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		meta, _ := m.Metadata()
		s.observe(ctx, m.Subject(), m.Data())
		if meta != nil && meta.Sequence.Stream >= startLast {
			once.Do(func() { close(caughtUp) })
		}
	})
	if err != nil {
		return fmt.Errorf("follow the WAL: %w", err)
	}
	defer cc.Stop()
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
		}
	}
}

// observe folds one WAL message; a platform assignment brings the order's places.
func (s *Service) observe(ctx context.Context, walSubject string, body []byte) {
	ev, err := schemas.Decode(schemas.ProducerSubject(walSubject), body)
	if err != nil {
		return // the lanes send it to the DLQ; nothing to learn from it
	}
	s.mu.Lock()
	s.model.Observe(*ev)
	if p, ok := s.pending[ev.OrderID]; ok && p.EventID == ev.EventID {
		delete(s.pending, ev.OrderID)
	}
	s.mu.Unlock()
	if ev.Source == schemas.SourcePlatform && ev.DasherID != "" {
		e, err := s.records.Get(ctx, ev.OrderID)
		if err != nil {
			return
		}
		var rec dispatch.Record
		if json.Unmarshal(e.Value(), &rec) == nil && rec.Dropoff != nil {
			s.mu.Lock()
			s.model.SetPlaces(ev.OrderID, rec.Pickup, rec.Dropoff)
			s.mu.Unlock()
		}
	}
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
