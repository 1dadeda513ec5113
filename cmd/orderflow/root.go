package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/app/config"
	"github.com/orderflow/orderflow/internal/services/auth"
)

// run builds the command tree and executes it with args.
func run(ctx context.Context, args []string) error {
	root := newRoot()
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// globals are the flags every command shares.
type globals struct {
	configFile string
	logLevel   string
	natsURL    string
	natsCreds  string
}

// logger logs at --log-level, which PersistentPreRunE has checked.
func (g *globals) logger() *slog.Logger {
	lvl, _ := parseLogLevel(g.logLevel)
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// parseLogLevel reads debug, info, warn or error (any case; slog's offsets such as
// warn+2 too). Anything else is an error: a typo must not silently log at info.
func parseLogLevel(s string) (slog.Level, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return lvl, nil
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "orderflow",
		Short:         "Keeps the status of every delivery order correct while many sources update it",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			// Flags, then ORDERFLOW_* environment variables, then the YAML file.
			cfg := g.configFile
			if !cmd.Flags().Changed("config") {
				cfg = os.Getenv(config.EnvName("config"))
			}
			if err := config.Apply(cmd.Flags(), cfg, os.Getenv); err != nil {
				return usageError{err}
			}
			if _, err := parseLogLevel(g.logLevel); err != nil {
				return usageError{err}
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.configFile, "config", "", "YAML file of flag values (keys are flag names)")
	pf.StringVar(&g.logLevel, "log-level", "info", "debug, info, warn or error")
	pf.StringVar(&g.natsURL, "nats-url", "", "NATS server URL; empty for serve means the embedded server, for clients nats://127.0.0.1:4222")
	pf.StringVar(&g.natsCreds, "nats-creds", "", "NATS .creds file to connect with (orderflow creds issue); for serve, the pipeline's credentials on --nats-url")
	benchCmd := newBench(g)
	benchCmd.AddCommand(newBenchDispatch(), newBenchRegions())
	root.AddCommand(newServe(g), newPublish(g), newSimulate(g), newStatus(g), benchCmd, newConsume(g), newEstimator(g), newReplay(g), newVerify(g), newMigrate(), newQuery(), newToken(), newCreds(), newRegion(g), newPartitions(g), newHealthcheck())
	return root
}

// clientURL is the NATS URL client commands connect to.
func (g *globals) clientURL() string {
	if g.natsURL != "" {
		return g.natsURL
	}
	return "nats://127.0.0.1:4222"
}

// connect is one connection to NATS that rides out reconnects, with --nats-creds.
func connect(g *globals, name string, opts ...nats.Option) (*nats.Conn, error) {
	var connOpts []nats.Option
	if g.natsCreds != "" {
		b, err := os.ReadFile(g.natsCreds)
		if err != nil {
			return nil, err
		}
		if connOpts, err = auth.ConnectOptions(b); err != nil {
			return nil, fmt.Errorf("--nats-creds %s: %w", g.natsCreds, err)
		}
	}
	conns, err := app.Connect(g.clientURL(), name, 1, append(connOpts, opts...)...)
	if err != nil {
		return nil, err
	}
	return conns[0], nil
}

// connectJS is how every client command reaches NATS: one connection that rides
// out reconnects, and its JetStream context.
func connectJS(g *globals, name string, opts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := connect(g, name)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
