package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/internal/services/consumers"
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
			svc.Failpoints = handlers.FailpointsFromEnv()
			nc, js, err := connectJS(g, "orderflow-consume-"+svc.Name)
			if err != nil {
				return err
			}
			defer nc.Close()
			fmt.Fprintf(cmd.ErrOrStderr(), "%s consuming milestones from %s\n", svc.Name, g.clientURL())
			return svc.Run(cmd.Context(), js, cmd.OutOrStdout())
		},
	}
}
