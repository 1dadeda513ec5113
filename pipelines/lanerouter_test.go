package pipelines

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// TestLaneRouterHandsOverOrderedBatches: each lane's handler gets its partition's
// events in WAL order, with consecutive consumer sequences and as typed values;
// headers travel only when the lane must reject the event for them; and once the
// handler returned, every event is acked, on AckAll consumers and on consumers
// provisioned with explicit acks alike.
func TestLaneRouterHandsOverOrderedBatches(t *testing.T) {
	env := testenv.NATS(t)
	ctx := context.Background()
	topo := topology.Topology{Partitions: 2}
	if _, err := topology.Provision(ctx, env.JS, topo); err != nil {
		t.Fatal(err)
	}
	env.ExplicitAckLane(t, topo, 0)

	const n = 3000
	reserved := map[string]bool{}
	for i := 0; i < n; i++ {
		m := nats.NewMsg(fmt.Sprintf("orders.events.driver.o-%d", i%50))
		m.Data = []byte(`{}`)
		if i%500 == 7 {
			m.Header.Set("Nats-Stream", "forged") // reserved: the lane must see it
			reserved[m.Subject] = true
		} else {
			m.Header.Set("Trace", "t") // ordinary: not carried
		}
		if _, err := env.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}

	var mu sync.Mutex
	got := map[int][]handlers.Delivery{}
	total := 0
	done := make(chan struct{})
	nc, err := nats.Connect(env.URL)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewLaneRouter(nc, topo, slog.New(slog.DiscardHandler), topology.LaneConsumer, func(_ context.Context, lane int, batch []handlers.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		got[lane] = append(got[lane], batch...)
		if total += len(batch); total == n {
			close(done)
		}
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- r.Run(runCtx) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("handlers got %d of %d events", total, n)
	}
	stop()
	if err := <-ran; err != nil {
		t.Fatalf("router: %v", err)
	}

	carried := 0
	for lane := 0; lane < topo.Partitions; lane++ {
		dls := got[lane]
		if len(dls) == 0 {
			t.Fatalf("lane %d got nothing", lane)
		}
		for i, dl := range dls {
			if p, _ := topology.PartitionOf(dl.Record.Subject); p != lane {
				t.Fatalf("lane %d got %s", lane, dl.Record.Subject)
			}
			if dl.ConsumerSeq != uint64(i+1) {
				t.Fatalf("lane %d delivery %d has consumer sequence %d", lane, i, dl.ConsumerSeq)
			}
			if i > 0 && dl.Record.Seq <= dls[i-1].Record.Seq {
				t.Fatalf("lane %d: WAL %d after %d", lane, dl.Record.Seq, dls[i-1].Record.Seq)
			}
			if dl.Record.Time.IsZero() || string(dl.Record.Data) != "{}" {
				t.Fatalf("lane %d delivery %d: %+v", lane, i, dl.Record)
			}
			if dl.Record.Header != nil {
				carried++
				if dl.Record.Header["Nats-Stream"] == nil || dl.Record.Header["Nats-Pin-Id"] != nil {
					t.Fatalf("carried headers %v: want the stored ones, without the consumer's pin", dl.Record.Header)
				}
			}
		}
		// The server takes acks in asynchronously: give it a moment.
		var info *jetstream.ConsumerInfo
		for wait := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if info, err = mustConsumer(t, env.JS, lane).Info(ctx); err != nil {
				t.Fatal(err)
			}
			if info.NumAckPending == 0 || time.Now().After(wait) {
				break
			}
		}
		if info.NumAckPending != 0 || info.AckFloor.Stream != dls[len(dls)-1].Record.Seq {
			t.Fatalf("lane %d (%s): %d unacked, ack floor %d, want 0 and %d", lane, info.Config.AckPolicy, info.NumAckPending, info.AckFloor.Stream, dls[len(dls)-1].Record.Seq)
		}
	}
	if want := n / 500; carried != want {
		t.Fatalf("headers carried on %d deliveries, want the %d with a reserved header", carried, want)
	}
}

func mustConsumer(t *testing.T, js jetstream.JetStream, lane int) jetstream.Consumer {
	t.Helper()
	c, err := js.Consumer(context.Background(), topology.EventsStream, topology.LaneConsumer(lane))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
