package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/orderflow/orderflow/internal/services/replay"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
	"github.com/orderflow/orderflow/sinks/archive"
	chsink "github.com/orderflow/orderflow/sinks/clickhouse"
)

func newReplay(g *globals) *cobra.Command {
	var (
		o               replay.Options
		target          string
		from            string
		force           bool
		asJSON          bool
		archiveLocation string
		archiveAfter    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Rebuild projections from the WAL, from a sequence or a time, for every order or one",
		Long: `Rebuild projections from the WAL. Snapshots are cumulative, so every order with
an event at or after the start is recomputed from its whole history and rewritten
where it differs. Safe while the pipeline runs (compare-and-set writes).`,
		Example: `  orderflow replay --target kv --from-seq 1 --dry-run
  orderflow replay --target kv --from-time 2026-11-24T14:00:00Z --force
  orderflow replay --target kv --order o-1 --force`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if target != "kv" && target != "clickhouse" && target != "archive" && target != "all" {
				return usageError{fmt.Errorf("--target %q: kv, clickhouse, archive or all", target)}
			}
			if target == "archive" && archiveLocation == "" {
				return usageError{errors.New("--target archive needs --archive")}
			}
			if o.OrderID != "" && target != "kv" {
				return usageError{fmt.Errorf("--order applies to kv only: ClickHouse rows are keyed and archived orders are never rebuilt, replay a range instead")}
			}
			if from != "" {
				t, err := time.Parse(time.RFC3339, from)
				if err != nil {
					return usageError{fmt.Errorf("--from-time: %w", err)}
				}
				o.FromTime = t
			}
			nc, js, err := connectJS(g, "orderflow-replay")
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx := cmd.Context()
			out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
			if !o.DryRun && !force {
				if !confirm(cmd.InOrStdin(), errOut, fmt.Sprintf("Replay --target %s over the range (rewrites what differs)?", target)) {
					return fmt.Errorf("not confirmed: pass --force, or --dry-run to look first")
				}
			}
			// --json prints one JSON object per target replayed, a line each, with
			// "target" naming it (kv's is the replay.Report).
			emit := func(v any, text string, args ...any) error {
				if asJSON {
					return json.NewEncoder(out).Encode(v)
				}
				_, err := fmt.Fprintf(out, text, args...)
				return err
			}
			if target == "archive" || (target == "all" && archiveLocation != "") {
				// The archive holds history the WAL no longer has, so it is never rebuilt
				// from the WAL: replaying it means finishing any interrupted batch and
				// archiving what qualifies now.
				res := archiveReplay{Target: "archive", DryRun: o.DryRun, Location: archiveLocation, MinAge: archiveAfter.String()}
				if o.DryRun {
					if err := emit(res, "archive: would archive orders terminal for longer than %s into %s\n", archiveAfter, archiveLocation); err != nil {
						return err
					}
				} else {
					a, err := archive.New(ctx, js, archive.Config{Location: archiveLocation, MinAge: archiveAfter})
					if err != nil {
						return err
					}
					rep, err := a.RunOnce(ctx)
					if err != nil {
						return err
					}
					res.Orders, res.Events, res.Files, res.Bytes, res.Recovered = rep.Orders, rep.Events, len(rep.Files), rep.Bytes, rep.Recovered
					if err := emit(res, "archive: %d orders, %d events, %d files, %d bytes (finished interrupted batch: %q)\n",
						rep.Orders, rep.Events, len(rep.Files), rep.Bytes, rep.Recovered); err != nil {
						return err
					}
				}
				if target == "archive" {
					return nil
				}
			}
			if target == "clickhouse" || target == "all" {
				from, err := replay.StartSeq(ctx, js, o)
				if err != nil {
					return err
				}
				res := clickhouseReplay{Target: "clickhouse", DryRun: o.DryRun, FromSeq: from}
				if o.DryRun {
					err = emit(res, "clickhouse: would reset the sink consumer to WAL sequence %d\n", from)
				} else {
					if err := chsink.ResetConsumer(ctx, js, chsink.Config{}, from); err != nil {
						return err
					}
					err = emit(res, "clickhouse: the sink consumer restarts at WAL sequence %d; rows are replacing, so nothing double-counts\n", from)
				}
				if err != nil || target == "clickhouse" {
					return err
				}
			}
			o.Progress = progress(errOut)
			rep, err := replay.Snapshots(ctx, js, o)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(out).Encode(kvReplay{Target: "kv", Report: rep})
			}
			done := fmt.Sprintf("rewrote %d", rep.Written)
			if o.DryRun {
				done = "dry run: nothing written"
			}
			fmt.Fprintf(out, "replayed from WAL sequence %d: %d events folded, %d orders recomputed, %d differ; %s (%s)\n",
				rep.FromSeq, rep.Events, rep.Orders, rep.Differ, done, rep.Duration.Round(time.Millisecond))
			for _, d := range rep.Sample {
				fmt.Fprintln(out, "  ", d)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&target, "target", "kv", "projection: kv, clickhouse, archive or all (archived orders are rebuilt by none: their WAL is gone)")
	f.StringVar(&archiveLocation, "archive", "", "archive location (directory or s3://bucket/prefix), for --target archive (or all)")
	f.DurationVar(&archiveAfter, "archive-after", archive.DefaultMinAge, "with --target archive: archive orders terminal for longer than this")
	f.Uint64Var(&o.FromSeq, "from-seq", 1, "first WAL sequence")
	f.StringVar(&from, "from-time", "", "first WAL event at or after this RFC 3339 time (instead of --from-seq)")
	f.StringVar(&o.OrderID, "order", "", "only this order")
	f.BoolVar(&o.DryRun, "dry-run", false, "report what would change, write nothing")
	f.DurationVar(&o.TerminalTTL, "terminal-ttl", 0, "how long the delivered/cancelled snapshots replay writes stay in KV: give serve's --terminal-ttl (default 24h, as serve; ORDERFLOW_TERMINAL_TTL serves both)")
	f.BoolVar(&force, "force", false, "do not ask for confirmation")
	f.BoolVar(&asJSON, "json", false, "machine-readable output")
	return cmd
}

