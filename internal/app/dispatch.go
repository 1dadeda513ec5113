package app

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/services/dispatch"
)

// dispatchService is the dispatch service with the connection its firehose runs on.
type dispatchService struct {
	*dispatch.Service
	nc *nats.Conn
}

func (d dispatchService) close() { d.nc.Close() }

// newDispatch starts the dasher index and the dispatcher. The location firehose gets
// a connection of its own, so a burst of positions never queues ahead of reads or
// WAL writes.
func newDispatch(ctx context.Context, url string, opts []nats.Option, js jetstream.JetStream, orders dispatch.OrderReader,
	authOn bool, tokens *auth.Verifier, reg prometheus.Registerer, log *slog.Logger) (dispatchService, error) {
	conns, err := Connect(url, "orderflow-dispatch", 1, opts...)
	if err != nil {
		return dispatchService{}, err
	}
	cfg := dispatch.Config{Assign: dispatch.AssignConfig{Orders: orders}, Registerer: reg, Logger: log}
	if authOn {
		cfg.Tokens = tokens
	}
	svc, err := dispatch.New(ctx, conns[0], js, cfg)
	if err != nil {
		conns[0].Close()
		return dispatchService{}, err
	}
	return dispatchService{Service: svc, nc: conns[0]}, nil
}
