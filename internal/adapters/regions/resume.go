package regions

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/pipelines/topology"
)

// StallAfter is how long a peer may be reachable, ahead of this region, and silent
// before its stream source is restarted.
const StallAfter = 10 * time.Second

// stalled reports a source that JetStream will not resume by itself: the peer
// answers, has events this region lacks, and its source has been silent (source
// heartbeats arrive every second while it runs) for StallAfter, or has never run
// since this server started. Seen with nats-server 2.15.2 after a region restarts
// from its disk: the source set up at start fails while the link is not up yet, and
// is not retried when the link comes up. A placeholder source left by a Resume
// that did not finish counts as never run (peerStatus).
func stalled(p PeerStatus) bool {
	return p.Link == "up" && p.LagEvents > 0 && (p.LastHeard < 0 || p.LastHeard > StallAfter)
}

// placeholder reports a source Resume parks a stream on (topology.PlaceholderFilter):
// it sources nothing, so it is never the real one.
func placeholder(filter string) bool { return filter == topology.PlaceholderFilter }

// Resume restarts stream's source of peer (ORDER_EVENTS' of the peer's ingest log,
// or the milestone copy's of the home's ledger) by removing it and adding it back;
// JetStream then continues from the last sequence it stored from that peer (its
// persisted source state), so nothing is skipped, and the stream's duplicate window
// drops anything it sends twice. What is added back is the source the topology
// configures (topology.PeerSource), not what the stream holds: a Resume that
// stopped between its two updates left a placeholder, which the next one replaces.
func Resume(ctx context.Context, js jetstream.JetStream, stream, peer string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	cfg := s.CachedInfo().Config
	api := "$JS." + peer + ".API"
	var without []*jetstream.StreamSource
	found := false
	for _, src := range cfg.Sources {
		if src.External != nil && src.External.APIPrefix == api || src.Domain == peer {
			found = true
			continue
		}
		without = append(without, src)
	}
	if !found {
		return fmt.Errorf("%s has no source from region %s", stream, peer)
	}
	restart := cfg
	restart.Sources = without
	if len(without) == 0 {
		// A stream without subjects needs a source: park it on a placeholder
		// (sourcing nothing of the peer) while the real one is away.
		restart.Sources = []*jetstream.StreamSource{{Name: stream, Domain: peer, FilterSubject: topology.PlaceholderFilter}}
	}
	if _, err := js.UpdateStream(ctx, restart); err != nil {
		return fmt.Errorf("restart source of %s: remove: %w", peer, err)
	}
	back := cfg
	back.Sources = append(append([]*jetstream.StreamSource(nil), without...), topology.PeerSource(stream, peer))
	if _, err := js.UpdateStream(ctx, back); err != nil {
		return fmt.Errorf("restart source of %s: add back: %w", peer, err)
	}
	return nil
}
