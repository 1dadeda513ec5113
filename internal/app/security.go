package app

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/services/ingest"
	"github.com/orderflow/orderflow/schemas"
)

// SecurityConfig is who may write and connect (DESIGN §8.2).
type SecurityConfig struct {
	// JWKS verifies ingest tokens against an identity provider's key set (a file or
	// an http(s) URL) instead of the local key in <data-dir>/auth.
	JWKS string
	// Audience is the `aud` tokens must carry. Default auth.DefaultAudience.
	Audience string
	// Limits are the ingest API's per-actor token buckets by source; nil = defaults.
	Limits map[schemas.Source]ingest.Limit
	// IngestTimeout bounds the wait for the WAL's ack before a 503. Default 5s.
	IngestTimeout time.Duration
	// Auth turns on NATS accounts and per-role users for the embedded server (the
	// pipeline and the ingest API connect with their own credentials), requires a
	// token for the HTTP read API too, and allows non-loopback listen addresses.
	Auth bool
	// NATSCreds is the .creds file the pipeline connects with to an existing
	// cluster (--nats-url).
	NATSCreds string
	// TLSCert and TLSKey serve HTTP and the embedded NATS server over TLS.
	TLSCert, TLSKey string
	// TLSCA, when set, is trusted (besides the system roots and the certificates
	// in TLSCert) by the instance's own NATS connections.
	TLSCA string
	// HTTPPlaintext allows plain HTTP on a non-loopback address with Auth: TLS ends
	// at a proxy or ingress in front, and bearer tokens cross the last hop in clear.
	HTTPPlaintext bool
}

// secureNATS applies auth and TLS to the embedded server's options.
func secureNATS(o *natsserver.Options, authz *auth.Authority, tlsCfg *tls.Config) error {
	if authz != nil {
		if err := authz.Configure(o); err != nil {
			return err
		}
	}
	if tlsCfg != nil {
		o.TLSConfig = tlsCfg.Clone()
		o.TLS = true
		o.TLSTimeout = 2
	}
	return nil
}

