package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	chsink "github.com/orderflow/orderflow/sinks/clickhouse"
)

// defaultClickHouseDSN is the one default ClickHouse DSN: the database commands
// that need ClickHouse (query, migrate) use when none is given, and the one to give
// serve and verify, for which ClickHouse is optional and off unless a DSN is set.
// ORDERFLOW_CLICKHOUSE_DSN (or clickhouse-dsn in --config) sets it for all four.
const defaultClickHouseDSN = "clickhouse://127.0.0.1:9000/orderflow"

// clickhouseFlag is the DSN a command that needs ClickHouse takes.
func clickhouseFlag(cmd *cobra.Command, dsn *string) {
	cmd.Flags().StringVar(dsn, "clickhouse-dsn", defaultClickHouseDSN, "ClickHouse (native protocol)")
}

// optionalClickHouseFlag is the DSN of a command for which ClickHouse is optional:
// empty (the default) leaves it off; what. says what setting it does.
func optionalClickHouseFlag(cmd *cobra.Command, dsn *string, what string) {
	cmd.Flags().StringVar(dsn, "clickhouse-dsn", "", what+", e.g. "+defaultClickHouseDSN+" (native protocol; the DSN query and migrate use by default)")
}

// clickhouseClusterFlag is the cluster a command that migrates the schema creates
// it on (ORDERFLOW_CLICKHOUSE_CLUSTER, or clickhouse-cluster in --config).
func clickhouseClusterFlag(cmd *cobra.Command, cluster *string) {
	cmd.Flags().StringVar(cluster, "clickhouse-cluster", "", "create the schema ON CLUSTER on this remote_servers cluster: replicated <table>_local tables, Distributed tables under the public names (needs ZooKeeper and distributed_ddl; empty: one server)")
}

func openClickHouse(ctx context.Context, dsn string) (driver.Conn, error) {
	conn, err := chsink.Open(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("clickhouse at %s: %w", dsn, err)
	}
	return conn, nil
}

func newMigrate() *cobra.Command {
	var dsn, cluster string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the ClickHouse schema migrations (serve does this too)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := openClickHouse(cmd.Context(), dsn)
			if err != nil {
				return err
			}
			defer conn.Close()
			applied, err := chsink.Migrate(cmd.Context(), conn, chsink.Layout{Cluster: cluster})
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "schema is up to date")
			}
			for _, m := range applied {
				fmt.Fprintln(cmd.OutOrStdout(), "applied", m)
			}
			return nil
		},
	}
	clickhouseFlag(cmd, &dsn)
	clickhouseClusterFlag(cmd, &cluster)
	return cmd
}

func newQuery() *cobra.Command {
	root := &cobra.Command{Use: "query", Short: "Analyst queries over ClickHouse"}
	root.AddCommand(newQueryOrders(), newQueryStats())
	return root
}

func newQueryOrders() *cobra.Command {
	var (
		dsn, customer, restaurant, dasher string
		status, since, until, cursor      string
		limit                             int
		asJSON                            bool
	)
	cmd := &cobra.Command{
		Use:     "orders",
		Short:   "Orders of a customer, restaurant or dasher (or all), newest first, page by page",
		Example: "  orderflow query orders --restaurant res-0002 --status delivered --since 2h\n  orderflow query orders --customer cus-000247 --limit 20 --cursor <next_cursor>",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			entity, id := "", ""
			for _, e := range []struct{ name, id string }{{"customer", customer}, {"restaurant", restaurant}, {"dasher", dasher}} {
				if e.id != "" {
					if entity != "" {
						return usageError{errors.New("give at most one of --customer, --restaurant, --dasher")}
					}
					entity, id = e.name, e.id
				}
			}
			// The flags take the HTTP API's path through the one query parser.
			v := url.Values{}
			for k, val := range map[string]string{"status": status, "since": since, "until": until, "cursor": cursor} {
				if val != "" {
					v.Set(k, val)
				}
			}
			if cmd.Flags().Changed("limit") {
				v.Set("limit", fmt.Sprint(limit))
			}
			q, err := chsink.ParseOrdersQuery(entity, id, v, time.Now())
			if err != nil {
				return usageError{err}
			}
			conn, err := openClickHouse(cmd.Context(), dsn)
			if err != nil {
				return err
			}
			defer conn.Close()
			page, err := chsink.ListOrders(cmd.Context(), conn, q)
			if errors.Is(err, chsink.ErrBadQuery) {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(page)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CREATED\tORDER\tSTATUS\tCUSTOMER\tRESTAURANT\tDASHER")
			for _, o := range page.Orders {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", o.CreatedAt.Format(time.RFC3339), o.OrderID, o.Status, o.CustomerID, o.RestaurantID, o.DasherID)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.NextCursor != "" {
				fmt.Fprintf(out, "next page: --cursor %s\n", page.NextCursor)
			}
			return nil
		},
	}
	f := cmd.Flags()
	clickhouseFlag(cmd, &dsn)
	f.StringVar(&customer, "customer", "", "customer id")
	f.StringVar(&restaurant, "restaurant", "", "restaurant id")
	f.StringVar(&dasher, "dasher", "", "dasher id")
	f.StringVar(&status, "status", "", "current status")
	f.StringVar(&since, "since", "", "created at or after: RFC 3339, Unix seconds, or a duration ago (2h)")
	f.StringVar(&until, "until", "", "created before: RFC 3339, Unix seconds, or a duration ago")
	f.IntVar(&limit, "limit", 0, "orders per page (default 50)")
	f.StringVar(&cursor, "cursor", "", "the previous page's next cursor")
	f.BoolVar(&asJSON, "json", false, "machine-readable output")
	return cmd
}

func newQueryStats() *cobra.Command {
	var (
		dsn, since, until string
		bucket            time.Duration
		asJSON            bool
	)
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Orders entering each status per time bucket, and pickup-to-delivery durations per restaurant",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now()
			from, err := chsink.ParseTime(since, now)
			if err != nil {
				return usageError{fmt.Errorf("--since: %w", err)}
			}
			to := now
			if until != "" {
				if to, err = chsink.ParseTime(until, now); err != nil {
					return usageError{fmt.Errorf("--until: %w", err)}
				}
			}
			conn, err := openClickHouse(cmd.Context(), dsn)
			if err != nil {
				return err
			}
			defer conn.Close()
			counts, err := chsink.StatusCounts(cmd.Context(), conn, from, to, bucket)
			if err != nil {
				return err
			}
			durs, err := chsink.PickupToDelivery(cmd.Context(), conn, from, to)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(map[string]any{"status_counts": counts, "pickup_to_delivery": durs})
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "BUCKET\tSTATUS\tORDERS")
			for _, c := range counts {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", c.Bucket.Format(time.RFC3339), c.Status, c.Orders)
			}
			fmt.Fprintln(tw, "\nRESTAURANT\tORDERS\tPICKUP->DELIVERY P50\tP90\tAVG")
			for _, d := range durs {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", d.RestaurantID, d.Orders, d.P50.Round(time.Second), d.P90.Round(time.Second), d.Avg.Round(time.Second))
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	clickhouseFlag(cmd, &dsn)
	f.StringVar(&since, "since", "24h", "from: RFC 3339, Unix seconds, or a duration ago")
	f.StringVar(&until, "until", "", "to (default now)")
	f.DurationVar(&bucket, "bucket", time.Hour, "time bucket for status counts")
	f.BoolVar(&asJSON, "json", false, "machine-readable output")
	return cmd
}
