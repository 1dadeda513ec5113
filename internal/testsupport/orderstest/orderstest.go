// Package orderstest builds the read path over a test JetStream, for the tests
// of the packages that serve reads.
package orderstest

import (
	"context"
	"testing"
	"time"

	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/services/orders"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
)

// ReadPath is a reader with the WAL and the snapshot store it reads.
type ReadPath struct {
	Log    *wal.Log
	Snaps  *snapshot.Store
	Reader *orders.Reader
}

// New opens the read path over env, a provisioned WAL (testenv.WAL).
func New(t testing.TB, env *testenv.NATSEnv) ReadPath {
	t.Helper()
	ctx := context.Background()
	log, err := wal.Open(ctx, env.JS)
	if err != nil {
		t.Fatalf("orderstest: %v", err)
	}
	snaps, err := snapshot.Open(ctx, env.JS, time.Hour)
	if err != nil {
		t.Fatalf("orderstest: %v", err)
	}
	return ReadPath{Log: log, Snaps: snaps, Reader: orders.NewReader(log, snaps, 100)}
}
