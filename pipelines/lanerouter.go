package pipelines

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// LaneRouter is the Watermill side of a lane pipeline: one durable, pinned consumer
// per lane, each feeding its handler one pulled batch at a time, in WAL order.
//
// Watermill does what it is for here: the router runs the handlers, the Recoverer
// middleware turns a handler panic into a nack (JetStream redelivers, the lane
// resyncs), and a middleware times each call. Poison handling stays in the lane:
// one event of a batch, not the batch, is poison, and its DLQ copy must be durable
// before the lane checkpoint passes it.
type LaneRouter struct {
	router *message.Router
	sub    *laneSubscriber
	nc     *nats.Conn
}

// LaneHandler handles one pulled batch of a lane's deliveries, in order.
type LaneHandler func(ctx context.Context, lane int, batch []handlers.Delivery) error

// maxBatch bounds one handler call; it matches the consumer's pull size.
const maxBatch = 1024

// NewLaneRouter subscribes to consumer(i), an existing durable consumer of lane i,
// for each of topo's partitions. nc must be a connection of its own: Run closes it.
// handlerSeconds, when set, observes each handler call.
func NewLaneRouter(nc *nats.Conn, topo topology.Topology, log *slog.Logger, consumer func(lane int) string, handle LaneHandler, handlerSeconds interface{ Observe(float64) }) (*LaneRouter, error) {
	topo.SetDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	sub := newLaneSubscriber(js, maxBatch,
		jetstream.PullPriorityGroup(topology.LaneGroup),
		jetstream.PullMaxMessages(maxBatch),
		// Pull often enough that a live instance never loses its pin.
		jetstream.PullExpiry(max(time.Second, topo.LanePinnedTTL/3)),
	)
	wlog := newWMLogger(log)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return nil, err
	}
	router.AddMiddleware(middleware.Recoverer)
	if handlerSeconds != nil {
		router.AddMiddleware(timed(handlerSeconds))
	}
	for i := 0; i < topo.Partitions; i++ {
		router.AddConsumerHandler("lane-handler-"+consumer(i), consumer(i), sub, func(m *message.Message) error {
			return handle(m.Context(), i, batchOf(m))
		})
	}
	return &LaneRouter{router: router, sub: sub, nc: nc}, nil
}

// timed observes each handler call's duration.
func timed(h interface{ Observe(float64) }) message.HandlerMiddleware {
	return func(next message.HandlerFunc) message.HandlerFunc {
		return func(m *message.Message) ([]*message.Message, error) {
			start := time.Now()
			out, err := next(m)
			h.Observe(time.Since(start).Seconds())
			return out, err
		}
	}
}

// Run delivers until ctx ends, then stops pulling, lets the deliveries already
// received be handled and acked, and stops the router.
func (r *LaneRouter) Run(ctx context.Context) error {
	routerCtx, stopRouter := context.WithCancel(context.Background())
	defer stopRouter()
	go func() {
		select {
		case <-ctx.Done():
		case <-routerCtx.Done():
			return
		}
		r.sub.stopConsuming()
		idle := make(chan struct{})
		go func() {
			r.sub.loops.Wait()
			close(idle)
		}()
		select {
		case <-idle:
		case <-time.After(15 * time.Second):
			_ = r.sub.Close() // what is still in hand is redelivered
		}
		stopRouter()
	}()
	err := r.router.Run(routerCtx)
	// Acks are fire-and-forget publishes: flush them to the server before closing.
	if ferr := r.nc.FlushTimeout(5 * time.Second); ferr != nil && err == nil && !r.nc.IsClosed() {
		err = fmt.Errorf("flush lane acks: %w", ferr)
	}
	r.nc.Close()
	return err
}

// Running is closed once every lane handler subscribed.
func (r *LaneRouter) Running() chan struct{} { return r.router.Running() }
