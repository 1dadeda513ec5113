package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/orderflow/orderflow/internal/tools/bench"
)

func newBenchRegions() *cobra.Command {
	var (
		cfg    bench.RegionsConfig
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "regions",
		Short: "Measure replication lag between two regions at a steady rate (with and without added link latency) against a plain stream sourced over the same link, and a failover: SIGKILL of one region, time to the first ack and snapshot in the other, and its catch-up after a restart",
		Long: `Runs two regions in a temp directory, each serve's whole pipeline on its own embedded
server (R1): region a as a separate process of this binary (serve --region a), region b
in this process, joined by their leafnode link through a TCP proxy (toxiproxy) that can
add latency. Events are published in a; each is timed from its ack in a to b's WAL and
b's snapshot, next to a plain stream sourced across the same link (the raw baseline).
Then a producer with both regions' URLs publishes while a is killed with SIGKILL, and a
is started again on its data directory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			bin, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find this binary to run region a: %w", err)
			}
			cfg.Binary = bin
			cfg.Progress = cmd.ErrOrStderr()
			res, err := bench.RunRegions(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return printBench(cmd.OutOrStdout(), asJSON, res)
		},
	}
	f := cmd.Flags()
	f.Float64Var(&cfg.Rate, "rate", 1000, "steady live rate published in region a, events/s")
	f.IntVar(&cfg.Seconds, "seconds", 10, "length of each lag run")
	f.IntVar(&cfg.LatencyMs, "latency-ms", 50, "latency the second lag run adds to the link, each way; negative skips that run")
	f.IntVar(&cfg.Partitions, "partitions", 8, "WAL partitions of each region")
	f.Int64Var(&cfg.Seed, "seed", 1, "workload seed")
	f.BoolVar(&asJSON, "json", false, "machine-readable output")
	return cmd
}
