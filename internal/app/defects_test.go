package app_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/internal/testsupport/testrun"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/sinks/archive"
	chsink "github.com/orderflow/orderflow/sinks/clickhouse"
)

// TestServeStopsWhenTheArchiveKeepsFailing: an archive whose every run fails (here
// a failpoint after the files) stops serve with an error naming it, after
// MaxFailures runs. Before, Archiver.Run swallowed every failure and serve ran on
// with a WAL nobody purged.
func TestServeStopsWhenTheArchiveKeepsFailing(t *testing.T) {
	env := testenv.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	failing := errors.New("disk on fire")
	cfg := app.ServeConfig{
		NATSURL: env.URL, HTTPListen: "127.0.0.1:0", Topology: topology.Topology{Partitions: 2},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Archive: archive.Config{
			Location: t.TempDir(), MinAge: 0, Interval: time.Second,
			Failpoint: func(string) error { return failing },
		},
	}
	started := make(chan struct{})
	cfg.Started = func(app.Addrs) { close(started) }
	done := make(chan error, 1)
	go func() { done <- app.Serve(ctx, cfg) }()
	returned := false
	t.Cleanup(func() {
		cancel()
		if !returned {
			<-done
		}
	})
	select {
	case <-started:
	case err := <-done:
		returned = true
		t.Fatalf("serve stopped before serving: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not start within 20s")
	}
	testrun.PublishDrained(t, env.JS, simulate.Config{Seed: 5, Orders: 10, InvalidRate: simulate.Off})
	select {
	case err := <-done:
		returned = true
		if !errors.Is(err, archive.ErrFailing) || !errors.Is(err, failing) {
			t.Fatalf("serve stopped with %v, want the archive's persistent failure", err)
		}
		t.Logf("serve: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("serve still runs after 90s of an archive failing every run")
	}
}

// TestServeStartsWhileClickHouseIsDown: the ClickHouse sink migrates the schema
// itself and waits out a server that is not up, so serve starts and answers reads
// while ClickHouse is down. Before, serve ran the migrations too, once more, and
// failed at start when ClickHouse did not answer.
func TestServeStartsWhileClickHouseIsDown(t *testing.T) {
	env := testenv.NATS(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close() // nothing listens there now
	httpAddr := startServeConfig(t, app.ServeConfig{
		NATSURL: env.URL, Topology: topology.Topology{Partitions: 2},
		ClickHouse: chsink.Config{DSN: "clickhouse://" + down + "/orderflow", RetryBackoff: 100 * time.Millisecond},
	})
	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz with ClickHouse down: %s, want 200 (reads do not need ClickHouse)", resp.Status)
	}
}
