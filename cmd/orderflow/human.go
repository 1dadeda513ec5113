package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/services/orders"
)

// printHuman renders a view or a timeline for a terminal.
func printHuman(w io.Writer, v any) error {
	switch x := v.(type) {
	case resolver.View:
		printView(w, x)
	case orders.Timeline:
		if x.Current != nil {
			printView(w, *x.Current)
			fmt.Fprintln(w)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "WAL\tSOURCE\tSEQ\tSTATUS\tDECISION\tREASON\tEVENT")
		for _, e := range x.Events {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\n", e.WalSeq, e.Source, e.SourceSeq, e.Status, e.Decision, e.Reason, e.EventID)
		}
		return tw.Flush()
	}
	return nil
}

func printView(w io.Writer, v resolver.View) {
	pred := ""
	if v.Predicted {
		pred = " (predicted)"
	}
	fmt.Fprintf(w, "order %s: %s%s by %s\n", v.OrderID, v.Status, pred, v.StatusSource)
	if v.ETA != nil {
		fmt.Fprintf(w, "  eta        %s\n", v.ETA.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "  version    %v\n  wal_seq    %d\n", v.Version, v.WalSeq)
	for _, kv := range [][2]string{{"customer", v.CustomerID}, {"restaurant", v.RestaurantID}, {"dasher", v.DasherID}} {
		if kv[1] != "" {
			fmt.Fprintf(w, "  %-10s %s\n", kv[0], kv[1])
		}
	}
}
