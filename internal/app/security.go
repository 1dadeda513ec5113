package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/internal/auth"
	"github.com/orderflow/orderflow/internal/ingest"
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
	key, err := auth.LoadOrCreateTokenKey(auth.Dir(dataDir))
	if err != nil {
		return nil, fmt.Errorf("local token key: %w", err)
	}
	return auth.LocalKeys(key.Public())
}

// newIngest builds the POST /v1/orders/{id}/events handler.
func newIngest(ctx context.Context, cfg ServeConfig, js ingest.Publisher, reg prometheus.Registerer, log *slog.Logger) (http.Handler, error) {
	keys, err := tokenKeys(ctx, cfg.DataDir, cfg.Security.JWKS)
	if err != nil {
		return nil, err
	}
	return ingest.New(ingest.Config{
		JS: js, Tokens: auth.NewVerifier(keys, cfg.Security.Audience), Limits: cfg.Security.Limits,
		Timeout: cfg.Security.IngestTimeout, Registerer: reg, Logger: log,
	})
}
