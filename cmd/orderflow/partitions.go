package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/internal/services/partitions"
	"github.com/orderflow/orderflow/pipelines/topology"
)

func newPartitions(g *globals) *cobra.Command {
	root := &cobra.Command{Use: "partitions", Short: "Change the WAL's partition count (the lanes)"}
	root.AddCommand(newPartitionsGrow(g))
	return root
}

func newPartitionsGrow(g *globals) *cobra.Command {
	var (
		o      partitions.Options
		force  bool
		asJSON bool
		wait   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "grow",
		Short: "Repartition ORDER_EVENTS to more partitions, with every orderflow serve stopped",
		Long: `Repartition the WAL in place: events stored from now on land on --to partitions,
every event stored before is folded here as the lanes would have (snapshots, milestones, DLQ), and the
lane consumers and checkpoints are recreated to start right after it. Sequences do
not change, so snapshots, ClickHouse rows and the archive stay valid.

Stop every orderflow serve first (producers publishing to NATS may go on); grow
waits up to --wait for their lanes to be released. Then start serve with
--partitions set to the new count.

The growth is recorded in KV order_lanes before anything changes and serve refuses
to start until it has finished: if grow is interrupted, run it again with the same
--to to finish it.`,
		Example: `  orderflow partitions grow --to 16 --terminal-ttl 24h`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.To < 1 {
				return usageError{errors.New("--to: the new partition count is required")}
			}
			nc, js, err := connectJS(g, "orderflow-partitions")
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx := cmd.Context()
			if !force && !confirm(cmd.InOrStdin(), cmd.ErrOrStderr(), fmt.Sprintf("Repartition %s to %d partitions (every orderflow serve stopped)?", topology.EventsStream, o.To)) {
				return fmt.Errorf("not confirmed: pass --force")
			}
			o.Failpoints = handlers.FailpointsFromEnv()
			rep, err := growWhenIdle(ctx, js, o, wait)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(rep)
			}
			if rep.Unchanged {
				fmt.Fprintf(out, "%s already has %d partitions and their lanes: nothing to do\n", topology.EventsStream, rep.To)
				return nil
			}
			fmt.Fprintf(out, "%s: %d -> %d partitions; the stopped lanes' events %d..%d folded here (%d orders, %d snapshots written, %d set aside in the DLQ); the lanes start at %d (%s)\n",
				topology.EventsStream, rep.From, rep.To, rep.CatchUpFrom, rep.Switch, rep.CatchUp.Orders, rep.CatchUp.Written, rep.CatchUp.SetAside, rep.Switch+1, rep.Duration.Round(time.Millisecond))
			fmt.Fprintf(out, "start orderflow serve with --partitions %d\n", rep.To)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.To, "to", 0, "the new partition count (more than the WAL has)")
	f.DurationVar(&o.TerminalTTL, "terminal-ttl", 0, "serve's --terminal-ttl, for the delivered/cancelled snapshots this writes (default 24h, as serve)")
	f.DurationVar(&wait, "wait", 30*time.Second, "how long to wait for stopped instances to release their lanes (--lane-failover after they stopped)")
	f.BoolVar(&force, "force", false, "do not ask for confirmation")
	f.BoolVar(&asJSON, "json", false, "machine-readable output")
	return cmd
}

// growWhenIdle runs Grow, retrying while lanes are still held, up to wait: an
// instance that was killed keeps its lanes pinned until --lane-failover passes.
func growWhenIdle(ctx context.Context, js jetstream.JetStream, o partitions.Options, wait time.Duration) (partitions.Report, error) {
	deadline := time.Now().Add(wait)
	for {
		rep, err := partitions.Grow(ctx, js, o)
		if !errors.Is(err, topology.ErrLanesRunning) || time.Now().After(deadline) {
			return rep, err
		}
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
