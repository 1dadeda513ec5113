// Package pipelines wires handlers onto lanes: one file per pipeline. The status
// pipeline runs one Watermill handler per partition of ORDER_EVENTS, each call
// carrying one pulled batch of the partition's events.
package pipelines

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// StatusPipeline is the status pipeline: WAL lanes -> decode -> dedupe -> resolve -> KV.
type StatusPipeline struct {
	router *LaneRouter
	lanes  []*handlers.Lane
	// handling is the lanes' context for deliveries: it outlives a delivery's own
	// deadline (a resync may replay a long stretch of the WAL) and ends
	// ShutdownGrace after Run's context, so a stop never hangs on a NATS that does
	// not answer. A batch cut short stays unacked and is redelivered.
	handling     context.Context
	stopHandling context.CancelFunc
}

// ShutdownGrace is how long deliveries in hand may take to finish once the
// pipeline is asked to stop.
const ShutdownGrace = 10 * time.Second

// NewStatusPipeline puts a handlers.Lane behind each lane's durable consumer. nc must
// be a connection of its own (see NewLaneRouter), and the lanes' writes (through
// deps) must go over another, which still flows after nc is closed.
func NewStatusPipeline(nc *nats.Conn, topo topology.Topology, cfg handlers.LaneConfig, deps handlers.Deps) (*StatusPipeline, error) {
	topo.SetDefaults()
	p := &StatusPipeline{}
	p.handling, p.stopHandling = context.WithCancel(context.Background())
	for i := 0; i < topo.Partitions; i++ {
		p.lanes = append(p.lanes, handlers.NewLane(i, cfg, deps))
	}
	router, err := NewLaneRouter(nc, topo, deps.Logger, topology.LaneConsumer, func(ctx context.Context, lane int, batch []handlers.Delivery) error {
		return p.lanes[lane].HandleBatch(p.handling, batch)
	}, deps.Metrics.HandlerSeconds)
	if err != nil {
		return nil, fmt.Errorf("status pipeline: %w", err)
	}
	p.router = router
	return p, nil
}

// Run processes lanes until ctx ends, then flushes what it holds.
func (p *StatusPipeline) Run(ctx context.Context) error {
	laneCtx, stopLanes := context.WithCancel(context.Background())
	defer stopLanes()
	defer p.stopHandling()
	stopAfter := context.AfterFunc(ctx, func() { time.AfterFunc(ShutdownGrace, p.stopHandling) })
	defer stopAfter()
	var wg sync.WaitGroup
	for _, l := range p.lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Run(laneCtx)
		}()
	}
	err := p.router.Run(ctx)
	// The router stopped taking events; make what it handled durable before leaving.
	flushCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, l := range p.lanes {
		if ferr := l.Flush(flushCtx); ferr != nil {
			err = errors.Join(err, fmt.Errorf("flush lane: %w", ferr))
		}
	}
	stopLanes()
	wg.Wait()
	return err
}

// Running is closed once every lane handler subscribed.
func (p *StatusPipeline) Running() chan struct{} { return p.router.Running() }
