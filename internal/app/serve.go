// Package app is the composition root of `orderflow serve`: it starts or connects to
// NATS, provisions the topology, and runs the status pipeline and the HTTP API.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/internal/adapters/embedded"
	"github.com/orderflow/orderflow/internal/adapters/regions"
	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/adapters/streamstats"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/services/api"
	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/services/orders"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/sinks/archive"
	chsink "github.com/orderflow/orderflow/sinks/clickhouse"
)

// ServeConfig configures one orderflow instance.
type ServeConfig struct {
	// DataDir holds the embedded server's JetStream store.
	DataDir string
	// NATSListen is the embedded server's client address.
	NATSListen string
	// NATSURL, when set, uses an existing NATS cluster instead of the embedded server.
	NATSURL string
	// HTTPListen is the API address.
	HTTPListen string
	// SyncInterval is the embedded server's fsync interval (0 = nats default, <0 = every write).
	SyncInterval time.Duration
	Topology     topology.Topology
	Lane         handlers.LaneConfig
	// ClickHouse, when its DSN is set, runs the analytics sink and serves the
	// per-entity order lists.
	ClickHouse chsink.Config
	// Archive moves orders terminal for longer than Archive.MinAge into Parquet files
	// and purges them from the WAL. Off when Archive.Location is empty. When
	// Archive.MaxFailures runs in a row fail, Serve stops and returns the error.
	Archive archive.Config
	// Security configures the ingest API's tokens and limits.
	Security SecurityConfig
	// Region joins this instance's region to its peers (README "Regions"); the zero
	// value is the single-region deployment.
	Region regions.Config
	Logger *slog.Logger
	// Started, if set, receives the bound addresses once the instance serves.
	Started func(Addrs)
}

// Addrs are the addresses an instance actually bound.
type Addrs struct {
	NATS string
	HTTP string
}

