package regions

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/internal/retry"
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
	// Epoch is the promotion's, recorded on the ledger (topology.MetaEpoch).
	Epoch int `json:"epoch"`
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
	ledger := t.MilestonesConfig()
	// The record a region that thinks it is the home checks (Guard): who holds the
	// ledger, whom it replaced, and an epoch above the replaced ledger's.
	// The copy carries its home's epoch (the region poller records it while the
	// link is up): 0 for a home never promoted.
	epoch := topology.MilestonesEpoch(info.Config) + 1
	p.Epoch = epoch
	ledger.Metadata = map[string]string{
		topology.MetaMilestonesHome: ai.Domain,
		topology.MetaPromotedFrom:   oldHome,
		topology.MetaEpoch:          strconv.Itoa(epoch),
	}
	if _, err := js.UpdateStream(ctx, ledger); err != nil {
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

// ErrHandoverIncomplete means some milestones of the old ledger are not in the
// home's: nothing was deleted, and running the handover again retries them.
var ErrHandoverIncomplete = errors.New("milestones missing from the home's ledger")

// DemoteMilestones hands this region's ORDER_MILESTONES (a ledger of its own, or a
// copy of a region that is no longer the home) over to home, then removes it, so
// the next serve with --milestones-region home copies home's. In order:
//  1. the stream stops taking anything (its subjects and sources are replaced by
//     topology.MilestonesHeldSubject): lanes still running here keep their new
//     milestones in their outbox, and a milestone forwarded to the home can no
//     longer be answered by this stream, which (as a ledger) would also capture it;
//  2. once the home's ledger takes milestones (its Guard may hold it while this
//     ledger took them, and lets go on seeing the handover begin), every
//     milestone this one holds that the home's lacks is sent through the link,
//     and only an acknowledgement from the home's domain counts;
//  3. every milestone it holds is looked up in the home's ledger, read through the
//     home's domain; one missing aborts with ErrHandoverIncomplete, deleting nothing;
//  4. the stream is removed.
//
// A run that stopped after 1 leaves a stream that takes nothing: serve as the home
// restores it, and a second handover finishes it.
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
	cfg := s.CachedInfo().Config
	if topology.MilestonesCopyOf(cfg) == home {
		return h, nil // a copy of home's already: nothing to hand over
	}
	// 1. Take nothing more: what is stored from here on is all there is to hand over.
	if len(cfg.Subjects) != 1 || cfg.Subjects[0] != topology.MilestonesHeldSubject || len(cfg.Sources) > 0 {
		cfg.Subjects, cfg.Sources, cfg.SubjectTransform = []string{topology.MilestonesHeldSubject}, nil, nil
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return h, fmt.Errorf("stop %s taking milestones before the handover: %w", topology.MilestonesStream, err)
		}
	}
	if cfg.Metadata[topology.MetaHeld] != "" {
		// Held by its guard once; a handover now, which the home's guard waits for.
		delete(cfg.Metadata, topology.MetaHeld)
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return h, fmt.Errorf("mark %s as handed over: %w", topology.MilestonesStream, err)
		}
	}
	// The home's guard may hold its ledger while this one took milestones; it lets
	// it take them again within a poll or two of seeing the handover begin.
	err = retry.Do(ctx, retry.Backoff{Initial: 200 * time.Millisecond, Max: time.Second, Attempts: 30}, func(ctx context.Context, _ int) error {
		info, err := hs.Info(ctx)
		if err != nil {
			return err
		}
		if !topology.MilestonesCaptures(info.Config) {
			return fmt.Errorf("region %s's %s takes no milestones (held: %s)", home, topology.MilestonesStream, info.Config.Metadata[topology.MetaHeld])
		}
		return nil
	})
	if err != nil {
		return h, fmt.Errorf("hand over to region %s: %w", home, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return h, fmt.Errorf("info %s: %w", topology.MilestonesStream, err)
	}
	// 2. Send what the home lacks.
	relay := handlers.NewMilestonePublisher(js, topology.MilestonesRelayPrefix)
	var subjects []string
	state := info.State
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
		subjects = append(subjects, m.Subject)
		// No look-up first: the home answers "subject full" for one it has, and
		// step 3 looks every one up anyway.
		stored, err := storeInHome(ctx, relay, home, orderID, kind)
		if err != nil {
			return h, fmt.Errorf("store %s in region %s's ledger: %w", m.Subject, home, err)
		}
		if stored {
			h.Copied++
		} else {
			h.AlreadyThere++ // the home had it; step 3 checks
		}
	}
	// 3. Believe the home's ledger, not the answers.
	var missing []string
	for _, subj := range subjects {
		had, err := storedIn(ctx, hs, subj)
		if err != nil {
			return h, err
		}
		if !had {
			missing = append(missing, subj)
		}
	}
	if len(missing) > 0 {
		return h, fmt.Errorf("%w: %d of %d are not in region %s's ledger (first %s); %s kept here, taking nothing: run the handover again",
			ErrHandoverIncomplete, len(missing), len(subjects), home, missing[0], topology.MilestonesStream)
	}
	// 4.
	if err := js.DeleteStream(ctx, topology.MilestonesStream); err != nil {
		return h, fmt.Errorf("remove %s after handing it over: %w", topology.MilestonesStream, err)
	}
	return h, nil
}

// storeInHome publishes one milestone to home's ledger through the link and
// reports whether home stored it (false: it answered "subject full", it had it).
// Any acknowledgement not from home's domain is an error.
func storeInHome(ctx context.Context, relay *handlers.MilestonePublisher, home, orderID, kind string) (bool, error) {
	f, err := relay.PublishAsync(orderID, kind)
	if err != nil {
		return false, err
	}
	select {
	case ack := <-f.Ok():
		if ack.Domain != home {
			return false, fmt.Errorf("acknowledged by %s in domain %q, not by region %s", ack.Stream, ack.Domain, home)
		}
		return !ack.Duplicate, nil
	case err := <-f.Err():
		if handlers.SubjectFull(err) {
			return false, nil
		}
		return false, err
	case <-ctx.Done():
		return false, ctx.Err()
	}
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
