package regions

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/pipelines/topology"
)

// ErrNotRegional means the server's ORDER_EVENTS sources no peer region.
var ErrNotRegional = errors.New("not a region: ORDER_EVENTS sources no peer")

// PeerStatus is how far this region's WAL is behind one peer's ingest log.
type PeerStatus struct {
	// Peer is the peer region (its JetStream domain).
	Peer string `json:"peer"`
	// Link is "up" when the peer's JetStream answers through the link, else "down".
	Link string `json:"link"`
	// PeerLastSeq is the last sequence of the peer's ORDER_INGEST (up only).
	PeerLastSeq uint64 `json:"peer_last_seq,omitempty"`
	// ReplicatedSeq is the last sequence of the peer's ORDER_INGEST this region's
	// WAL holds (JetStream's persisted source state).
	ReplicatedSeq uint64 `json:"replicated_seq"`
	// LagEvents is how many of the peer's events this region does not hold yet:
	// PeerLastSeq - ReplicatedSeq while the link is up; while it is down, the
	// source's pending count when it last heard from the peer.
	LagEvents uint64 `json:"lag_events"`
	// LagSeconds is the age of the oldest of the peer's events not yet here (0 when
	// caught up). While the link is down it is the time since the peer was last
	// heard from: what a peer lost now could have written and not sent.
	LagSeconds float64 `json:"lag_seconds"`
	// LastHeard is how long ago the stream source last received anything (-1 never).
	LastHeard time.Duration `json:"last_heard_ns"`
	// Error is the stream source's error or why the peer did not answer.
	Error string `json:"error,omitempty"`
}

// Status is one region's view of its replication.
type Status struct {
	Region string `json:"region"`
	// IngestLastSeq is the last sequence of this region's own ORDER_INGEST.
	IngestLastSeq uint64 `json:"ingest_last_seq"`
	// WALLastSeq is the last sequence of this region's ORDER_EVENTS.
	WALLastSeq uint64 `json:"wal_last_seq"`
	// LocalLagEvents is how many of this region's own events its WAL lacks yet.
	LocalLagEvents uint64       `json:"local_lag_events"`
	Peers          []PeerStatus `json:"peers"`
	// Milestones is where this region's milestones stand.
	Milestones MilestonesStatus `json:"milestones"`
}

// MilestonesStatus is this region's part in the one global milestone ledger
// (pipelines/topology milestones.go).
type MilestonesStatus struct {
	// Home is the region holding the ledger; this region's ORDER_MILESTONES is a
	// copy of it unless Home is this region.
	Home string `json:"home"`
	// Queued is how many of this region's milestones wait in ORDER_MILESTONES_QUEUE
	// for the home to store them (0 at the home, unless a promotion left some).
	Queued uint64 `json:"queued"`
	// Copy is how this region's copy of the ledger stands (not at the home): the
	// same fields as a peer's replication, for the home's ORDER_MILESTONES.
	Copy *PeerStatus `json:"copy,omitempty"`
	// Held, at the home, says why its ledger takes no milestones now (Guard: the
	// peer has not confirmed it copies this region's, or holds a ledger too; or a
	// handover began): they wait in the lanes' outbox. Empty when it takes them.
	Held string `json:"held,omitempty"`
}

// peerTimeout bounds each question to a peer: a cut link must not stall status.
const peerTimeout = time.Second

// Read asks the server behind nc for this region's replication state. Everything is
// learned from JetStream (the domain, the WAL's sources), so any client can run it.
func Read(ctx context.Context, nc *nats.Conn) (Status, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return Status{}, err
	}
	ai, err := js.AccountInfo(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("account info: %w", err)
	}
	wal, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return Status{}, fmt.Errorf("open %s: %w", topology.EventsStream, err)
	}
	info, err := wal.Info(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("info %s: %w", topology.EventsStream, err)
	}
	st := Status{Region: ai.Domain, WALLastSeq: info.State.LastSeq}
	if in, err := js.Stream(ctx, topology.IngestStream); err == nil {
		st.IngestLastSeq = in.CachedInfo().State.LastSeq
	}
	for _, si := range info.Sources {
		if si == nil || si.Name != topology.IngestStream {
			continue
		}
		if si.External == nil {
			if st.IngestLastSeq > si.Seq {
				st.LocalLagEvents = st.IngestLastSeq - si.Seq
			}
			continue
		}
		st.Peers = append(st.Peers, peerStatus(ctx, nc, si, topology.IngestStream))
	}
	if len(st.Peers) == 0 {
		return st, ErrNotRegional
	}
	st.Milestones = milestonesStatus(ctx, nc, js, st.Region)
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Peer < st.Peers[j].Peer })
	return st, nil
}

// peerStatus is how far a source of a peer's stream (its ORDER_INGEST, or the home's
// ORDER_MILESTONES) is behind.
func peerStatus(ctx context.Context, nc *nats.Conn, si *jetstream.StreamSourceInfo, stream string) PeerStatus {
	ps := PeerStatus{Peer: topology.DomainOf(si.External.APIPrefix), Link: "down", ReplicatedSeq: si.Seq, LagEvents: si.Lag, LastHeard: si.Active}
	if si.Error != nil {
		ps.Error = si.Error.Error()
	}
	if placeholder(si.FilterSubject) {
		// Left by a restart (Resume) that did not finish: it sources nothing.
		ps.LastHeard, ps.Error = -1, "placeholder source: a restart of this source did not finish"
	}
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	pjs, err := jetstream.NewWithDomain(nc, ps.Peer)
	if err == nil {
		var s jetstream.Stream
		if s, err = pjs.Stream(ctx, stream); err == nil {
			ps.Link = "up"
			ps.PeerLastSeq = s.CachedInfo().State.LastSeq
			ps.LagEvents = 0
			if ps.PeerLastSeq > ps.ReplicatedSeq {
				ps.LagEvents = ps.PeerLastSeq - ps.ReplicatedSeq
			}
			if ps.LagEvents > 0 {
				// The oldest event not here yet is the one after the replicated one.
				if m, err := s.GetMsg(ctx, ps.ReplicatedSeq+1); err == nil {
					ps.LagSeconds = time.Since(m.Time).Seconds()
				}
			}
			return ps
		}
	}
	if ps.Error == "" {
		ps.Error = fmt.Sprintf("peer %s did not answer: %v", ps.Peer, err)
	}
	if si.Active >= 0 {
		ps.LagSeconds = si.Active.Seconds()
	}
	return ps
}

func milestonesStatus(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, region string) MilestonesStatus {
	ms := MilestonesStatus{Home: region}
	if q, err := js.Stream(ctx, topology.MilestonesQueueStream); err == nil {
		ms.Queued = q.CachedInfo().State.Msgs
	}
	s, err := js.Stream(ctx, topology.MilestonesStream)
	if err != nil {
		return ms
	}
	info := s.CachedInfo()
	if topology.MilestonesCopyOf(info.Config) == "" && !topology.MilestonesCaptures(info.Config) {
		ms.Held = info.Config.Metadata[topology.MetaHeld]
		if ms.Held == "" {
			ms.Held = "a handover to another region began"
		}
	}
	if home := topology.MilestonesCopyOf(info.Config); home != "" {
		ms.Home = home
		for _, si := range info.Sources {
			if si != nil && si.External != nil {
				ps := peerStatus(ctx, nc, si, topology.MilestonesStream)
				ms.Copy = &ps
			}
		}
	}
	return ms
}