// Serve runs one instance until ctx ends, then shuts down in order: stop taking
// events, make handled events durable, stop the API, stop the embedded server.
func Serve(ctx context.Context, cfg ServeConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := checkListen(cfg); err != nil {
		return err
	}
	if err := prepareRegion(&cfg); err != nil {
		return err
	}
	tlsCfg, err := tlsConfig(cfg.Security)
	if err != nil {
		return err
	}
	var authz *auth.Authority
	url := cfg.NATSURL
	if url == "" {
		if cfg.Security.Auth {
			if authz, err = auth.LoadOrCreateAuthority(auth.Dir(cfg.DataDir)); err != nil {
				return err
			}
		}
		if err := checkStore(cfg.DataDir, authz); err != nil {
			return err
		}
		srv, err := embedded.Start(ctx, embedded.Config{
			DataDir: cfg.DataDir, Listen: cfg.NATSListen, SyncInterval: cfg.SyncInterval, Logger: log,
			Accounts: authz.Accounts(),
			Configure: func(o *natsserver.Options) error {
				if err := secureNATS(o, authz, tlsCfg); err != nil {
					return err
				}
				if err := cfg.Region.Configure(o); err != nil {
					return err
				}
				return secureRegionLinks(o, cfg, authz, tlsCfg)
			},
		})
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		url = srv.ClientURL()
	}
	ids, err := newNATSIdentity(cfg.Security, authz, tlsCfg != nil && cfg.NATSURL == "")
	if err != nil {
		return err
	}
	conns, err := Connect(url, "orderflow-serve", 3, ids.pipeline...)
	if err != nil {
		return err
	}
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	nc := conns[0]
	// A bounded wait for publish acks: a future that never resolves would stall a
	// lane's writer; a timeout turns it into an error the lane retries.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return err
	}
	regionNC, err := connectRegion(url, cfg, ids)
	if err != nil {
		return err
	}
	if regionNC != nil {
		defer regionNC.Close()
	}
	if err := handOverMilestones(ctx, regionNC, cfg, log); err != nil {
		return err
	}
	changes, err := topology.Provision(ctx, js, cfg.Topology)
	if err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	for _, c := range changes {
		if c.Action != "ensured" && c.Action != "unchanged" {
			log.Info("provisioned", "resource", c.Resource, "action", c.Action)
		}
	}
	guard, err := guardMilestonesHome(ctx, regionNC, cfg, log)
	if err != nil {
		return err
	}

	topo := cfg.Topology
	topo.SetDefaults()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := handlers.NewMetrics(reg)
	// The lanes share a connection of their own: their snapshot writes and milestone
	// publishes are pipelined, so sharing batches them into fewer socket writes (one
	// connection per lane measured slower), and HTTP reads on the main connection
	// never queue behind them.
	laneConn := conns[2]
	laneJS, err := jetstream.New(laneConn, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return err
	}
	laneDeps, err := newDeps(ctx, laneJS, topo, metrics, log)
	if err != nil {
		return err
	}
	// The read path has the main connection to itself.
	walLog, err := wal.Open(ctx, js)
	if err != nil {
		return err
	}
	snaps, err := snapshot.Open(ctx, js, topo.TerminalTTL)
	if err != nil {
		return err
	}
	// The pipeline's subscriber drains its connection on close, so it gets its own.
	status, err := pipelines.NewStatusPipeline(conns[1], topo, cfg.Lane, laneDeps)
	if err != nil {
		return err
	}

	var pipelineUp atomic.Bool
	ready := func() error {
		if !nc.IsConnected() {
			return errors.New("not connected to NATS")
		}
		if !pipelineUp.Load() {
			return errors.New("status pipeline starting")
		}
		return nil
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "orderflow_ready",
		Help: "1 while this instance answers /readyz with 200 (connected to NATS, pipeline running), else 0.",
	}, func() float64 {
		if ready() != nil {
			return 0
		}
		return 1
	}))
	reg.MustRegister(streamstats.New(js, log, topology.EventsStream, topology.DLQStream, topology.MilestonesStream, "KV_"+topology.StatusBucket))
	var archiver *archive.Archiver
	var archiveReader *archive.Reader // reads of archived orders; nil without an archive
	if cfg.Archive.Location != "" {
		acfg := cfg.Archive
		acfg.Logger, acfg.Registerer = log, reg
		if fps := handlers.FailpointsFromEnv(); fps != nil && acfg.Failpoint == nil {
			acfg.Failpoint = func(step string) error { fps.Hit(step); return nil }
		}
		if archiver, err = archive.New(ctx, js, acfg); err != nil {
			return fmt.Errorf("archive: %w", err)
		}
		archiveReader = archiver.Reader
	}
	var sink *chsink.Sink
	var chConn driver.Conn
	if cfg.ClickHouse.DSN != "" {
		if chConn, err = chsink.Open(ctx, cfg.ClickHouse.DSN); err != nil {
			return fmt.Errorf("clickhouse: %w", err)
		}
		defer chConn.Close()
		// The sink migrates the schema when it starts, waiting out a server that is
		// not up yet: serve does not migrate too (nor fail while ClickHouse is down).
		if sink, err = chsink.NewSink(cfg.ClickHouse, js, chConn, reg, log); err != nil {
			return fmt.Errorf("clickhouse sink: %w", err)
		}
		if archiver != nil {
			// Archived orders' events left the WAL: the sink refolds from the archive too.
			sink.WithHistory(archiver)
		}
	}
	ingestJS := js
	if authz != nil {
		// The ingest API publishes as the ingest user: a bug in it cannot touch
		// anything but orders.events.>.
		ic, err := Connect(url, "orderflow-ingest", 1, ids.ingest...)
		if err != nil {
			return err
		}
		defer ic[0].Close()
		if ingestJS, err = jetstream.New(ic[0]); err != nil {
			return err
		}
	}
	ingestHandler, tokens, err := newIngest(ctx, cfg, ingestJS, reg, log)
	if err != nil {
		return err
	}
	reader := orders.NewReader(walLog, snaps, 0)
	disp, err := newDispatch(ctx, url, ids.pipeline, js, reader, cfg.Security.Auth, tokens, reg, log)
	if err != nil {
		return err
	}
	defer disp.close()
	srv := api.New(api.Config{
		Reader: reader, JS: js, Log: walLog, Registry: reg, Ready: ready, Logger: log,
		Archive: archiveReader, ClickHouse: chConn, Ingest: ingestHandler, Dispatch: disp.Handler(),
	})
	ln, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	handler := srv.Handler()
	if cfg.Security.Auth {
		handler = requireToken(handler, tokens)
	}
	if handler, err = withConsole(handler, srv, reader, tokens, ingestHandler, js, archiveReader, chConn, log); err != nil {
		return err
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	httpSrv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	if sink != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sink.Run(runCtx); err != nil && runCtx.Err() == nil {
				errs <- fmt.Errorf("clickhouse sink: %w", err)
				stop()
			}
		}()
	}
	runRegion(runCtx, &wg, cfg, regionNC, guard, reg, log)
	if archiver != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// An archive that keeps failing no longer purges the WAL, which then
			// grows until the disk is full: serve stops with the error (exit 1) rather
			// than run on with a WAL nobody trims. --archive-max-failures sets how
			// patient it is; --no-archive runs without the archive meanwhile.
			if err := archiver.Run(runCtx); err != nil && runCtx.Err() == nil {
				log.Error("archive keeps failing: stopping", "err", err)
				errs <- fmt.Errorf("archive: %w", err)
				stop()
			}
		}()
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := disp.Run(runCtx); err != nil && runCtx.Err() == nil {
			errs <- fmt.Errorf("dispatch: %w", err)
			stop()
		}
	}()
	go func() {
		defer wg.Done()
		if err := status.Run(runCtx); err != nil {
			// Includes a failed final flush: handled events not yet durable. They
			// are safe in the WAL and replayed at the next start, but say so.
			log.Error("status pipeline stopped with an error", "err", err)
			if runCtx.Err() == nil {
				errs <- fmt.Errorf("status pipeline: %w", err)
			}
		}
		stop()
	}()
	go func() {
		defer wg.Done()
		if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("http: %w", err)
		}
		stop()
	}()
	select {
	case <-status.Running():
		pipelineUp.Store(true)
		log.Info("orderflow serving", "nats", url, "http", ln.Addr().String(), "partitions", topo.Partitions)
		if cfg.Started != nil {
			cfg.Started(Addrs{NATS: url, HTTP: ln.Addr().String()})
		}
	case <-runCtx.Done():
	}
	<-runCtx.Done()
	log.Info("orderflow shutting down")
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutCtx)
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// newDeps binds the I/O a lane needs to one JetStream context.
func newDeps(ctx context.Context, js jetstream.JetStream, topo topology.Topology, m *handlers.Metrics, log *slog.Logger) (handlers.Deps, error) {
	walLog, err := wal.Open(ctx, js)
	if err != nil {
		return handlers.Deps{}, err
	}
	snaps, err := snapshot.Open(ctx, js, topo.TerminalTTL)
	if err != nil {
		return handlers.Deps{}, err
	}
	lanes, err := handlers.NewJetStreamLanes(ctx, js)
	if err != nil {
		return handlers.Deps{}, err
	}
	return handlers.Deps{
		Orders: walLog, Lanes: lanes, Snapshots: snaps,
		DLQ: handlers.NewDLQ(js), Milestones: handlers.NewMilestonePublisher(js, topo.MilestonesPublishPrefix()), Metrics: m, Logger: log,
		Failpoints: handlers.FailpointsFromEnv(),
	}, nil
}

// Connect opens n NATS connections that retry forever on disconnect, as a
// long-running service must; opts add credentials and TLS.
func Connect(url, name string, n int, opts ...nats.Option) ([]*nats.Conn, error) {
	var conns []*nats.Conn
	for i := 0; i < n; i++ {
		nc, err := nats.Connect(url, append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}, opts...)...)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
		}
		conns = append(conns, nc)
	}
	return conns, nil
}
