package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/orderflow/orderflow/internal/adapters/snapshot"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/services/orders"
	"github.com/orderflow/orderflow/sinks/archive"
)

func newStatus(g *globals) *cobra.Command {
	var timeline, asJSON bool
	var archiveLocation string
	cmd := &cobra.Command{
		Use:   "status ORDER_ID",
		Short: "Print an order's current status (never older than the WAL), or its timeline",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			nc, js, err := connectJS(g, "orderflow-status")
			if err != nil {
				return err
			}
			defer nc.Close()
			log, err := wal.Open(ctx, js)
			if err != nil {
				return err
			}
			snaps, err := snapshot.Open(ctx, js, 0)
			if err != nil {
				return err
			}
			r := orders.NewReader(log, snaps, 1)
			out := cmd.OutOrStdout()
			var v any
			if timeline {
				v, err = r.Timeline(ctx, args[0])
			} else {
				v, err = r.Get(ctx, args[0])
			}
			if errors.Is(err, orders.ErrNotFound) && archiveLocation != "" {
				a, aerr := archive.New(ctx, js, archive.Config{Location: archiveLocation})
				if aerr != nil {
					return aerr
				}
				o, found, aerr := a.Lookup(ctx, args[0])
				if aerr != nil {
					return aerr
				}
				if found {
					if asJSON || timeline {
						enc := json.NewEncoder(out)
						enc.SetIndent("", "  ")
						return enc.Encode(o)
					}
					fmt.Fprintf(out, "(from the archive, %d events)\n", len(o.Events))
					return printHuman(out, o.Current)
				}
			}
			if errors.Is(err, orders.ErrNotFound) {
				return fmt.Errorf("order %s not found", args[0])
			}
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			}
			return printHuman(out, v)
		},
	}
	cmd.Flags().BoolVar(&timeline, "timeline", false, "every event with its decision and reason")
	cmd.Flags().BoolVar(&asJSON, "json", false, "machine-readable output")
	cmd.Flags().StringVar(&archiveLocation, "archive", "", "also look in this archive (directory or s3://bucket/prefix) for orders purged from the WAL")
	return cmd
}
