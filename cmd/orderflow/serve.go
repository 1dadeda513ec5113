package main

import (
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/sinks/archive"
)

func newServe(g *globals) *cobra.Command {
	var cfg app.ServeConfig
	var noArchive bool
	var sec securityFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the pipeline and the HTTP API (embedded JetStream unless --nats-url is set)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.NATSURL = g.natsURL
			cfg.Security.NATSCreds = g.natsCreds
			cfg.Logger = g.logger()
			if cfg.Archive.Location == "" && !noArchive && cfg.NATSURL == "" {
				// With the embedded server, the archive lives beside its store; on a
				// cluster, --archive says where (each instance needs the same store).
				cfg.Archive.Location = filepath.Join(cfg.DataDir, "archive")
			}
			if noArchive {
				cfg.Archive.Location = ""
			}
			if err := sec.apply(&cfg); err != nil {
				return usageError{err}
			}
			if err := checkLimits(cfg); err != nil {
				return usageError{err}
			}
			return app.Serve(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "./orderflow-data", "embedded server's JetStream store")
	f.StringVar(&cfg.NATSListen, "nats-listen", "127.0.0.1:4222", "embedded server's client address")
	f.StringVar(&cfg.HTTPListen, "http-listen", "127.0.0.1:8080", "HTTP API address")
	f.DurationVar(&cfg.SyncInterval, "sync-interval", 0, "embedded server's fsync interval: 0 = nats default (2m), -1ns = fsync every write (slower, survives power loss)")
	f.IntVar(&cfg.Topology.Partitions, "partitions", 8, "ordered lanes ORDER_EVENTS is split into (once the stream holds events: raise it with orderflow partitions grow)")
	f.IntVar(&cfg.Topology.Replicas, "replicas", 1, "stream replicas: 1 embedded, 3 on a cluster")
	f.DurationVar(&cfg.Topology.TerminalTTL, "terminal-ttl", 0, "how long delivered/cancelled snapshots stay in KV (default 24h); reads fall back to the WAL")
	f.DurationVar(&cfg.Topology.DuplicateWindow, "duplicate-window", 0, "JetStream duplicate window for Nats-Msg-Id (default 2m)")
	f.DurationVar(&cfg.Topology.LanePinnedTTL, "lane-failover", 0, "how long a silent instance keeps its lanes before another takes over (default 10s)")
	f.DurationVar(&cfg.Topology.LaneAckWait, "lane-ack-wait", 0, "how long before JetStream redelivers an event a lane has not acknowledged (default 30s)")
	f.StringVar(&cfg.Archive.Location, "archive", "", "where archived orders go as Parquet files: a directory or s3://bucket/prefix?endpoint=host:port (default <data-dir>/archive with the embedded server; off with --nats-url unless set)")
	f.DurationVar(&cfg.Archive.MinAge, "archive-after", archive.DefaultMinAge, "archive orders terminal for longer than this, then purge them from the WAL")
	f.DurationVar(&cfg.Archive.Interval, "archive-interval", time.Minute, "how often to look for orders to archive")
	f.IntVar(&cfg.Archive.MaxFailures, "archive-max-failures", 10, "serve stops (exit 1) after this many archive runs in a row failed, as the WAL is no longer purged; -1 = never stop, log each failure at error")
	f.BoolVar(&noArchive, "no-archive", false, "never archive or purge the WAL")
	optionalClickHouseFlag(cmd, &cfg.ClickHouse.DSN, "turn the ClickHouse sink on")
	clickhouseClusterFlag(cmd, &cfg.ClickHouse.Cluster)
	f.IntVar(&cfg.ClickHouse.BatchSize, "clickhouse-batch", 0, "rows per ClickHouse insert (default 20000)")
	f.DurationVar(&cfg.ClickHouse.BatchWait, "clickhouse-batch-wait", 0, "longest wait before a partial batch is inserted (default 500ms)")
	sec.register(f, &cfg)
	registerRegionFlags(f, &cfg)
	registerLimits(f, &cfg)
	return cmd
}
