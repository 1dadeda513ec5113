package testenv

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// LeaseLog records every change of every dasher lease, in the bucket's order.
type LeaseLog struct {
	mu  sync.Mutex
	ops map[string][]string // dasher -> "put:<order>:<state>" | "del"
}

// WatchLeases records the changes of KV dasher_leases until the test ends.
func (e *NATSEnv) WatchLeases(t testing.TB) *LeaseLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := e.JS.KeyValue(ctx, topology.LeasesBucket)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	log := &LeaseLog{ops: map[string][]string{}}
	go func() {
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			op := "del"
			if e.Operation() == jetstream.KeyValuePut {
				var l dispatch.Lease
				if err := json.Unmarshal(e.Value(), &l); err != nil {
					t.Errorf("lease %s: %v", e.Key(), err)
				}
				op = "put:" + l.OrderID + ":" + l.State
			}
			log.mu.Lock()
			log.ops[e.Key()] = append(log.ops[e.Key()], op)
			log.mu.Unlock()
		}
	}()
	return log
}

// Check fails unless every dasher's leases form a sequence of single-order spans
// (a lease for another order is only ever taken after the previous one ended),
// each beginning reserved. It returns the number of spans.
func (l *LeaseLog) Check(t testing.TB) (spans int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for dasher, ops := range l.ops {
		holder := ""
		for _, op := range ops {
			if op == "del" {
				holder = ""
				continue
			}
			i := strings.LastIndexByte(op, ':')
			order, state := op[len("put:"):i], op[i+1:]
			if holder != "" && holder != order {
				t.Errorf("dasher %s: leased to %s while holding %s (%v)", dasher, order, holder, ops)
			}
			if holder == "" {
				if state != dispatch.LeaseReserved {
					t.Errorf("dasher %s: a lease began %s", dasher, state)
				}
				spans++
			}
			holder = order
		}
	}
	return spans
}

// Orders lists the orders dasher's leases named, in order, one entry per span.
func (l *LeaseLog) Orders(dasher string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	holder := ""
	for _, op := range l.ops[dasher] {
		if op == "del" {
			holder = ""
			continue
		}
		order := op[len("put:"):strings.LastIndexByte(op, ':')]
		if order != holder {
			out = append(out, order)
		}
		holder = order
	}
	return out
}
