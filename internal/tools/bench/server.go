package bench

import (
	"context"
	"io"
	"log/slog"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/adapters/embedded"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// server is a bench's private embedded server in a temp directory, with the
// topology provisioned and one client connection.
type server struct {
	dir   string
	srv   *embedded.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	quiet *slog.Logger
}

func startServer(ctx context.Context, name string, topo topology.Topology) (_ *server, err error) {
	s := &server{quiet: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.dir, err = os.MkdirTemp("", name); err != nil {
		return nil, err
	}
	if s.srv, err = embedded.Start(ctx, embedded.Config{DataDir: s.dir, Listen: "127.0.0.1:-1", Logger: s.quiet}); err != nil {
		return nil, err
	}
	if s.nc, err = nats.Connect(s.srv.ClientURL()); err != nil {
		return nil, err
	}
	if s.js, err = jetstream.New(s.nc); err != nil {
		return nil, err
	}
	if _, err = topology.Provision(ctx, s.js, topo); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *server) url() string { return s.srv.ClientURL() }

func (s *server) close() {
	if s.nc != nil {
		s.nc.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}
