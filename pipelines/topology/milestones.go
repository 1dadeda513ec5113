package topology

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// Milestones across regions (DESIGN §8.1: exactly once globally). One region, the
// milestones home, holds the only ORDER_MILESTONES that anything writes to: the
// global ledger. Every other region's ORDER_MILESTONES is a read-only copy of it: a
// stream without subjects that sources the home's ledger through the home's
// JetStream domain, so billing in any region reads the global ledger locally.
//
// A copy, not a JetStream mirror: with nats-server 2.15.2 a mirror set up before the
// home's ledger existed (the home starting after this region) backs off for up to
// two minutes per retry, and a mirror cannot be restarted from outside; a source can
// (regions.Resume removes and re-adds it), and a source is removed by a stream
// update on any server version, which is all a promotion needs.
//
// A region that is not the home does not publish across the link from its lanes:
// its relay publishes into ORDER_MILESTONES_QUEUE, a local work queue, which
// succeeds whether the home is reachable or not, so lanes keep folding, writing
// snapshots and checkpointing while the home is away. The region's forwarder
// (internal/adapters/regions) moves the queue to the home: it publishes each
// milestone as regions.milestones.<kind>.<order_id>, a subject only the home's
// ledger captures; the link lets it cross (it is outside the denied orders.>),
// the ledger's subject transform stores it as orders.milestones.<kind>.<order_id>,
// and the forwarder removes it from the queue once the home acknowledged it. The
// ledger's one-message-per-subject rule (and the deterministic Nats-Msg-Id) makes
// the first region to store a milestone win, forever: a second region's copy of
// the same milestone is refused as "subject full", which the forwarder counts as
// delivered.
//
// Stream sourcing would be simpler but cannot be used to fill the ledger: a
// sourced message refused by the per-subject limit makes JetStream (2.15.2) retry
// that sequence forever, so the second copy would stall the source.
const (
	// MilestonesQueueStream is a non-home region's milestones on their way to the home.
	MilestonesQueueStream = "ORDER_MILESTONES_QUEUE"
	// MilestonesQueuePrefix is the queue's subjects: orders.milestones-queue.<kind>.<order_id>.
	MilestonesQueuePrefix = "orders.milestones-queue"
	// MilestonesRelayPrefix is how a forwarder addresses the home's ledger across
	// the link: regions.milestones.<kind>.<order_id>.
	MilestonesRelayPrefix = "regions.milestones"
	// MilestonesHeldSubject is the only subject of a ledger that must not take
	// milestones: one being handed over (regions.DemoteMilestones), or a home held
	// until its peer confirms it is the only one (regions.Guard). Nothing publishes
	// to it; a stream without subjects or sources cannot exist.
	MilestonesHeldSubject = "orderflow.milestones-held"
)

// Metadata of a ledger made by a promotion (regions.PromoteMilestones): which region
// holds it, which it replaced, and the promotion's epoch (1 + the epoch of the
// ledger it replaced, 0 for a ledger never promoted). Of two ledgers, the higher
// epoch is the later decision.
const (
	MetaMilestonesHome = "orderflow.milestones.home"
	MetaPromotedFrom   = "orderflow.milestones.promoted_from"
	MetaEpoch          = "orderflow.milestones.epoch"
	// MetaHeld says why a home's ledger takes nothing for now (regions.Guard).
	MetaHeld = "orderflow.milestones.held"
)

// MilestonesEpoch is the promotion epoch recorded on a ledger (0: never promoted).
func MilestonesEpoch(c jetstream.StreamConfig) int {
	n, _ := strconv.Atoi(c.Metadata[MetaEpoch])
	return n
}

// MilestonesCaptures reports whether c, an ORDER_MILESTONES, takes milestones: the
// lanes' subjects or the forwarded ones. A held ledger, or one being handed over,
// does not.
func MilestonesCaptures(c jetstream.StreamConfig) bool {
	for _, s := range c.Subjects {
		if s == MilestonesPrefix+".*.*" || s == MilestonesRelayPrefix+".*.*" {
			return true
		}
	}
	return false
}

// DefaultMilestonesHome is the milestones home when none is configured: the region
// whose name sorts first, which every region computes the same.
func DefaultMilestonesHome(region string, peers []string) string {
	home := region
	for _, p := range peers {
		home = min(home, p)
	}
	return home
}

// MilestonesHomed reports whether this region holds the milestone ledger (always,
// without regions).
func (t Topology) MilestonesHomed() bool { return !t.Regional() || t.MilestonesHome == t.Region }

// MilestonesPublishPrefix is where this region's lanes publish milestones: the
// ledger's own subjects at the home, the local queue elsewhere.
func (t Topology) MilestonesPublishPrefix() string {
	if t.MilestonesHomed() {
		return MilestonesPrefix
	}
	return MilestonesQueuePrefix
}

