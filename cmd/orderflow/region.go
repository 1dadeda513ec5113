package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/orderflow/orderflow/internal/adapters/regions"
	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/services/auth"
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

// peerCredsFlag is --peer-creds NAME=FILE, repeatable (a YAML map in --config).
type peerCredsFlag struct{ creds *map[string]string }

func (p peerCredsFlag) String() string {
	if p.creds == nil {
		return ""
	}
	var parts []string
	for name, file := range *p.creds {
		parts = append(parts, name+"="+file)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (p peerCredsFlag) Set(v string) error {
	name, file, ok := strings.Cut(v, "=")
	if !ok || name == "" || file == "" {
		return fmt.Errorf("peer creds %q: want NAME=FILE", v)
	}
	if *p.creds == nil {
		*p.creds = map[string]string{}
	}
	(*p.creds)[name] = file
	return nil
}

func (p peerCredsFlag) Type() string { return "NAME=FILE" }

// registerRegionFlags adds serve's region flags (README "Regions").
func registerRegionFlags(f *pflag.FlagSet, cfg *app.ServeConfig) {
	f.StringVar(&cfg.Region.Name, "region", "", "this region's name, [a-z0-9-]{1,16} (also its JetStream domain); empty = single region")
	f.StringVar(&cfg.Region.Listen, "region-listen", "", "where peer regions' servers connect (embedded server), HOST:PORT")
	f.Var(peerFlag{&cfg.Region.Peers}, "peer", "another region, NAME=HOST:PORT (its --region-listen), repeatable; with --nats-url, NAME alone")
	f.Var(peerCredsFlag{&cfg.Region.PeerCreds}, "peer-creds", "with --auth: the .creds file the peer region issued for this one (there: orderflow creds issue --role region), NAME=FILE, repeatable; needed for each peer whose name sorts after this region's (this region opens that link)")
	f.BoolVar(&cfg.Region.Handover, "milestones-handover", false, "at start, copy a local milestone ledger (or a copy of another region) that disagrees with --milestones-region to the home's ledger, then copy the home's; without it serve refuses to start on one")
	f.StringVar(&cfg.Region.MilestonesHome, "milestones-region", "", "the region holding the one global milestone ledger (the others copy it); empty = the region whose name sorts first")
}

func newRegion(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "region", Short: "Regions: replication state between this region and its peers"}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Per peer: link up/down, the last replicated sequence, lag in events and seconds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, err := connect(g, "orderflow-region-status", auth.RegionInbox())
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
			if err := w.Flush(); err != nil {
				return err
			}
			ms := st.Milestones
			line := fmt.Sprintf("milestones: home %s, waiting for the home %d", ms.Home, ms.Queued)
			if c := ms.Copy; c != nil {
				line += fmt.Sprintf(", this region's copy: link %s, lag %d", c.Link, c.LagEvents)
				if c.Error != "" {
					line += ", error: " + c.Error
				}
			}
			if ms.Held != "" {
				line += ", HELD (this region's ledger takes no milestones): " + ms.Held
			}
			_, err = fmt.Fprintln(out, line)
			return err
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	cmd.AddCommand(status, newPromoteMilestones(g), newDemoteMilestones(g))
	return cmd
}

// emitJSONOr prints v as JSON with --json, else the text line.
func emitJSONOr(cmd *cobra.Command, asJSON bool, v any, text string, args ...any) error {
	out := cmd.OutOrStdout()
	if asJSON {
		return json.NewEncoder(out).Encode(v)
	}
	_, err := fmt.Fprintf(out, text+"\n", args...)
	return err
}

func newPromoteMilestones(g *globals) *cobra.Command {
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:   "promote-milestones",
		Short: "Make this region's milestone copy the global ledger, when the milestones home is lost for good",
		Long: `Run against the surviving region. Its ORDER_MILESTONES, a copy of the lost home's
ledger, becomes the ledger (keeping every milestone it had copied, and recording the
promotion: this region, the old home, an epoch); then run every region with
--milestones-region <this region>. Milestones the old home had stored but the copy
did not hold yet (the copy lag printed) are missing from the new ledger. If the old
home never returns they stay missing; if it returns, its handover
(serve --milestones-handover) adds them, and a billing consumer of the new ledger
charges them then: again, if one had charged them in the old home, so the payment
provider's idempotency key (the milestone id) must make the repeat a no-op.
Refused while the old home still answers.`,
		Example: `  orderflow region promote-milestones --nats-url nats://region-b:4222 --force`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !force && !confirm(cmd.InOrStdin(), cmd.ErrOrStderr(), "Make this region's ORDER_MILESTONES the global milestone ledger?") {
				return errors.New("not confirmed: pass --force")
			}
			nc, err := connect(g, "orderflow-region-promote", auth.RegionInbox())
			if err != nil {
				return err
			}
			defer nc.Close()
			p, err := regions.PromoteMilestones(cmd.Context(), nc)
			if err != nil {
				return err
			}
			return emitJSONOr(cmd, asJSON, p, "%s", promotionText(p))
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return cmd
}

// promotionText is promote-milestones' line without --json.
func promotionText(p regions.Promotion) string {
	return fmt.Sprintf("region %s holds the milestone ledger now (%d milestones, epoch %d); the copy lacked %d of region %s's when last heard: "+
		"those are missing from the ledger unless region %s returns and hands its ledger over. Run every region with --milestones-region %s.",
		p.Region, p.Milestones, p.Epoch, p.CopyLag, p.OldHome, p.OldHome, p.Region)
}

func newDemoteMilestones(g *globals) *cobra.Command {
	var force, asJSON bool
	var home string
	cmd := &cobra.Command{
		Use:   "demote-milestones",
		Short: "Hand this region's milestone ledger (or stale copy) over to the milestones home, then remove it",
		Long: `Run against a region whose ORDER_MILESTONES disagrees with --milestones-region (serve
refuses to start on it and names this command): typically the old home coming back
after another region was promoted. First the stream stops taking milestones (lanes
still running keep theirs in their outbox); every milestone it holds that the home
lacks is stored in the home's ledger through the link, counting only the home's
acknowledgements; each is then looked up in the home's ledger, and only when all are
there is the stream removed (otherwise it is kept, taking nothing, and running this
again finishes it). serve --milestones-region <home> then recreates it as a copy.`,
		Example: `  orderflow region demote-milestones --nats-url nats://region-a:4222 --milestones-region b --force`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if home == "" {
				return usageError{errors.New("--milestones-region: the region holding the ledger now")}
			}
			if !force && !confirm(cmd.InOrStdin(), cmd.ErrOrStderr(), fmt.Sprintf("Copy this region's milestones to region %s's ledger and remove them here?", home)) {
				return errors.New("not confirmed: pass --force")
			}
			nc, err := connect(g, "orderflow-region-demote", auth.RegionInbox())
			if err != nil {
				return err
			}
			defer nc.Close()
			h, err := regions.DemoteMilestones(cmd.Context(), nc, home)
			if err != nil {
				return err
			}
			return emitJSONOr(cmd, asJSON, h, "region %s: %d milestones copied to region %s's ledger, %d were there already; ORDER_MILESTONES removed here (serve --milestones-region %s copies %s's).",
				h.Region, h.Copied, h.Home, h.AlreadyThere, h.Home, h.Home)
		},
	}
	cmd.Flags().StringVar(&home, "milestones-region", "", "the region holding the milestone ledger now")
	cmd.Flags().BoolVar(&force, "force", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	return cmd
}
