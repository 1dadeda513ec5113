// Package embedded owns the in-process NATS JetStream server that `orderflow serve`
// runs by default, so a single binary on one machine is a complete deployment.
//
// # Durability (fsync) trade-off
//
// JetStream acknowledges a publish once the message is written to its file store,
// that is, handed to the operating system (page cache), not once it is on disk:
//
//   - A process crash (panic, OOM kill, kill -9) never loses an acknowledged
//     publish: the data is already in the kernel, which writes it out regardless.
//   - An OS crash or power loss can lose what was acknowledged during the last
//     SyncInterval (nats default: 2 minutes), unless SyncAlways is set, which
//     fsyncs every write before the ack.
//
// fsync on every write costs about 40x in publish throughput on this project's
// reference machine (~95k -> ~2.5k msg/s async publish, DESIGN.md §4), so it is
// off by default. Deployments that need power-loss durability run a NATS cluster
// with R3 streams (an ack then means a quorum has the message) or set SyncAlways.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds how long Start waits for the server to accept clients.
// JetStream recovers its streams before it listens, so a large store takes longer.
const readyTimeout = 10 * time.Second

// Config configures the embedded server. The zero value plus a DataDir is usable.
type Config struct {
	// DataDir holds the JetStream file store (nats-server adds a "jetstream" subdir).
	// Required: an embedded server without a store would lose the WAL on restart.
	DataDir string
	// Listen is the client address, host:port. Port 0 or -1 picks a free port
	// (read it back with Server.ClientURL). Default 127.0.0.1:4222.
	Listen string
	// ServerName names the server in logs and JetStream metadata. Default "orderflow".
	ServerName string
	// SyncInterval is how often JetStream fsyncs its files. 0 keeps the nats
	// default (2m); a negative value means fsync every write (like SyncAlways).
	// See the package doc for what this trades.
	SyncInterval time.Duration
	// SyncAlways fsyncs every write before acknowledging it.
	SyncAlways bool
	// MaxMemory and MaxStore cap JetStream memory and file storage in bytes;
	// 0 lets nats-server size them from the machine.
	MaxMemory, MaxStore int64
	// Logger receives the server's logs. Default slog.Default().
	Logger *slog.Logger
	// Accounts (operator mode) are looked up before the server starts, so it enables
	// their JetStream as it starts. Otherwise an account is registered when the
	// first connection binds it, and with nats-server 2.15.2 two at once (a client
	// and a leafnode link) could leave the account's JetStream API unanswered:
	// region a's first stream creation went unanswered for 30s in 3 of 9 runs of
	// the secure region tests (internal/app).
	Accounts []string
	// Configure, when set, adjusts the server's options last: accounts and users
	// when auth is on (package auth), TLS.
	Configure func(*server.Options) error
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:4222"
	}
	if c.ServerName == "" {
		c.ServerName = "orderflow"
	}
	if c.SyncInterval < 0 {
		c.SyncAlways = true
		c.SyncInterval = 0
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first configuration error.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("embedded nats: DataDir is required")
	}
	if _, _, err := splitListen(c.Listen); err != nil {
		return fmt.Errorf("embedded nats: Listen %q: %w", c.Listen, err)
	}
	if c.MaxMemory < 0 || c.MaxStore < 0 {
		return errors.New("embedded nats: MaxMemory and MaxStore must be >= 0")
	}
	return nil
}

// splitListen parses host:port; ports 0 and -1 both mean "pick a free one",
// which nats-server spells -1 (its 0 means the default port 4222).
func splitListen(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// Server is a running embedded JetStream server.
type Server struct {
	ns *server.Server
}

// Start runs a JetStream server in this process and returns once it accepts
// clients. ctx bounds only the start: the server lives until Shutdown, because
// the caller must stop its consumers before the server goes away, not at the
// same moment.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, port, _ := splitListen(cfg.Listen)
	opts := &server.Options{
		ServerName:         cfg.ServerName,
		Host:               host,
		Port:               port,
		JetStream:          true,
		StoreDir:           cfg.DataDir,
		SyncInterval:       cfg.SyncInterval,
		SyncAlways:         cfg.SyncAlways,
		JetStreamMaxMemory: cfg.MaxMemory,
		JetStreamMaxStore:  cfg.MaxStore,
		// The host process owns signals: nats-server would otherwise exit the
		// whole program on SIGINT/SIGTERM before the pipeline drains.
		NoSigs: true,
	}
	if cfg.Configure != nil {
		if err := cfg.Configure(opts); err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	for _, acc := range cfg.Accounts {
		if _, err := ns.LookupAccount(acc); err != nil {
			return nil, fmt.Errorf("embedded nats: account %s: %w", acc, err)
		}
	}
	logger := NewLogger(cfg.Logger)
	logger.fatal = make(chan string, 1)
	// Trace logs every protocol message: too much even for debug, so it stays off.
	ns.SetLoggerV2(logger, cfg.Logger.Enabled(ctx, slog.LevelDebug), false, false)
	ns.Start()

	fail := func(err error) (*Server, error) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	deadline := time.Now().Add(readyTimeout)
	for !ns.ReadyForConnections(50 * time.Millisecond) {
		select {
		case msg := <-logger.fatal:
			return fail(errors.New(msg))
		case <-ctx.Done():
			return fail(ctx.Err())
		default:
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("not ready for connections after %s", readyTimeout))
		}
	}
	return &Server{ns: ns}, nil
}

// ClientURL is the nats:// URL clients connect to (with the port actually bound).
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// NATSServer exposes the underlying server for monitoring and tests.
func (s *Server) NATSServer() *server.Server { return s.ns }

// Shutdown stops the server gracefully (closes clients, flushes and closes the
// store) and returns when it is fully down, so the data dir can be reopened.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
