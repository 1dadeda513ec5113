package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/adapters/embedded"
)

// NATSEnv is a single JetStream server running in the test process.
type NATSEnv struct {
	// URL is the client URL; it stays the same across Restart.
	URL string
	// Conn is connected to URL and reconnects by itself after Restart.
	Conn *nats.Conn
	// JS is a JetStream context on Conn.
	JS jetstream.JetStream
	// Server is the running server; Restart replaces it.
	Server *embedded.Server

	cfg embedded.Config
}

// NATS starts a JetStream server with a file store in t.TempDir(). It is the
// same server `orderflow serve` embeds, so tests exercise production settings.
func NATS(t testing.TB) *NATSEnv {
	t.Helper()
	e := &NATSEnv{cfg: embedded.Config{
		DataDir:    t.TempDir(),
		Listen:     "127.0.0.1:-1",
		ServerName: "test",
		Logger:     serverLog(t, "nats-server"),
	}}
	e.start(t)
	e.URL = e.Server.ClientURL()
	// Keep the port, so Restart comes back where clients reconnect.
	e.cfg.Listen = e.Server.NATSServer().Addr().String()

	nc, err := nats.Connect(e.URL,
		nats.MaxReconnects(-1),
		// The nats.go default (2s) would make every Restart cost seconds.
		nats.ReconnectWait(20*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("testenv: connect to nats: %v", err)
	}
	e.Conn = nc
	e.JS, err = jetstream.New(nc)
	if err != nil {
		t.Fatalf("testenv: jetstream: %v", err)
	}
	t.Cleanup(func() {
		e.Conn.Close()
		e.Server.Shutdown()
	})
	return e
}

// Restart stops the server and starts it again on the same store and port, as
// after a process crash, and waits until Conn has reconnected. Shutdown is
// graceful; since acked writes are already in the OS page cache, a kill -9
// would lose nothing more (see package embedded), only skip the index flush.
func (e *NATSEnv) Restart(t testing.TB) {
	t.Helper()
	e.Server.Shutdown()
	e.start(t)
	deadline := time.Now().Add(10 * time.Second)
	for !e.Conn.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatalf("testenv: nats client did not reconnect within 10s after restart (status %s)", e.Conn.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Connected is not ready: a request sent while JetStream recovers its streams can
	// go unanswered and wait out its whole context. Wait until JetStream answers.
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := e.JS.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: JetStream not answering within 10s after restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *NATSEnv) start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := embedded.Start(ctx, e.cfg)
	if err != nil {
		t.Fatalf("testenv: start nats: %v", err)
	}
	e.Server = s
}