// archiveReplay is replay --target archive's --json line.
type archiveReplay struct {
	Target    string `json:"target"`
	DryRun    bool   `json:"dry_run"`
	Location  string `json:"location"`
	MinAge    string `json:"min_age"`
	Orders    int    `json:"orders"`
	Events    int    `json:"events"`
	Files     int    `json:"files"`
	Bytes     int64  `json:"bytes"`
	Recovered string `json:"recovered_batch,omitempty"`
}

// clickhouseReplay is replay --target clickhouse's --json line.
type clickhouseReplay struct {
	Target  string `json:"target"`
	DryRun  bool   `json:"dry_run"`
	FromSeq uint64 `json:"from_seq"`
}

// kvReplay is replay --target kv's --json line: the report, and the target.
type kvReplay struct {
	Target string `json:"target"`
	replay.Report
}

func newVerify(g *globals) *cobra.Command {
	var asJSON bool
	var dsn string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Recompute every order from the WAL and report each snapshot that disagrees (exit 1 if any)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, js, err := connectJS(g, "orderflow-verify")
			if err != nil {
				return err
			}
			defer nc.Close()
			// One pass over the WAL serves both checks.
			events := map[string]uint64{}
			want, err := verify.FoldWAL(cmd.Context(), js, topology.WALPrefix+".>", func(ev *schemas.Event, _ uint64) { events[ev.OrderID]++ })
			if err != nil {
				return err
			}
			rep, err := verify.Check(cmd.Context(), js, want)
			if err != nil {
				return err
			}
			var rows []verify.RowDifference
			if dsn != "" {
				conn, err := openClickHouse(cmd.Context(), dsn)
				if err != nil {
					return err
				}
				defer conn.Close()
				if rows, err = verify.CheckClickHouse(cmd.Context(), conn, want, events); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if err := json.NewEncoder(out).Encode(map[string]any{"kv": rep, "clickhouse": rows}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(out, "%d orders recomputed from the WAL, %d snapshots differ\n", rep.Orders, len(rep.Differences))
				for _, d := range rep.Differences {
					fmt.Fprintln(out, "  ", d)
				}
				if dsn != "" {
					fmt.Fprintf(out, "%d orders differ in ClickHouse\n", len(rows))
					for _, d := range rows[:min(len(rows), 20)] {
						fmt.Fprintln(out, "  ", d)
					}
				}
			}
			if n := len(rep.Differences) + len(rows); n > 0 {
				return fmt.Errorf("%d differences", n)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "machine-readable output")
	optionalClickHouseFlag(cmd, &dsn, "also check the ClickHouse tables")
	return cmd
}

// confirm asks a yes/no question on a terminal; without one it refuses.
func confirm(in io.Reader, out io.Writer, question string) bool {
	if f, ok := in.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		return false
	}
	fmt.Fprintf(out, "%s [y/N] ", question)
	line, _ := bufio.NewReader(in).ReadString('\n')
	return strings.EqualFold(strings.TrimSpace(line), "y") || strings.EqualFold(strings.TrimSpace(line), "yes")
}

// progress prints a bar with rate and ETA on a terminal, a plain line every 10% otherwise.
func progress(w io.Writer) func(done, total int) {
	start := time.Now()
	f, isFile := w.(*os.File)
	tty := isFile && term.IsTerminal(int(f.Fd()))
	lastPct := -1
	return func(done, total int) {
		pct := done * 100 / max(total, 1)
		el := time.Since(start).Seconds()
		rate := float64(done) / max(el, 1e-9)
		eta := time.Duration(float64(total-done)/max(rate, 1e-9)) * time.Second
		if tty {
			if pct != lastPct || done == total {
				bar := strings.Repeat("#", pct/4) + strings.Repeat(".", 25-pct/4)
				fmt.Fprintf(w, "\r[%s] %3d%% %d/%d orders %.0f/s ETA %s ", bar, pct, done, total, rate, eta.Round(time.Second))
				if done == total {
					fmt.Fprintln(w)
				}
			}
		} else if pct/10 != lastPct/10 || done == total {
			fmt.Fprintf(w, "%d/%d orders (%d%%), %.0f/s, ETA %s\n", done, total, pct, rate, eta.Round(time.Second))
		}
		lastPct = pct
	}
}