// regionalMilestones makes the single-region ledger the home's (which also takes
// forwarded milestones) or a copy of the home's.
func (t Topology) regionalMilestones(c jetstream.StreamConfig) jetstream.StreamConfig {
	if !t.Regional() {
		return c
	}
	if t.MilestonesHomed() {
		c.Description = "orderflow milestones of every region (the global ledger), one message per order and milestone"
		c.Subjects = append(c.Subjects, MilestonesRelayPrefix+".*.*")
		c.SubjectTransform = &jetstream.SubjectTransformConfig{
			Source:      MilestonesRelayPrefix + ".*.*",
			Destination: MilestonesPrefix + ".{{wildcard(1)}}.{{wildcard(2)}}",
		}
		return c
	}
	return jetstream.StreamConfig{
		Name:        MilestonesStream,
		Description: "orderflow milestones of every region: a read-only copy of region " + t.MilestonesHome + "'s ledger",
		Sources:     []*jetstream.StreamSource{PeerSource(MilestonesStream, t.MilestonesHome)},
		Storage:     jetstream.FileStorage,
		Replicas:    t.Replicas,
		// A source restarted by regions.Resume may send the last milestones again.
		Duplicates: t.DuplicateWindow,
	}
}

// MilestonesCopyOf is the region whose ledger c (an ORDER_MILESTONES) copies, or ""
// when c is a ledger itself.
func MilestonesCopyOf(c jetstream.StreamConfig) string {
	src := c.Mirror
	if src == nil && len(c.Sources) == 1 && len(c.Subjects) == 0 {
		src = c.Sources[0]
	}
	switch {
	case src == nil:
		return ""
	case src.External != nil:
		return DomainOf(src.External.APIPrefix)
	case src.Domain != "":
		return src.Domain
	}
	return "?"
}

// MilestonesQueueConfig is ORDER_MILESTONES_QUEUE: a work queue, so a milestone
// leaves it once the home acknowledged it. No limits: while the home is away it
// holds everything this region owes (a few hundred bytes per milestone).
func (t Topology) MilestonesQueueConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        MilestonesQueueStream,
		Description: "orderflow milestones of this region waiting to be stored by region " + t.MilestonesHome + "'s ledger",
		Subjects:    []string{MilestonesQueuePrefix + ".*.*"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    t.Replicas,
		Duplicates:  t.DuplicateWindow,
	}
}

// checkMilestones refuses to run on an ORDER_MILESTONES whose shape disagrees with
// the configured home: turning a ledger into a copy, or a copy of one region into a
// copy of another, would throw away the milestones only it holds. The error says
// which command fixes it. A ledger with nothing in it is no data: it is replaced.
func (t Topology) checkMilestones(ctx context.Context, js jetstream.JetStream) error {
	s, err := js.Stream(ctx, MilestonesStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", MilestonesStream, err)
	}
	info := s.CachedInfo()
	have, msgs := info.Config, info.State.Msgs
	copyOf := MilestonesCopyOf(have)
	switch {
	case t.MilestonesHomed() && copyOf != "":
		return fmt.Errorf("stream %s: %w: here it is a copy of region %s's milestone ledger, but this region (%s) is configured as the milestones home. "+
			"If region %s is lost for good, make this copy the ledger with `orderflow region promote-milestones --force` and run every region with --milestones-region %s; "+
			"otherwise run with --milestones-region %s (README \"Regions\")", MilestonesStream, ErrIncompatible, copyOf, t.Region, copyOf, t.Region, copyOf)
	case t.MilestonesHomed():
		return nil
	case copyOf == t.MilestonesHome:
		return nil
	case copyOf == "" && msgs == 0:
		if err := js.DeleteStream(ctx, MilestonesStream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("replace the empty %s by a copy of region %s's: %w", MilestonesStream, t.MilestonesHome, err)
		}
		return nil
	case copyOf == "":
		return fmt.Errorf("stream %s: %w: this region (%s) holds a milestone ledger of its own (%d milestones), but region %s is configured as the milestones home. "+
			"If %s is the home now, hand this ledger over: start serve once with --milestones-handover (or run `orderflow region demote-milestones --milestones-region %s --force` against this region's NATS); "+
			"it copies every milestone to %s's ledger, then replaces this stream by a copy of it. Otherwise run with --milestones-region %s (README \"Regions\")", MilestonesStream, ErrIncompatible, t.Region, msgs, t.MilestonesHome, t.MilestonesHome, t.MilestonesHome, t.MilestonesHome, t.Region)
	default:
		return fmt.Errorf("stream %s: %w: here it copies region %s's ledger, but region %s is configured as the milestones home. "+
			"Replace it by starting serve once with --milestones-handover (or `orderflow region demote-milestones --milestones-region %s --force`): it copies every milestone to %s's ledger first. Or run with --milestones-region %s (README \"Regions\")",
			MilestonesStream, ErrIncompatible, copyOf, t.MilestonesHome, t.MilestonesHome, t.MilestonesHome, copyOf)
	}
}

// DomainOf reads the domain out of an API prefix $JS.<domain>.API.
func DomainOf(api string) string {
	const pre, post = "$JS.", ".API"
	if len(api) > len(pre)+len(post) && api[:len(pre)] == pre && api[len(api)-len(post):] == post {
		return api[len(pre) : len(api)-len(post)]
	}
	return api
}

// MilestonesPublishPrefixOf is MilestonesPublishPrefix as the server behind js is
// provisioned, for tools (replay) that are not given the region's configuration:
// where ORDER_MILESTONES is a copy, the region is not the home.
func MilestonesPublishPrefixOf(ctx context.Context, js jetstream.JetStream) (string, error) {
	s, err := js.Stream(ctx, MilestonesStream)
	if err != nil {
		return "", fmt.Errorf("look up stream %s: %w", MilestonesStream, err)
	}
	if MilestonesCopyOf(s.CachedInfo().Config) != "" {
		return MilestonesQueuePrefix, nil
	}
	return MilestonesPrefix, nil
}
