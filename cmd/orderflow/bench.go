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
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				// The profile covers one phase, server included, so it shows where that
				// phase's time goes and nothing else.
				cfg.Phase = func(name string, start bool) {
					switch {
					case name != profilePhase:
					case start:
						err = pprof.StartCPUProfile(f)
					default:
						pprof.StopCPUProfile()
					}
				}
				defer func() {
					if err != nil {
						fmt.Fprintln(cmd.ErrOrStderr(), "cpu profile:", err)
					}
				}()
			}
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

// printBench writes a bench result as its table, or as JSON for scripts.
func printBench(w io.Writer, asJSON bool, res interface{ Print(io.Writer) }) error {
	if asJSON {
		return json.NewEncoder(w).Encode(res)
	}
	res.Print(w)
	return nil
}
