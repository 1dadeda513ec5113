package main

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/orderflow/orderflow/internal/consumers"
)

func newConsume(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "consume billing|notifications",
		Short: "Run an example downstream service on ORDER_MILESTONES, idempotent by milestone id",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var svc consumers.Service
			switch args[0] {
			case "billing":
				svc = consumers.Billing
			case "notifications":
				svc = consumers.Notifications
			default:
				return usageError{fmt.Errorf("unknown service %q: billing or notifications", args[0])}
			}
			nc, err := nats.Connect(g.clientURL(), nats.Name("orderflow-consume-"+svc.Name), nats.MaxReconnects(-1))
			if err != nil {
				return fmt.Errorf("connect to NATS at %s: %w", g.clientURL(), err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s consuming milestones from %s\n", svc.Name, g.clientURL())
			return svc.Run(cmd.Context(), js, cmd.OutOrStdout())
		},
	}
}
