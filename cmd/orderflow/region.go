package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/orderflow/orderflow/internal/adapters/regions"
	"github.com/orderflow/orderflow/internal/app"
)

// peerFlag is --peer NAME=HOST:PORT, repeatable (a YAML map in --config).
type peerFlag struct{ peers *[]regions.Peer }

func (p peerFlag) String() string {
	if p.peers == nil {
		return ""
	}
	s := ""
	for i, x := range *p.peers {
		if i > 0 {
			s += ","
		}
		s += x.Name + "=" + x.Addr
	}
	return s
}

func (p peerFlag) Set(v string) error {
	peer, err := regions.ParsePeer(v)
	if err != nil {
		return err
	}
	*p.peers = append(*p.peers, peer)
	return nil
}

func (p peerFlag) Type() string { return "NAME=HOST:PORT" }

// registerRegionFlags adds serve's region flags (README "Regions").
func registerRegionFlags(f *pflag.FlagSet, cfg *app.ServeConfig) {
	f.StringVar(&cfg.Region.Name, "region", "", "this region's name, [a-z0-9-]{1,16} (also its JetStream domain); empty = single region")
	f.StringVar(&cfg.Region.Listen, "region-listen", "", "where peer regions' servers connect (embedded server), HOST:PORT")
	f.Var(peerFlag{&cfg.Region.Peers}, "peer", "another region, NAME=HOST:PORT (its --region-listen), repeatable; with --nats-url, NAME alone")
}

func newRegion(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "region", Short: "Regions: replication state between this region and its peers"}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Per peer: link up/down, the last replicated sequence, lag in events and seconds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, _, err := connectJS(g, "orderflow-region-status")
			if err != nil {
				return err
			}
			defer nc.Close()
			st, err := regions.Read(cmd.Context(), nc)
			if errors.Is(err, regions.ErrNotRegional) {
				return fmt.Errorf("%w (serve was started without --region/--peer)", err)
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			fmt.Fprintf(out, "region %s: own events %d, WAL %d (own events not in the WAL yet: %d)\n", st.Region, st.IngestLastSeq, st.WALLastSeq, st.LocalLagEvents)
			w := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
			fmt.Fprintln(w, "PEER\tLINK\tPEER LAST\tREPLICATED\tLAG EVENTS\tLAG\tLAST HEARD\tERROR")
			for _, p := range st.Peers {
				peerLast := "?"
				if p.Link == "up" {
					peerLast = fmt.Sprint(p.PeerLastSeq)
				}
				heard := "never"
				if p.LastHeard >= 0 {
					heard = p.LastHeard.Round(time.Millisecond).String() + " ago"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", p.Peer, p.Link, peerLast, p.ReplicatedSeq, p.LagEvents,
					time.Duration(p.LagSeconds*float64(time.Second)).Round(time.Millisecond), heard, p.Error)
			}
			return w.Flush()
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	cmd.AddCommand(status)
	return cmd
}
