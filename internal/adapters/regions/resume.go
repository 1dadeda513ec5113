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
// is not retried when the link comes up.
func stalled(p PeerStatus) bool {
	return p.Link == "up" && p.LagEvents > 0 && (p.LastHeard < 0 || p.LastHeard > StallAfter)
}

// Resume restarts ORDER_EVENTS' source of peer by removing it and adding it back;
// JetStream then continues from the last sequence it stored from that peer (its
// persisted source state), so nothing is skipped, and the WAL's duplicate window
// drops anything it sends twice.
func Resume(ctx context.Context, js jetstream.JetStream, peer string) error {
	s, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return err
	}
	cfg := s.CachedInfo().Config
	api := "$JS." + peer + ".API"
	var without []*jetstream.StreamSource
	found := false
	for _, src := range cfg.Sources {
		if src.External != nil && src.External.APIPrefix == api {
			found = true
			continue
		}
		without = append(without, src)
	}
	if !found {
		return fmt.Errorf("%s has no source from region %s", topology.EventsStream, peer)
	}
	restart := cfg
	restart.Sources = without
	if _, err := js.UpdateStream(ctx, restart); err != nil {
		return fmt.Errorf("restart source of %s: remove: %w", peer, err)
	}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("restart source of %s: add back: %w", peer, err)
	}
	return nil
}
