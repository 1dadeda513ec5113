// Package testrun holds what integration tests do around a running pipeline. It is
// apart from testenv because it needs the pipeline (internal/app), which the
// ClickHouse sink's own tests, importing testenv, must not.
package testrun

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
)

// PublishDrained generates the seeded workload cfg describes, publishes it with
// acks and waits until the running pipeline has made all of it durable.
func PublishDrained(t testing.TB, js jetstream.JetStream, cfg simulate.Config) ([]simulate.Message, simulate.Summary) {
	t.Helper()
	msgs, sum, err := simulate.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := simulate.PublishAll(ctx, js, msgs, 0); err != nil {
		t.Fatal(err)
	}
	if err := pipelines.WaitDrained(ctx, js, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	return msgs, sum
}
