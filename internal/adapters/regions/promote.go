package regions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// ErrHomeReachable means the milestones home still answers: promoting its copy now
// would make two ledgers, and a milestone could be charged in each.
var ErrHomeReachable = errors.New("the milestones home still answers")

// Promotion is what PromoteMilestones did.
type Promotion struct {
	Region  string `json:"region"`   // the new home (this region)
	OldHome string `json:"old_home"` // the region whose ledger this was a copy of
	// Milestones is how many the ledger holds now: what the copy held.
	Milestones uint64 `json:"milestones"`
	// CopyLag is how many of the old ledger's milestones the copy lacked when last
	// heard from: those may be published again (README "Regions", promotion).
	CopyLag uint64 `json:"copy_lag"`
}

// PromoteMilestones makes this region's ORDER_MILESTONES, a copy of a home that is
// lost for good, the milestone ledger: a stream update removes the source and the
// stream takes the ledger's subjects and rules, keeping every milestone it
// had copied. It refuses while the old home answers through the link.
func PromoteMilestones(ctx context.Context, nc *nats.Conn) (Promotion, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return Promotion{}, err
	}
	ai, err := js.AccountInfo(ctx)
	if err != nil {
		return Promotion{}, fmt.Errorf("account info: %w", err)
	}
	if ai.Domain == "" {
		return Promotion{}, errors.New("this server has no JetStream domain: it is not a region")
	}
	s, err := js.Stream(ctx, topology.MilestonesStream)
	if err != nil {
		return Promotion{}, fmt.Errorf("look up %s: %w", topology.MilestonesStream, err)
	}
	info := s.CachedInfo()
	oldHome := topology.MilestonesCopyOf(info.Config)
	if oldHome == "" {
		return Promotion{}, fmt.Errorf("%s in region %s is the milestone ledger already, not a copy", topology.MilestonesStream, ai.Domain)
	}
	p := Promotion{Region: ai.Domain, OldHome: oldHome}
	for _, si := range info.Sources {
		if si != nil {
			p.CopyLag = si.Lag
		}
	}
	if Answers(ctx, nc, p.OldHome) {
		return p, fmt.Errorf("region %s: %w; stop it first (promotion is for a home that is lost for good)", p.OldHome, ErrHomeReachable)
	}
	t := topology.Topology{Region: ai.Domain, MilestonesHome: ai.Domain, Replicas: info.Config.Replicas}
	t.SetDefaults()
	if _, err := js.UpdateStream(ctx, t.MilestonesConfig()); err != nil {
		return p, fmt.Errorf("turn the copy into the ledger: %w", err)
	}
	s, err = js.Stream(ctx, topology.MilestonesStream)
	if err != nil {
		return p, err
	}
	p.Milestones = s.CachedInfo().State.Msgs
	return p, nil
}

// Handover is what DemoteMilestones did.
type Handover struct {
	Region string `json:"region"` // this region
	Home   string `json:"home"`   // the region whose ledger received the milestones
	// Copied were stored by the home; AlreadyThere it had (the common case).
	Copied       int `json:"copied"`
	AlreadyThere int `json:"already_there"`
}

// DemoteMilestones hands this region's ORDER_MILESTONES (a ledger of its own, or a
// copy of a region that is no longer the home) over to home: it stores every
// milestone the stream holds in home's ledger, through the link, each once (what
// the home has is refused as "subject full", which counts as already there), and
// then removes the stream, so the next serve with --milestones-region home copies
// home's. Nothing is removed unless every milestone reached the home.
func DemoteMilestones(ctx context.Context, nc *nats.Conn, home string) (Handover, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(forwardTimeout))
	if err != nil {
		return Handover{}, err
	}
	ai, err := js.AccountInfo(ctx)
	if err != nil {
		return Handover{}, fmt.Errorf("account info: %w", err)
	}
	h := Handover{Region: ai.Domain, Home: home}
	if home == ai.Domain {
		return h, fmt.Errorf("region %s is the home named: there is nothing to hand over", home)
	}
	hjs, err := jetstream.NewWithDomain(nc, home)
	if err != nil {
		return h, err
	}
	hs, err := hjs.Stream(ctx, topology.MilestonesStream)
	if err != nil {
		return h, fmt.Errorf("region %s's %s does not answer: %w", home, topology.MilestonesStream, err)
	}
	if topology.MilestonesCopyOf(hs.CachedInfo().Config) != "" {
		return h, fmt.Errorf("region %s's %s is a copy, not the ledger: promote it first", home, topology.MilestonesStream)
	}
	s, err := js.Stream(ctx, topology.MilestonesStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return h, nil
	}
	if err != nil {
		return h, fmt.Errorf("look up %s: %w", topology.MilestonesStream, err)
	}
	if topology.MilestonesCopyOf(s.CachedInfo().Config) == home {
		return h, nil // a copy of home's already: nothing to hand over
	}
	relay := handlers.NewMilestonePublisher(js, topology.MilestonesRelayPrefix)
	state := s.CachedInfo().State
	for seq := state.FirstSeq; seq <= state.LastSeq && state.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return h, fmt.Errorf("read milestone %d: %w", seq, err)
		}
		kind, orderID, ok := strings.Cut(strings.TrimPrefix(m.Subject, topology.MilestonesPrefix+"."), ".")
		if !ok {
			continue
		}
		had, err := storedIn(ctx, hs, m.Subject)
		if err != nil {
			return h, err
		}
		if had {
			h.AlreadyThere++
			continue
		}
		if err := relay.Publish(ctx, orderID, kind); err != nil {
			return h, fmt.Errorf("store %s in region %s's ledger: %w", m.Subject, home, err)
		}
		h.Copied++
	}
	if err := js.DeleteStream(ctx, topology.MilestonesStream); err != nil {
		return h, fmt.Errorf("remove %s after handing it over: %w", topology.MilestonesStream, err)
	}
	return h, nil
}

func storedIn(ctx context.Context, s jetstream.Stream, subject string) (bool, error) {
	_, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up %s in the home's ledger: %w", subject, err)
	}
	return true, nil
}

// Answers reports whether region's JetStream answers through the link.
func Answers(ctx context.Context, nc *nats.Conn, region string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	js, err := jetstream.NewWithDomain(nc, region)
	if err != nil {
		return false
	}
	_, err = js.AccountInfo(ctx)
	return err == nil
}
