package regions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/pipelines/topology"
)

// A region configured as the milestones home must be the only one: two ledgers
// taking milestones would each feed billing (a milestone charged twice). That
// happens when the old home comes back with its old flags after a promotion, or
// when a partition let an operator promote a copy while the home still ran. Only
// the peer knows, so the home asks it (Guard): the peer's ORDER_MILESTONES must
// be a copy of this region's. Until it is known to be, or when the peer holds a
// ledger that takes milestones and no later promotion than this region's, this
// region's ledger is held: it takes nothing (topology.MilestonesHeldSubject), so
// the lanes' milestones stay in their outbox and forwarded ones in the peers'
// queues, and none enters a second ledger. Holding costs only delay: they are
// published once the hold ends.

// HomeVerdict is what the peer says about this region being the home.
type HomeVerdict int

const (
	// HomeUnconfirmed: the peer does not answer, or its ORDER_MILESTONES is
	// missing, a copy of another region, or a home's ledger its guard holds.
	HomeUnconfirmed HomeVerdict = iota
	// HomeConfirmed: the peer's ORDER_MILESTONES is a copy of this region's, or
	// a ledger being handed over (it takes nothing and will be one).
	HomeConfirmed
	// HomeContested: the peer's ORDER_MILESTONES is a ledger taking milestones.
	HomeContested
)

// HomeCheck is one look at the peer from a region configured as the home.
type HomeCheck struct {
	Verdict HomeVerdict
	Peer    string
	// Epoch and PeerEpoch are the ledgers' promotion epochs (topology.MetaEpoch).
	Epoch, PeerEpoch int
	// PromotedFrom is the peer ledger's record of the home it replaced, if any.
	PromotedFrom string
	// Why says what the peer's stream is, for logs and errors.
	Why string
}

// Supersedes reports a contested home whose own ledger is the later promotion:
// the peer's ledger is the stale one, and the peer (its Guard, or its operator
// with a handover) must give way.
func (c HomeCheck) Supersedes() bool { return c.Verdict == HomeContested && c.Epoch > c.PeerEpoch }

// Yield reports a home that must not take milestones now.
func (c HomeCheck) Yield() bool { return c.Verdict == HomeContested && !c.Supersedes() }

// judgeHome is the decision: region's ledger has promotion epoch epoch, and the
// peer's ORDER_MILESTONES has configuration peer.
func judgeHome(region string, epoch int, peerName string, peer jetstream.StreamConfig) HomeCheck {
	c := HomeCheck{Peer: peerName, Epoch: epoch, PeerEpoch: topology.MilestonesEpoch(peer), PromotedFrom: peer.Metadata[topology.MetaPromotedFrom]}
	switch copyOf := topology.MilestonesCopyOf(peer); {
	case copyOf == region:
		c.Verdict, c.Why = HomeConfirmed, fmt.Sprintf("region %s copies this region's ledger", peerName)
	case copyOf != "":
		c.Why = fmt.Sprintf("region %s copies region %s's ledger", peerName, copyOf)
	case topology.MilestonesCaptures(peer):
		c.Verdict = HomeContested
		c.Why = fmt.Sprintf("region %s holds a milestone ledger too (epoch %d", peerName, c.PeerEpoch)
		if c.PromotedFrom != "" {
			c.Why += ", promoted from region " + c.PromotedFrom
		}
		c.Why += fmt.Sprintf("; this region's: epoch %d)", epoch)
	case peer.Metadata[topology.MetaHeld] == "":
		// Its handover to this region began (DemoteMilestones): it takes nothing
		// and is on its way to being a copy. The handover needs this ledger to
		// take milestones.
		c.Verdict, c.Why = HomeConfirmed, fmt.Sprintf("region %s is handing its ledger over", peerName)
	default:
		// A home held by its own guard: if it holds because of this region, both
		// stay held (two regions configured as the home) until one is handed over.
		c.Why = fmt.Sprintf("region %s's ledger is held: %s", peerName, peer.Metadata[topology.MetaHeld])
	}
	return c
}

// Guard keeps a home's ledger held while the home is not known to be the only one.
type Guard struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	region string
	peer   string
	// ledger is the home's ORDER_MILESTONES as the topology configures it: what a
	// release puts back.
	ledger jetstream.StreamConfig
	log    *slog.Logger
	said   string // the last situation logged, so each is logged once
}

// NewGuard returns the guard of region's ledger (ledger: the topology's
// MilestonesConfig) against peer.
func NewGuard(nc *nats.Conn, region, peer string, ledger jetstream.StreamConfig, log *slog.Logger) (*Guard, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return &Guard{nc: nc, js: js, region: region, peer: peer, ledger: ledger, log: log}, nil
}

// ErrNotTheHome means the peer holds the milestone ledger by a later (or equal)
// decision than this region's: serving as the home would make two.
var ErrNotTheHome = errors.New("another region holds the milestone ledger")

// Check asks the peer (within peerTimeout) and returns the verdict and this
// region's ledger as it is now.
func (g *Guard) Check(ctx context.Context) (HomeCheck, jetstream.StreamConfig, error) {
	s, err := g.js.Stream(ctx, topology.MilestonesStream)
	if err != nil {
		return HomeCheck{}, jetstream.StreamConfig{}, fmt.Errorf("look up %s: %w", topology.MilestonesStream, err)
	}
	own := s.CachedInfo().Config
	c := HomeCheck{Peer: g.peer, Epoch: topology.MilestonesEpoch(own), Why: fmt.Sprintf("region %s does not answer", g.peer)}
	pctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	pjs, err := jetstream.NewWithDomain(g.nc, g.peer)
	if err != nil {
		return c, own, nil
	}
	ps, err := pjs.Stream(pctx, topology.MilestonesStream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		c.Why = fmt.Sprintf("region %s has no %s yet", g.peer, topology.MilestonesStream)
		return c, own, nil
	case err != nil:
		return c, own, nil
	}
	return judgeHome(g.region, c.Epoch, g.peer, ps.CachedInfo().Config), own, nil
}

