package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestNATSRestartKeepsStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := NATS(t)
	if _, err := n.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.JS.Publish(ctx, "t.1", []byte("before")); err != nil {
		t.Fatal(err)
	}
	url := n.URL

	n.Restart(t)

	if n.URL != url {
		t.Fatalf("URL changed across restart: %s -> %s", url, n.URL)
	}
	if _, err := n.JS.Publish(ctx, "t.1", []byte("after")); err != nil {
		t.Fatal(err)
	}
	s, err := n.JS.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().State.Msgs; got != 2 {
		t.Fatalf("stream has %d messages after restart, want 2", got)
	}
}

// TestNATSClusterSurvivesStreamLeaderLoss stops the node leading an R3 stream:
// the stream must keep every acked message and accept new publishes.
func TestNATSClusterSurvivesStreamLeaderLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	c := NATSCluster(t, 3)
	t.Logf("3-node cluster with meta leader in %s", time.Since(start).Round(time.Millisecond))

	stream, err := c.JS.CreateStream(ctx, jetstream.StreamConfig{
		Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3, Storage: jetstream.FileStorage,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := c.JS.Publish(ctx, "r3.x", fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leader := c.NodeIndex(info.Cluster.Leader)
	if leader < 0 {
		t.Fatalf("unknown stream leader %q", info.Cluster.Leader)
	}

	stopped := time.Now()
	c.StopNode(leader)

	// Publishing retries until a new stream leader is elected and the client has
	// failed over, as a producer would. Each attempt needs its own timeout: a
	// publish that reached the stopping node is never answered.
	var lastErr error
	for ctx.Err() == nil {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, lastErr = c.JS.Publish(attempt, "r3.x", []byte("after"), jetstream.WithMsgID("after"))
		cancel()
		if lastErr == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if lastErr != nil {
		t.Fatalf("publish after stopping node %d: %v", leader, lastErr)
	}
	t.Logf("stopped leader n%d; publishing again after %s", leader, time.Since(stopped).Round(time.Millisecond))

	info, err = stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 11 {
		t.Fatalf("stream has %d messages, want 11", info.State.Msgs)
	}
	if info.Cluster.Leader == "" || c.NodeIndex(info.Cluster.Leader) == leader {
		t.Fatalf("stream leader is %q after stopping n%d", info.Cluster.Leader, leader)
	}

	// The stopped node catches up when it comes back.
	c.StartNode(t, leader)
	c.WaitMetaLeader(t)
}
