package topology

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"
)

// Regions (DESIGN §8.1): every region accepts writes and every region's WAL holds
// every region's events, without cycles or echo.
//
// With a region set, producers' subjects orders.events.<source>.<order_id> are
// captured not by ORDER_EVENTS but by ORDER_INGEST, the region's own log: it holds
// exactly the events producers published in this region, and nothing replicated.
// ORDER_EVENTS has no subjects of its own; it sources this region's ORDER_INGEST and
// each peer's ORDER_INGEST (in the peer's JetStream domain), and its subject
// transform partitions all of them into orders.wal.<partition>.<source>.<order_id>
// exactly as in one region, so lanes, reads, replay and verify do not change.
//
// No cycle: what a region replicates (ORDER_INGEST) never contains what it received
// (ORDER_EVENTS). No echo: an event enters each WAL once per region it was
// published in; the same event published in two regions (a producer retrying after
// a failover) is one message where Nats-Msg-Id dedupes it (ORDER_EVENTS' duplicate
// window applies to sourced messages) and one event to the resolver otherwise
// (same event id and source_seq).
const (
	// IngestStream is a region's own log of what producers published there.
	IngestStream = "ORDER_INGEST"
)

// Regional reports whether t is one of several regions.
func (t Topology) Regional() bool { return t.Region != "" }

// IngestConfig is ORDER_INGEST: the producers' subjects, stored as published. It
// keeps the WAL's limits (dedupe window, message size, discard new) because a
// producer's acknowledgement now comes from it.
func (t Topology) IngestConfig() jetstream.StreamConfig {
	single := t
	single.Region = ""
	c := single.EventsConfig()
	c.Name, c.SubjectTransform = IngestStream, nil
	c.Description = "orderflow events published in this region, sourced into every region's ORDER_EVENTS"
	return c
}

// regional turns the single-region ORDER_EVENTS into the regional one: no subjects,
// sources = this region's ingest log and every peer's. The stream's own subject
// transform applies to sourced messages too, so partitioning is unchanged.
func (t Topology) regional(c jetstream.StreamConfig) jetstream.StreamConfig {
	if !t.Regional() {
		return c
	}
	c.Subjects = nil
	c.Description = "orderflow write-ahead log of order events of every region, partitioned by order id"
	c.Sources = []*jetstream.StreamSource{{Name: IngestStream}}
	peers := append([]string(nil), t.Peers...)
	sort.Strings(peers)
	for _, p := range peers {
		c.Sources = append(c.Sources, PeerSource(EventsStream, p))
	}
	return c
}

// PlaceholderFilter is the filter of a placeholder source (regions.Resume): one
// that sources nothing, standing in while the real source is away, because a
// stream without subjects must have a source.
const PlaceholderFilter = "orderflow.none"

// PeerSource is what stream (ORDER_EVENTS, or ORDER_MILESTONES where it is a
// copy) sources from region peer: its ingest log, or the home's ledger.
func PeerSource(stream, peer string) *jetstream.StreamSource {
	if stream == MilestonesStream {
		return &jetstream.StreamSource{Name: MilestonesStream, Domain: peer}
	}
	return &jetstream.StreamSource{Name: IngestStream, Domain: peer}
}

// streamsInOrder lists the streams to provision. ORDER_INGEST and ORDER_EVENTS may
// not both capture the producers' subjects, so when an existing single-region WAL
// becomes regional it gives them up first, and a fresh region creates its ingest log
// first so the WAL's local source finds it.
func (t Topology) streamsInOrder(ctx context.Context, js jetstream.JetStream) ([]jetstream.StreamConfig, error) {
	rest := []jetstream.StreamConfig{t.DLQConfig(), t.MilestonesConfig()}
	if !t.Regional() {
		if _, err := js.Stream(ctx, IngestStream); err == nil {
			return nil, fmt.Errorf("stream %s: %w: this data was run as a region (stream %s exists); "+
				"serve it with --region, or delete %s once ORDER_EVENTS has sourced all of it", EventsStream, ErrIncompatible, IngestStream, IngestStream)
		} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("look up stream %s: %w", IngestStream, err)
		}
		return append([]jetstream.StreamConfig{t.EventsConfig()}, rest...), nil
	}
	if err := t.checkMilestones(ctx, js); err != nil {
		return nil, err
	}
	if !t.MilestonesHomed() {
		rest = append(rest, t.MilestonesQueueConfig())
	}
	wal, ingest := t.EventsConfig(), t.IngestConfig()
	s, err := js.Stream(ctx, EventsStream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return nil, fmt.Errorf("look up stream %s: %w", EventsStream, err)
	case len(s.CachedInfo().Config.Subjects) > 0:
		return append([]jetstream.StreamConfig{wal, ingest}, rest...), nil
	}
	return append([]jetstream.StreamConfig{ingest, wal}, rest...), nil
}

// sourcesEqual compares the sources orderflow sets (name and domain).
func sourcesEqual(a, b []*jetstream.StreamSource) bool {
	key := func(ss []*jetstream.StreamSource) []string {
		var k []string
		for _, s := range ss {
			d := ""
			switch {
			case s.External != nil:
				d = s.External.APIPrefix // how the server reports a domain
			case s.Domain != "":
				d = "$JS." + s.Domain + ".API"
			}
			k = append(k, s.Name+"@"+d)
		}
		sort.Strings(k)
		return k
	}
	return fmt.Sprint(key(a)) == fmt.Sprint(key(b))
}