// Start decides at start, before the lanes publish: it refuses (ErrNotTheHome)
// when the peer holds a ledger taking milestones by no earlier promotion than
// this region's. A peer that does not answer within wait leaves a ledger never
// promoted held (Run releases it once the peer is a copy of it); a promoted
// ledger serves, since only a later promotion elsewhere could replace it.
func (g *Guard) Start(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		c, own, err := g.Check(ctx)
		if err != nil {
			return err
		}
		switch {
		case c.Yield():
			return fmt.Errorf("%w: %s. This region (%s) is configured as the milestones home; "+
				"if region %s is the home now, run with --milestones-region %s --milestones-handover (README \"Regions\", runbook)",
				ErrNotTheHome, c.Why, g.region, g.peer, g.peer)
		case c.Verdict == HomeConfirmed, c.Supersedes():
			g.say(c)
			return g.release(ctx, own)
		case time.Now().After(deadline) || ctx.Err() != nil:
			if c.Epoch > 0 {
				g.log.Warn("milestones home: the peer is not confirmed, serving on this region's promoted ledger", "peer", g.peer, "why", c.Why, "epoch", c.Epoch)
				return g.release(ctx, own)
			}
			return g.hold(ctx, own, c)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Run checks the peer every interval until ctx ends: a contested home that must
// yield holds its ledger (logged as an error, and shown by region status and
// orderflow_region_milestones_held); a held one is released once the peer is a
// copy of it.
func (g *Guard) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c, own, err := g.Check(ctx)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				g.log.Debug("milestones home check", "err", err)
			}
			continue
		case c.Yield():
			err = g.hold(ctx, own, c)
		case c.Verdict == HomeConfirmed:
			err = g.release(ctx, own)
		case c.Supersedes():
			g.say(c)
		}
		if err != nil && ctx.Err() == nil {
			g.log.Error("milestones home guard", "err", err)
		}
	}
}

// hold stops own, this region's ledger, taking milestones, recording why.
func (g *Guard) hold(ctx context.Context, own jetstream.StreamConfig, c HomeCheck) error {
	g.say(c)
	if !topology.MilestonesCaptures(own) {
		return nil
	}
	held := own
	held.Subjects, held.SubjectTransform = []string{topology.MilestonesHeldSubject}, nil
	held.Metadata = map[string]string{}
	for k, v := range own.Metadata {
		held.Metadata[k] = v
	}
	held.Metadata[topology.MetaHeld] = c.Why
	if _, err := g.js.UpdateStream(ctx, held); err != nil {
		return fmt.Errorf("hold %s: %w", topology.MilestonesStream, err)
	}
	return nil
}

// release lets this region's ledger take milestones again.
func (g *Guard) release(ctx context.Context, own jetstream.StreamConfig) error {
	if topology.MilestonesCaptures(own) {
		return nil
	}
	if _, err := g.js.UpdateStream(ctx, topology.KeepPromotion(own, g.ledger)); err != nil {
		return fmt.Errorf("release %s: %w", topology.MilestonesStream, err)
	}
	g.log.Info("milestones home: confirmed by the peer; the ledger takes milestones again", "peer", g.peer)
	return nil
}

// say logs a situation once, as loudly as it deserves.
func (g *Guard) say(c HomeCheck) {
	if c.Why == g.said {
		return
	}
	g.said = c.Why
	switch {
	case c.Yield():
		g.log.Error("TWO MILESTONE LEDGERS: this region is configured as the milestones home but the peer holds a ledger too; "+
			"this region's ledger is held (takes nothing; milestones wait in the lanes' outbox) until the peer copies it. "+
			"If the peer is the home now, restart this region with --milestones-region <peer> --milestones-handover",
			"peer", c.Peer, "why", c.Why)
	case c.Supersedes():
		g.log.Warn("milestones home: the peer still holds an older milestone ledger; it must hand it over (serve --milestones-handover)",
			"peer", c.Peer, "why", c.Why)
	case c.Verdict == HomeUnconfirmed:
		g.log.Warn("milestones home: not confirmed by the peer; this region's ledger is held (takes nothing) until the peer copies it",
			"peer", c.Peer, "why", c.Why)
	}
}

// recordHomeEpoch copies the home's promotion record (topology.MetaEpoch and the
// rest) onto this region's copy of its ledger, so that promoting the copy later
// records a later epoch than the ledger it replaces. Nothing to do when they agree.
func recordHomeEpoch(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, home string) error {
	s, err := js.Stream(ctx, topology.MilestonesStream)
	if err != nil {
		return err
	}
	own := s.CachedInfo().Config
	if topology.MilestonesCopyOf(own) != home {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	hjs, err := jetstream.NewWithDomain(nc, home)
	if err != nil {
		return err
	}
	hs, err := hjs.Stream(pctx, topology.MilestonesStream)
	if err != nil {
		return err
	}
	hc := hs.CachedInfo().Config
	if hc.Metadata[topology.MetaEpoch] == "" || hc.Metadata[topology.MetaEpoch] == own.Metadata[topology.MetaEpoch] {
		return nil
	}
	_, err = js.UpdateStream(ctx, topology.KeepPromotion(hc, own))
	return err
}
