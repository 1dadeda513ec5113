package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Config wires a Service.
type Config struct {
	Locations LocationsConfig
	Assign    AssignConfig
	// Tokens, when set, guards assign and its actions (serve --auth).
	Tokens     TokenVerifier
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Service is one instance's dispatch: its index fed by the firehose, the
// dispatcher, and their HTTP routes.
type Service struct {
	Index      *Index
	Locations  *Locations
	Dispatcher *Dispatcher
	js         jetstream.JetStream
	http       *HTTP
}

// New builds the service. nc carries the firehose (give it a connection of its
// own: a slow consumer there must not delay anything else); js the KV and WAL writes.
func New(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg Config) (*Service, error) {
	cfg.Locations.Registerer, cfg.Assign.Registerer = cfg.Registerer, cfg.Registerer
	cfg.Locations.Logger, cfg.Assign.Logger = cfg.Logger, cfg.Logger
	ix := NewIndex(0)
	l, err := NewLocations(nc, ix, cfg.Locations)
	if err != nil {
		return nil, err
	}
	d, err := NewDispatcher(ctx, js, ix, cfg.Assign)
	if err != nil {
		return nil, err
	}
	return &Service{Index: ix, Locations: l, Dispatcher: d, js: js, http: NewHTTP(ix, d, cfg.Tokens)}, nil
}

// Run follows the firehose, and the milestones that free dashers, until ctx ends
// or one of them fails.
func (s *Service) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	go func() { errs <- s.Locations.Run(ctx, s.js) }()
	go func() { errs <- s.Dispatcher.FollowMilestones(ctx) }()
	err := <-errs
	cancel()
	return errors.Join(err, <-errs)
}

// Handler serves Routes.
func (s *Service) Handler() http.Handler { return s.http.Handler() }
