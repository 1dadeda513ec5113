package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// The peer phase's own resources, so it never touches what the pipeline reads or
// writes: a bucket shaped as order_status, and one durable consumer per partition.
const (
	peerBucket         = "bench_peer_status"
	peerConsumerPrefix = "bench-peer-"
)

// PeerResult is the peer phase: the design the libraries' own examples lead to, run
// on the same backlog. A Watermill router over watermill-nats calls its handler once
// per event; the handler reads the order's snapshot from KV, folds the event in with
// the resolver, writes the snapshot back with a compare-and-set on the revision it
// read (retrying on conflict), and the message is acked synchronously (the
// subscriber's default double ack). It does less than the pipeline (no milestones, no
// DLQ, no checkpoints) and is given the same parallelism (one subscription per
// partition), so the pipeline's ratio to it is, if anything, understated.
type PeerResult struct {
	// Events handled within the time budget, out of the backlog's; Complete when all.
	Events   int  `json:"events"`
	Complete bool `json:"complete"`
	// Rate is Events over the time they took.
	Rate        float64 `json:"per_s"`
	CPUPerEvent float64 `json:"cpu_us_per_event"`
	// Writes and Conflicts are snapshot compare-and-sets made and refused.
	Writes    int64 `json:"snapshot_writes"`
	Conflicts int64 `json:"conflicts"`
}

// peerHandler is the per-event handler: read, fold, compare-and-set, in one call.
type peerHandler struct {
	kv jetstream.KeyValue
	// calls counts every call, handled the events folded or skipped.
	calls, handled    atomic.Int64
	writes, conflicts atomic.Int64
	// stopping makes every later call refuse its message at once, so the router can
	// be emptied and stopped without waiting for the rest of the backlog.
	stopping atomic.Bool
}

var errPeerStopping = errors.New("peer phase over")

func (h *peerHandler) handle(m *message.Message) error {
	h.calls.Add(1)
	if h.stopping.Load() {
		return errPeerStopping
	}
	seq, _ := strconv.ParseUint(m.Metadata.Get(peerMDSeq), 10, 64)
	ev, rej := fold.Classify(fold.Record{Seq: seq, Subject: m.Metadata.Get(peerMDSubject), Data: m.Payload})
	if rej != nil {
		// The pipeline sends these to the DLQ; the peer just skips them.
		h.handled.Add(1)
		return nil
	}
	ctx := m.Context()
	for {
		st, ob, rev := resolver.New(ev.OrderID), outbox.Outbox{}, uint64(0)
		e, err := h.kv.Get(ctx, ev.OrderID)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("get snapshot %s: %w", ev.OrderID, err)
		default:
			if st, ob, err = snapshot.Decode(e.Value()); err != nil {
				return fmt.Errorf("decode snapshot %s: %w", ev.OrderID, err)
			}
			rev = e.Revision()
		}
		d, ok := fold.Apply(st, ev, seq)
		if !ok || !d.Persist {
			h.handled.Add(1)
			return nil
		}
		data, err := snapshot.Encode(st, ob)
		if err != nil {
			return fmt.Errorf("encode snapshot %s: %w", ev.OrderID, err)
		}
		if rev == 0 {
			_, err = h.kv.Create(ctx, ev.OrderID, data)
		} else {
			_, err = h.kv.Update(ctx, ev.OrderID, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) {
			h.conflicts.Add(1)
			continue // someone wrote it since the read: read again and refold
		}
		if err != nil {
			return fmt.Errorf("write snapshot %s: %w", ev.OrderID, err)
		}
		h.writes.Add(1)
		h.handled.Add(1)
		return nil
	}
}

// Watermill metadata the peer's unmarshaler sets.
const (
	peerMDSubject = "subject"
	peerMDSeq     = "seq"
)

// peerUnmarshaler hands the handler the stored subject (the source and order come
// from it) and the WAL sequence. Unlike watermill-nats's default it never fails:
// the subscriber dereferences the message after an unmarshal error.
type peerUnmarshaler struct{}

