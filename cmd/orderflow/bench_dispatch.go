package main

import (
	"github.com/spf13/cobra"

	"github.com/orderflow/orderflow/internal/tools/bench"
)

func newBenchDispatch() *cobra.Command {
	var (
		cfg                      bench.DispatchConfig
		asJSON                   bool
		cpuProfile, profilePhase string
	)
	cmd := &cobra.Command{
		Use:   "dispatch",
		Short: "Measure location ingest against raw core NATS pub+sub, nearby latency while ingesting, and assign latency, on a private embedded server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Progress = cmd.ErrOrStderr()
			stop, err := profilePhases(&cfg.Phase, cpuProfile, profilePhase, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer stop()
			res, err := bench.RunDispatch(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return printBench(cmd.OutOrStdout(), asJSON, res)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Updates, "updates", 300_000, "position messages per ingest run")
	f.IntVar(&cfg.Dashers, "dashers", 100_000, "dashers in the index during the search run")
	f.IntVar(&cfg.Searches, "searches", 2000, "nearby searches timed")
	f.IntVar(&cfg.Assigns, "assigns", 500, "assigns timed")
	f.BoolVar(&asJSON, "json", false, "machine-readable output")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a Go CPU profile of one phase (server included) to this file")
	f.StringVar(&profilePhase, "profile-phase", "ingest", "the phase --cpuprofile covers: raw, ingest, index-only, nearby or assign")
	return cmd
}
