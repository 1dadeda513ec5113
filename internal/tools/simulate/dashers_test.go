package simulate_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/tools/simulate"
)

func TestDashersMoveAndFollowTheDeadBand(t *testing.T) {
	env := testenv.NATS(t)
	var mu sync.Mutex
	last := map[string]dispatch.Position{}
	msgs := 0
	sub, err := env.Conn.Subscribe(dispatch.LocationsPrefix+"*", func(m *nats.Msg) {
		id, p, reason := dispatch.ParseLocation(m.Subject, m.Data, time.Now())
		mu.Lock()
		defer mu.Unlock()
		if reason != "" {
			t.Errorf("simulated position rejected: %s %s", reason, m.Data)
			return
		}
		if prev, ok := last[id]; ok && !dispatch.DefaultDeadBand.ShouldSend(prev, p) {
			t.Errorf("%s sent %+v inside the dead band of %+v", id, p, prev)
		}
		last[id] = p
		msgs++
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	// A 10 ms tick stands for a second: 150 fixes per dasher, about 5 s of sends.
	sent, err := simulate.Dashers(ctx, env.Conn, simulate.DashersConfig{N: 50, Seed: 3, Tick: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(last) != 50 || msgs != sent || sent < 50 {
		t.Fatalf("%d dashers, %d received of %d sent", len(last), msgs, sent)
	}
}