func (peerUnmarshaler) Unmarshal(m jetstream.Msg) (*message.Message, error) {
	md := message.Metadata{peerMDSubject: m.Subject()}
	if meta, err := m.Metadata(); err == nil {
		md[peerMDSeq] = strconv.FormatUint(meta.Sequence.Stream, 10)
	}
	wm := message.NewMessage(md[peerMDSeq], m.Data())
	wm.Metadata = md
	return wm, nil
}

// peerPhase runs the peer on the WAL's first n events, into its own bucket and
// consumers, until it has handled them all or budget has passed, and returns the rate
// over what it handled. It removes its consumers; the caller removes the bucket
// (peerBucket) once done with it.
func peerPhase(ctx context.Context, url string, js jetstream.JetStream, topo topology.Topology, n int, budget time.Duration) (PeerResult, error) {
	topo.SetDefaults()
	bucket := topo.StatusBucketConfig()
	bucket.Bucket, bucket.Description = peerBucket, "orderflow bench: the peer phase's snapshots"
	kv, err := js.CreateKeyValue(ctx, bucket)
	if err != nil {
		return PeerResult{}, fmt.Errorf("peer bucket: %w", err)
	}
	name := func(lane int) string { return fmt.Sprintf("%s%d", peerConsumerPrefix, lane) }
	deleteConsumers := func() {
		for i := 0; i < topo.Partitions; i++ {
			_ = js.DeleteConsumer(context.Background(), topology.EventsStream, name(i))
		}
	}
	defer deleteConsumers()
	for i := 0; i < topo.Partitions; i++ {
		if _, err := js.CreateOrUpdateConsumer(ctx, topology.EventsStream, jetstream.ConsumerConfig{
			Durable: name(i), Description: "orderflow bench: peer phase",
			FilterSubject: topology.LaneSubject(i), AckPolicy: jetstream.AckExplicitPolicy,
		}); err != nil {
			return PeerResult{}, err
		}
	}

	// The router's subscriber drains its connection when it closes: it gets its own.
	rc, err := nats.Connect(url)
	if err != nil {
		return PeerResult{}, err
	}
	defer rc.Close()
	sub, err := wmjs.NewSubscriber(wmjs.SubscriberConfig{
		Conn:        rc,
		Logger:      watermill.NopLogger{},
		Unmarshaler: peerUnmarshaler{},
		ResourceInitializer: func(ctx context.Context, js jetstream.JetStream, topic string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
			c, err := js.Consumer(ctx, topology.EventsStream, topic)
			return c, nil, err
		},
	})
	if err != nil {
		return PeerResult{}, err
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	if err != nil {
		return PeerResult{}, err
	}
	h := &peerHandler{kv: kv}
	for i := 0; i < topo.Partitions; i++ {
		router.AddConsumerHandler(name(i), name(i), sub, h.handle)
	}

	runCtx, stopRouter := context.WithCancel(ctx)
	defer stopRouter()
	ran := make(chan error, 1)
	cpu, start := processCPU(), time.Now()
	go func() { ran <- router.Run(runCtx) }()
	deadline := time.NewTimer(budget)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var res PeerResult
wait:
	for {
		select {
		case <-tick.C:
			if h.handled.Load() >= int64(n) {
				break wait
			}
		case <-deadline.C:
			break wait
		case err := <-ran:
			return res, fmt.Errorf("peer router stopped: %v", err)
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	elapsed, used := time.Since(start), processCPU()-cpu
	res.Events = int(h.handled.Load())
	res.Complete = res.Events >= n
	res.Rate = float64(res.Events) / elapsed.Seconds()
	res.CPUPerEvent = float64(used) / float64(time.Microsecond) / float64(max(res.Events, 1))
	res.Writes, res.Conflicts = h.writes.Load(), h.conflicts.Load()

	// Stop: refuse what is still buffered, stop the server's deliveries, and close
	// the router only once no delivery is under way (watermill-nats closes its output
	// channel on shutdown while a delivery callback may still be sending to it).
	h.stopping.Store(true)
	deleteConsumers()
	quiet(&h.calls, 200*time.Millisecond)
	stopRouter()
	<-ran
	return res, nil
}

// quiet returns once counter has not moved for d.
func quiet(counter *atomic.Int64, d time.Duration) {
	for last := counter.Load(); ; {
		time.Sleep(d)
		now := counter.Load()
		if now == last {
			return
		}
		last = now
	}
}
