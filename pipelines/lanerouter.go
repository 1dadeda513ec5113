package pipelines

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// LaneRouter is the Watermill side of a lane pipeline: one durable, pinned consumer
// per lane, each feeding its handler one delivery at a time, in WAL order.
type LaneRouter struct {
	router *message.Router
	nc     *nats.Conn
}

// LaneHandler handles one delivery of a lane.
type LaneHandler func(ctx context.Context, lane int, dl handlers.Delivery) error

// NewLaneRouter subscribes to consumer(i), an existing durable consumer of lane i,
// for each of topo's partitions. nc must be a connection of its own: Run drains it.
func NewLaneRouter(nc *nats.Conn, topo topology.Topology, log *slog.Logger, consumer func(lane int) string, handle LaneHandler) (*LaneRouter, error) {
	topo.SetDefaults()
	wlog := newWMLogger(log)
	sub, err := wmjs.NewSubscriber(wmjs.SubscriberConfig{
		Conn:                nc,
		Logger:              wlog,
		AckWaitTimeout:      topo.LaneAckWait,
		ResourceInitializer: existingLaneConsumer,
		ConsumeOptions: []jetstream.PullConsumeOpt{
			jetstream.PullPriorityGroup(topology.LaneGroup),
			jetstream.PullMaxMessages(1024),
			// Pull often enough that a live instance never loses its pin.
			jetstream.PullExpiry(max(time.Second, topo.LanePinnedTTL/3)),
		},
		// Acks need no round trip: the lane checkpoint, not the ack, is what makes an
		// effect durable (see handlers.Lane).
		AckAsync:    true,
		Unmarshaler: laneUnmarshaler{},
	})
	if err != nil {
		return nil, fmt.Errorf("lane subscriber: %w", err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return nil, err
	}
	for i := 0; i < topo.Partitions; i++ {
		router.AddConsumerHandler("lane-handler-"+consumer(i), consumer(i), sub, func(m *message.Message) error {
			dl, err := deliveryOf(m)
			if err != nil {
				return err
			}
			return handle(m.Context(), i, dl)
		})
	}
	return &LaneRouter{router: router, nc: nc}, nil
}

// Run delivers until ctx ends, then stops deliveries, lets the ones under way finish,
// and stops the router.
func (r *LaneRouter) Run(ctx context.Context) error {
	routerCtx, stopRouter := context.WithCancel(context.Background())
	defer stopRouter()
	go func() {
		select {
		case <-ctx.Done():
		case <-routerCtx.Done():
			return
		}
		r.drainDeliveries()
		stopRouter()
	}()
	return r.router.Run(routerCtx)
}

// drainDeliveries stops JetStream deliveries and lets the ones already received
// finish before the router stops. watermill-nats closes its output channel on
// shutdown while a delivery callback may still send to it, which panics; draining
// the connection first means no callback is running when that happens.
func (r *LaneRouter) drainDeliveries() {
	closed := make(chan struct{})
	r.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := r.nc.Drain(); err != nil {
		return
	}
	select {
	case <-closed:
	case <-time.After(15 * time.Second):
	}
}

// Running is closed once every lane handler subscribed.
func (r *LaneRouter) Running() chan struct{} { return r.router.Running() }