// checkListen is secure by default: without auth, only loopback addresses; with
// auth, HTTP beyond loopback only over TLS (a bearer token sent in clear can be
// replayed by anyone on the path) unless TLS is said to end in front.
func checkListen(cfg ServeConfig) error {
	if cfg.Security.Auth {
		if isLoopback(cfg.HTTPListen) || cfg.Security.TLSCert != "" || cfg.Security.HTTPPlaintext {
			return nil
		}
		return fmt.Errorf("refusing to serve the HTTP API on %s without TLS: bearer tokens would cross the network in clear. "+
			"Give --tls-cert and --tls-key, or --http-plaintext when a proxy or ingress in front terminates TLS", cfg.HTTPListen)
	}
	check := func(what, flag, addr string) error {
		if isLoopback(addr) {
			return nil
		}
		return fmt.Errorf("refusing to serve %s on %s without auth: anyone who can reach it could read orders or publish as any source. "+
			"Turn auth on with --auth (ORDERFLOW_AUTH=true): ingest tokens (orderflow token issue), NATS users per role (orderflow creds issue); "+
			"or listen on a loopback address (%s 127.0.0.1:PORT)", what, addr, flag)
	}
	if err := check("the HTTP API", "--http-listen", cfg.HTTPListen); err != nil {
		return err
	}
	if cfg.NATSURL == "" {
		return check("the embedded NATS server", "--nats-listen", cfg.NATSListen)
	}
	return nil
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkStore refuses a data directory whose WAL lives in the other mode's account:
// streams created without auth are in the global account, with auth in
// ORDERFLOW's, and switching would start from an empty WAL while the old one
// sits unused beside it.
func checkStore(dataDir string, authz *auth.Authority) error {
	global := filepath.Join(dataDir, "jetstream", "$G", "streams")
	if authz != nil && hasEntries(global) {
		return fmt.Errorf("data dir %s holds a WAL created without --auth (%s): with auth the streams live in account %s. "+
			"Start it without --auth, or replay its events into a new data dir started with --auth", dataDir, global, authz.AccountPublicKey())
	}
	if authz == nil {
		if a, err := auth.ExistingAuthority(auth.Dir(dataDir)); err == nil && a != nil {
			acc := filepath.Join(dataDir, "jetstream", a.AccountPublicKey(), "streams")
			if hasEntries(acc) {
				return fmt.Errorf("data dir %s holds a WAL created with --auth (%s): start it with --auth", dataDir, acc)
			}
		}
	}
	return nil
}

func hasEntries(dir string) bool {
	es, err := os.ReadDir(dir)
	return err == nil && len(es) > 0
}

// tlsConfig loads the server certificate, nil when TLS is off.
func tlsConfig(sec SecurityConfig) (*tls.Config, error) {
	if sec.TLSCert == "" && sec.TLSKey == "" {
		return nil, nil
	}
	if sec.TLSCert == "" || sec.TLSKey == "" {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	cert, err := tls.LoadX509KeyPair(sec.TLSCert, sec.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// clientTLS is how the instance's own connections verify the embedded server:
// the system roots, the certificates of --tls-cert (a self-signed one trusts
// itself) and --tls-ca.
func clientTLS(sec SecurityConfig) (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, f := range []string{sec.TLSCert, sec.TLSCA} {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		pool.AppendCertsFromPEM(b)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// natsIdentity is what serve's connections present: with the embedded server and
// auth on, users it signs itself (the pipeline's and the ingest API's); with
// --nats-creds, that file for both.
type natsIdentity struct {
	pipeline, ingest []nats.Option
}

func newNATSIdentity(sec SecurityConfig, authz *auth.Authority, tlsOn bool) (natsIdentity, error) {
	var id natsIdentity
	if tlsOn {
		ct, err := clientTLS(sec)
		if err != nil {
			return id, err
		}
		id.pipeline = append(id.pipeline, nats.Secure(ct))
		id.ingest = append(id.ingest, nats.Secure(ct))
	}
	creds := func(role auth.Role) ([]nats.Option, error) {
		b, err := authz.UserCreds(role, "orderflow-serve-"+string(role), 0)
		if err != nil {
			return nil, err
		}
		return auth.ConnectOptions(b)
	}
	switch {
	case authz != nil:
		p, err := creds(auth.RolePipeline)
		if err != nil {
			return id, err
		}
		i, err := creds(auth.RoleIngest)
		if err != nil {
			return id, err
		}
		id.pipeline, id.ingest = append(id.pipeline, p...), append(id.ingest, i...)
	case sec.NATSCreds != "":
		b, err := os.ReadFile(sec.NATSCreds)
		if err != nil {
			return id, fmt.Errorf("--nats-creds: %w", err)
		}
		o, err := auth.ConnectOptions(b)
		if err != nil {
			return id, fmt.Errorf("--nats-creds %s: %w", sec.NATSCreds, err)
		}
		id.pipeline, id.ingest = append(id.pipeline, o...), append(id.ingest, o...)
	}
	return id, nil
}

// requireToken guards the read API when auth is on: any valid ingest token
// (support tools and apps hold one) may read; health, readiness, metrics and
// the ingest route (which checks its own) stay as they are.
func requireToken(next http.Handler, v *auth.Verifier) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz", "/metrics":
			next.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		raw, ok := auth.BearerToken(r)
		if _, err := v.Verify(r.Context(), raw); !ok || err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orderflow"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"a bearer token is required"}` + "\n"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// tokenKeys is where ingest tokens are verified: --auth-jwks, else the local key.
func tokenKeys(ctx context.Context, dataDir, jwks string) (auth.KeySource, error) {
	if jwks != "" {
		k, err := auth.OpenKeys(ctx, jwks)
		if err != nil {
			return nil, fmt.Errorf("--auth-jwks: %w", err)
		}
		return k, nil
	}
	if dataDir == "" {
		// No data directory to keep a key in (an embedding program, a test): a key
		// of this process only, so no token from elsewhere verifies.
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		return auth.LocalKeys(pub)
	}
	key, err := auth.LoadOrCreateTokenKey(auth.Dir(dataDir))
	if err != nil {
		return nil, fmt.Errorf("local token key: %w", err)
	}
	return auth.LocalKeys(key.Public())
}

// newIngest builds the POST /v1/orders/{id}/events handler and the verifier of its tokens.
func newIngest(ctx context.Context, cfg ServeConfig, js ingest.Publisher, reg prometheus.Registerer, log *slog.Logger) (http.Handler, *auth.Verifier, error) {
	keys, err := tokenKeys(ctx, cfg.DataDir, cfg.Security.JWKS)
	if err != nil {
		return nil, nil, err
	}
	v := auth.NewVerifier(keys, cfg.Security.Audience)
	h, err := ingest.New(ingest.Config{
		JS: js, Tokens: v, Limits: cfg.Security.Limits,
		Timeout: cfg.Security.IngestTimeout, Registerer: reg, Logger: log,
	})
	return h, v, err
}
