package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/internal/adapters/regions"
	"github.com/orderflow/orderflow/internal/retry"
	"github.com/orderflow/orderflow/internal/services/auth"
)

// regionPollInterval is how often /metrics' region gauges are refreshed.
const regionPollInterval = time.Second

// prepareRegion checks the region settings and derives the topology's from them.
// Without --region or --peer it changes nothing: the single-region contract.
func prepareRegion(cfg *ServeConfig) error {
	r := &cfg.Region
	if !r.Enabled() {
		return nil
	}
	r.SetDefaults()
	if err := r.Validate(); err != nil {
		return err
	}
	switch {
	case len(r.PeerCreds) > 0 && cfg.NATSURL != "":
		return errors.New("--peer-creds is for the embedded server's links; with --nats-url the cluster's operator configures the leafnodes")
	case cfg.Security.Auth:
		// The links authenticate (regions.Config.SecureLinks): --region-listen may
		// face the network.
	case len(r.PeerCreds) > 0:
		return errors.New("--peer-creds needs --auth: a region without auth has no account to bind the link to; start both regions with --auth")
	case cfg.NATSURL == "" && r.Listen != "" && !isLoopback(r.Listen):
		return fmt.Errorf("refusing to listen for peer regions on %s without auth: anyone who can reach it could join the WAL; "+
			"start both regions with --auth (links then authenticate with --peer-creds), or use a loopback address behind a tunnel (--region-listen 127.0.0.1:PORT)", r.Listen)
	}
	cfg.Topology.Region = r.Name
	cfg.Topology.Peers = r.PeerNames()
	cfg.Topology.MilestonesHome = r.MilestonesHome
	return nil
}

// secureRegionLinks authenticates the region's links once the embedded server
// trusts only authz, and runs them over TLS when serve has a certificate.
func secureRegionLinks(o *natsserver.Options, cfg ServeConfig, authz *auth.Authority, tlsCfg *tls.Config) error {
	if authz == nil || !cfg.Region.Enabled() {
		return nil
	}
	sec := regions.LinkSecurity{Account: authz.AccountPublicKey(), ListenTLS: tlsCfg}
	if tlsCfg != nil {
		dial, err := clientTLS(cfg.Security)
		if err != nil {
			return err
		}
		sec.DialTLS = dial
	}
	return cfg.Region.SecureLinks(o, sec)
}

// connectRegion is the connection of the requests this region sends its peers:
// their replies come back over the link, which carries the region inbox
// (auth.RegionInbox) and not the pipeline's, so the link never sees the replies to
// the pipeline's own requests. Without regions, nil.
func connectRegion(url string, cfg ServeConfig, ids natsIdentity) (*nats.Conn, error) {
	if !cfg.Region.Enabled() {
		return nil, nil
	}
	conns, err := Connect(url, "orderflow-serve-region", 1, append(ids.pipeline, auth.RegionInbox())...)
	if err != nil {
		return nil, err
	}
	return conns[0], nil
}

// handOverMilestones runs DemoteMilestones before provisioning when serve was asked
// to (--milestones-handover) and this region is not the milestones home: it waits
// for the home to answer, since the milestones go there first.
func handOverMilestones(ctx context.Context, nc *nats.Conn, cfg ServeConfig, log *slog.Logger) error {
	r := cfg.Region
	if !r.Enabled() || !r.Handover || r.MilestonesHome == r.Name {
		return nil
	}
	err := retry.Do(ctx, retry.Backoff{Initial: time.Second, Attempts: 120}, func(ctx context.Context, _ int) error {
		if !regions.Answers(ctx, nc, r.MilestonesHome) {
			return fmt.Errorf("milestones home %s does not answer", r.MilestonesHome)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("hand milestones over: %w", err)
	}
	h, err := regions.DemoteMilestones(ctx, nc, r.MilestonesHome)
	if err != nil {
		return fmt.Errorf("hand milestones over to region %s: %w", r.MilestonesHome, err)
	}
	if h.Copied+h.AlreadyThere > 0 {
		log.Info("milestones handed over to the milestones home", "home", h.Home, "copied", h.Copied, "already_there", h.AlreadyThere)
	}
	return nil
}

// guardMilestonesHome, in the milestones home, asks the peer before the lanes
// start whether it copies this region's ledger (regions.Guard): it refuses to
// start when the peer holds the ledger by a later promotion, and holds this
// region's ledger while the peer does not answer. Nil elsewhere.
func guardMilestonesHome(ctx context.Context, nc *nats.Conn, cfg ServeConfig, log *slog.Logger) (*regions.Guard, error) {
	r := cfg.Region
	if !r.Enabled() || r.MilestonesHome != r.Name || len(r.Peers) == 0 {
		return nil, nil
	}
	topo := cfg.Topology
	topo.SetDefaults()
	g, err := regions.NewGuard(nc, r.Name, r.Peers[0].Name, topo.MilestonesConfig(), log)
	if err != nil {
		return nil, err
	}
	if err := g.Start(ctx, homeCheckWait); err != nil {
		return nil, fmt.Errorf("milestones home: %w", err)
	}
	return g, nil
}

// homeCheckWait is how long the start waits for the peer to answer through the
// link (up within a second when the peer runs) before holding the ledger.
const homeCheckWait = 5 * time.Second

// runRegion keeps the region gauges current, restarts stalled sources, forwards
// this region's milestones to the milestones home and, at the home, keeps
// checking that it is the only one (guard), until ctx ends.
func runRegion(ctx context.Context, wg *sync.WaitGroup, cfg ServeConfig, nc *nats.Conn, guard *regions.Guard, reg prometheus.Registerer, log *slog.Logger) {
	if !cfg.Region.Enabled() {
		return
	}
	if guard != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			guard.Run(ctx, regionPollInterval)
		}()
	}
	m := regions.NewMetrics(reg)
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.Poll(ctx, nc, regionPollInterval, log)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		regions.Forward(ctx, nc, log)
	}()
}
