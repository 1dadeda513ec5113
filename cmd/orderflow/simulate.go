package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
)

func newSimulate(g *globals) *cobra.Command {
	var (
		cfg     simulate.Config
		rate    float64
		report  bool
		asJSON  bool
		dashers simulate.DashersConfig
	)
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Publish a realistic, seeded, contending workload: duplicates, reordering, races, cancellations, agent corrections",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var failed atomic.Int64
			nc, js, err := connectJS(g, "orderflow-simulate", jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
				if failed.Add(1) <= 5 {
					fmt.Fprintf(cmd.ErrOrStderr(), "publish %s failed: %v\n", m.Subject, err)
				}
			}))
			if err != nil {
				return err
			}
			defer nc.Close()
			if dashers.N > 0 {
				// Moving dashers run alongside the orders until interrupted.
				dctx, cancel := context.WithCancel(cmd.Context())
				defer cancel()
				go func() {
					n, err := simulate.Dashers(dctx, nc, dashers)
					fmt.Fprintf(cmd.ErrOrStderr(), "dashers: %d positions sent (%v)\n", n, err)
				}()
				if cfg.Orders == 0 {
					<-dctx.Done()
					return nil
				}
			}
			gen, err := simulate.NewGenerator(cfg)
			if err != nil {
				return usageError{err}
			}
			if _, err := simulate.Publish(cmd.Context(), js, gen.Next, rate, cmd.ErrOrStderr()); err != nil {
				return err
			}
			sum := gen.Summary()
			if n := failed.Load(); n > 0 {
				return fmt.Errorf("%d messages were not stored", n)
			}
			out := cmd.OutOrStdout()
			if !report {
				if asJSON {
					return json.NewEncoder(out).Encode(sum)
				}
				fmt.Fprintln(out, sum.String())
				return nil
			}
			rep, err := waitAndReport(cmd.Context(), js, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]any{"published": sum, "report": rep})
			}
			fmt.Fprintln(out, sum.String())
			rep.print(out)
			return nil
		},
	}
	f := cmd.Flags()
	f.Int64Var(&cfg.Seed, "seed", 1, "random seed: the same seed publishes the same events")
	f.IntVar(&cfg.Orders, "orders", 1000, "orders to simulate")
	f.Float64Var(&rate, "rate", 0, "target events per second, 0 = as fast as JetStream acks")
	f.Float64Var(&cfg.DuplicateRate, "duplicates", 0, "fraction of events re-sent (default 0.03; -1 = none)")
	f.Float64Var(&cfg.ReorderRate, "reorder", 0, "fraction of orders with reordered events (default 0.20; -1 = none)")
	f.Float64Var(&cfg.CancelRate, "cancel", 0, "fraction of orders cancelled (default 0.05; -1 = none)")
	f.Float64Var(&cfg.AgentRate, "agent", 0, "fraction of orders an agent corrects (default 0.02; -1 = none)")
	f.Float64Var(&cfg.InvalidRate, "invalid", 0, "fraction of bad messages, for DLQ drills (default 0)")
	f.BoolVar(&report, "report", false, "wait until the pipeline has folded everything, then print the status summary")
	f.BoolVar(&asJSON, "json", false, "machine-readable output")
	f.IntVar(&dashers.N, "dashers", 0, "dashers moving through the city, publishing positions (dead-band policy) while the orders are published; with --orders 0, until interrupted")
	f.Uint64Var(&dashers.Seed, "dasher-seed", 1, "random seed of the dashers' routes")
	return cmd
}

// statusReport is what the pipeline made of a workload.
type statusReport struct {
	Orders     int            `json:"orders"`
	ByStatus   map[string]int `json:"by_status"`
	DLQ        uint64         `json:"dlq"`
	Milestones uint64         `json:"milestones"`
	WAL        uint64         `json:"wal_events"`
}

func (r statusReport) print(w io.Writer) {
	fmt.Fprintf(w, "pipeline: %d events in the WAL, %d in the DLQ, %d orders in KV, %d milestones published\n", r.WAL, r.DLQ, r.Orders, r.Milestones)
	keys := make([]string, 0, len(r.ByStatus))
	for k := range r.ByStatus {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-18s %d\n", k, r.ByStatus[k])
	}
}

// waitAndReport waits until the lane checkpoints cover everything the WAL held when
// called, then summarises the snapshots.
func waitAndReport(ctx context.Context, js jetstream.JetStream, w io.Writer) (statusReport, error) {
	if err := pipelines.WaitDrained(ctx, js, 5*time.Minute); err != nil {
		return statusReport{}, err
	}
	var rep statusReport
	rep.ByStatus = map[string]int{}
	snaps, err := verify.Snapshots(ctx, js)
	if err != nil {
		return rep, err
	}
	for _, v := range verify.Views(snaps) {
		name := string(v.Status)
		if v.Predicted {
			name += " (predicted)"
		}
		rep.ByStatus[name]++
		rep.Orders++
	}
	for name, dst := range map[string]*uint64{topology.DLQStream: &rep.DLQ, topology.EventsStream: &rep.WAL, topology.MilestonesStream: &rep.Milestones} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return rep, err
		}
		*dst = s.CachedInfo().State.Msgs
	}
	return rep, nil
}
