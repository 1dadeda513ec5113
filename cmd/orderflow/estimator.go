package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/orderflow/orderflow/internal/services/estimator"
)

func newEstimator(g *globals) *cobra.Command {
	var tick time.Duration
	var name string
	cmd := &cobra.Command{
		Use:   "estimator",
		Short: "Follow the WAL and dasher locations, and publish predicted stages and etas as the estimator source",
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, js, err := connectJS(g, "orderflow-estimator")
			if err != nil {
				return err
			}
			defer nc.Close()
			svc, err := estimator.New(cmd.Context(), nc, js, estimator.Config{Tick: tick, Name: name})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "estimator following %s\n", g.clientURL())
			return svc.Run(cmd.Context())
		},
	}
	cmd.Flags().DurationVar(&tick, "tick", time.Second, "how often every open order is re-estimated")
	cmd.Flags().StringVar(&name, "name", "estimator", "key of this estimator's checkpoint in KV estimator_checkpoints, without dots (one estimator per name)")
	return cmd
}
