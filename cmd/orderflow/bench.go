package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/orderflow/orderflow/internal/tools/bench"
)

func newBench(g *globals) *cobra.Command {
	var cfg bench.Config
	var asJSON bool
	var liveFraction float64
	var cpuProfile, profilePhase string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the pipeline against raw JetStream consume+ack in one run, on a private embedded server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Progress = cmd.ErrOrStderr()
			if cmd.Flags().Changed("live-fraction") {
				cfg.LiveFractions = []float64{liveFraction}
			}
			stop, err := profilePhases(&cfg.Phase, cpuProfile, profilePhase, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer stop()
			res, err := bench.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return printBench(cmd.OutOrStdout(), asJSON, res)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Orders, "orders", 10_000, "orders in the backlog (about 9.5 events each)")
	f.IntVar(&cfg.LiveSeconds, "live-seconds", 8, "length of each live end-to-end latency point")
	f.IntVar(&cfg.Partitions, "partitions", 8, "WAL partitions")
	f.Float64SliceVar(&cfg.LiveFractions, "live-fractions", bench.DefaultLiveFractions, "live points' rates as fractions of the measured maximum live rate, measured in this order")
	f.Float64Var(&liveFraction, "live-fraction", 0.5, "one live point at this fraction (same as --live-fractions F)")
	_ = f.MarkDeprecated("live-fraction", "use --live-fractions")
	f.IntVar(&cfg.PeerSeconds, "peer-seconds", 20, "time budget of the peer phase (its rate is over what it handled); negative skips it")
	f.IntVar(&cfg.IngestSeconds, "ingest-seconds", 3, "length of each run of the ingest phase (raw publish, HTTP ingest, single-POST latency); negative skips it")
	f.IntVar(&cfg.Reads, "reads", 2000, "reads per latency sample")
	f.Int64Var(&cfg.Seed, "seed", 1, "workload seed")
	f.StringVar(&cfg.ClickHouseDSN, "clickhouse-dsn", "", "add the ClickHouse sink phase against this server (native protocol)")
	f.IntVar(&cfg.SinkEvents, "sink-events", 100_000, "backlog of the ClickHouse sink phase")
	f.BoolVar(&asJSON, "json", false, "machine-readable output")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile of one phase (server included) to this file")
	f.StringVar(&profilePhase, "profile-phase", "pipeline", "the phase --cpuprofile covers: raw, floor, peer, pipeline, saturate, live (every point), reads, ingest or replay")
	return cmd
}

// profilePhases, when path is set, writes a Go CPU profile of one bench phase,
// server included, to path: it sets the bench's Phase hook; stop closes the file.
// The profile shows where that phase's time goes and nothing else.
func profilePhases(hook *func(name string, start bool), path, phase string, errs io.Writer) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	*hook = func(name string, start bool) {
		switch {
		case name != phase:
		case start:
			if err := pprof.StartCPUProfile(f); err != nil {
				fmt.Fprintln(errs, "cpu profile:", err)
			}
		default:
			pprof.StopCPUProfile()
		}
	}
	return func() { _ = f.Close() }, nil
}

// printBench writes a bench result as its table, or as JSON for scripts.
func printBench(w io.Writer, asJSON bool, res interface{ Print(io.Writer) }) error {
	if asJSON {
		return json.NewEncoder(w).Encode(res)
	}
	res.Print(w)
	return nil
}
