package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/schemas"
)

func newToken() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Bearer tokens for the ingest API (POST /v1/orders/{id}/events)",
	}
	var dataDir, source, actor, audience string
	var ttl time.Duration
	issue := &cobra.Command{
		Use:   "issue --source S --actor A [--ttl D]",
		Short: "Mint a token signed by the local key in <data-dir>/auth (serve verifies it unless --auth-jwks is set)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			src := schemas.Source(source)
			if !src.Valid() {
				return usageError{fmt.Errorf("--source %q: one of %v", source, schemas.Sources)}
			}
			if ttl <= 0 {
				return usageError{fmt.Errorf("--ttl must be > 0")}
			}
			key, err := auth.LoadOrCreateTokenKey(auth.Dir(dataDir))
			if err != nil {
				return err
			}
			tok, err := auth.Issue(key, auth.IssueRequest{Source: src, ActorID: actor, TTL: ttl, Audience: audience})
			if err != nil {
				return usageError{err}
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok)
			return err
		},
	}
	f := issue.Flags()
	f.StringVar(&dataDir, "data-dir", "./orderflow-data", "data directory whose local key signs the token (the one serve uses)")
	f.StringVar(&source, "source", "", "the source the bearer publishes as: platform, merchant, driver, estimator or agent")
	f.StringVar(&actor, "actor", "", "the bearer's actor id (dasher, merchant user, agent, service instance); driver, merchant and agent events must carry it as actor_id")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	f.StringVar(&audience, "audience", auth.DefaultAudience, "the aud claim; serve's --auth-audience must match")
	_ = issue.MarkFlagRequired("source")
	_ = issue.MarkFlagRequired("actor")
	cmd.AddCommand(issue)
	return cmd
}
