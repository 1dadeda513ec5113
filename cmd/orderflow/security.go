package main

import (
	"github.com/spf13/pflag"

	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/services/ingest"
)

// securityFlags are serve's flags for tokens, limits, NATS users and TLS.
type securityFlags struct {
	limits []string
}

func (s *securityFlags) register(f *pflag.FlagSet, cfg *app.ServeConfig) {
	f.StringVar(&cfg.Security.JWKS, "auth-jwks", "", "verify ingest tokens against this JWK Set (file or http(s) URL) instead of the local key in <data-dir>/auth")
	f.StringVar(&cfg.Security.Audience, "auth-audience", auth.DefaultAudience, "the aud claim ingest tokens must carry")
	f.StringSliceVar(&s.limits, "ingest-limit", nil, "per-actor rate limit of a source, source=rate[:burst] in requests/s, repeatable (defaults: platform, estimator 500; merchant 20; driver 10; agent 5)")
	f.BoolVar(&cfg.Security.Auth, "auth", false, "require credentials: NATS users per role on the embedded server (orderflow creds issue), a bearer token for the HTTP read API; needed to listen on non-loopback addresses")
	f.StringVar(&cfg.Security.TLSCert, "tls-cert", "", "PEM certificate (chain) to serve HTTP and the embedded NATS server over TLS")
	f.StringVar(&cfg.Security.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	f.BoolVar(&cfg.Security.HTTPPlaintext, "http-plaintext", false, "with --auth, serve plain HTTP on a non-loopback --http-listen: TLS ends at a proxy or ingress in front")
	f.StringVar(&cfg.Security.TLSCA, "tls-ca", "", "extra CA the instance trusts for its own connections to the embedded server")
	f.DurationVar(&cfg.Security.IngestTimeout, "ingest-timeout", 0, "how long the ingest API waits for the WAL before answering 503 (default 5s)")
}

func (s *securityFlags) apply(cfg *app.ServeConfig) error {
	if len(s.limits) == 0 {
		return nil
	}
	cfg.Security.Limits = ingest.DefaultLimits()
	for _, l := range s.limits {
		src, lim, err := ingest.ParseLimit(l)
		if err != nil {
			return err
		}
		cfg.Security.Limits[src] = lim
	}
	return nil
}
