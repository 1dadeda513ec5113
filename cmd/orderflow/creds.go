package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/orderflow/orderflow/internal/services/auth"
)

func newCreds() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "creds",
		Short: "NATS credentials per role for the embedded server started with --auth",
	}
	var dataDir, role, out, name, dasher string
	var ttl time.Duration
	issue := &cobra.Command{
		Use:   "issue --role R [--out F]",
		Short: "Write a .creds file for a role (nats --creds F --inbox-prefix _INBOX_<role>)",
		Long: "Write a .creds file (a user JWT signed by the data directory's ORDERFLOW account, and its seed)\n" +
			"for one role: " + fmt.Sprint(auth.Roles) + ".\n" +
			"Clients must receive replies under the role's inbox prefix, _INBOX_<role> (nats --inbox-prefix).\n" +
			"The region role is for a peer region's server, which opens its link to this one with it (serve --peer-creds NAME=FILE).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r := auth.Role(role)
			if !r.Valid() {
				return usageError{fmt.Errorf("--role %q: one of %v", role, auth.Roles)}
			}
			if ttl < 0 {
				return usageError{fmt.Errorf("--ttl must be >= 0")}
			}
			authz, err := auth.LoadOrCreateAuthority(auth.Dir(dataDir))
			if err != nil {
				return err
			}
			var b []byte
			switch {
			case dasher != "" && r != auth.RoleDriver:
				return usageError{fmt.Errorf("--dasher is for --role driver")}
			case dasher != "":
				b, err = authz.DasherCreds(dasher, name, ttl)
			default:
				b, err = authz.UserCreds(r, name, ttl)
			}
			if err != nil {
				return err
			}
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}
			if err := os.WriteFile(out, b, 0o600); err != nil {
				return err
			}
			if r == auth.RoleRegion {
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s for role region; the peer region that opens the link to this one uses it: serve --peer-creds <this region>=%s\n", out, out)
				return nil
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s for role %s; use it with: nats --creds %s --inbox-prefix %s\n", out, r, out, r.InboxPrefix())
			return nil
		},
	}
	f := issue.Flags()
	f.StringVar(&dataDir, "data-dir", "./orderflow-data", "data directory of the serve --auth instance whose account signs the user")
	f.StringVar(&role, "role", "", "pipeline, ingest, platform, merchant, driver, estimator, agent, reader, analyst, or region (a peer region's link, serve --peer-creds)")
	f.StringVar(&out, "out", "", "file to write (mode 0600); default stdout")
	f.StringVar(&name, "name", "", "user name shown in the server's logs (default the role)")
	f.DurationVar(&ttl, "ttl", 30*24*time.Hour, "how long the credentials are valid; 0 = never expire (a leaked file stays usable until the account key is rotated)")
	f.StringVar(&dasher, "dasher", "", "with --role driver: a dasher's own credentials, which may also publish its positions on dashers.locations.<ID> (and no other dasher's)")
	_ = issue.MarkFlagRequired("role")
	cmd.AddCommand(issue)
	return cmd
}
