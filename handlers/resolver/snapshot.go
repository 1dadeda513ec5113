package resolver

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/orderflow/orderflow/schemas"
)

// SnapshotVersion is the snapshot encoding this build writes and reads ("v").
const SnapshotVersion = 1

// ErrSnapshotVersion is returned for a snapshot whose "v" this build does not know.
var ErrSnapshotVersion = errors.New("unknown resolver snapshot version")

// snapshot is the KV value: the public answer at top level, with the same JSON names
// as the HTTP answer so an operator reading KV sees it, plus under "r" the summaries
// that folding continues from. "r" and version/wal_seq/updated_at are the state; the
// rest of the top level is recomputed from them on decode.
type snapshot struct {
	V int `json:"v"`
	View
	R snapState `json:"r"`
}

type snapState struct {
	Sources  map[schemas.Source]*snapSource `json:"src,omitempty"`
	Override *snapOverride                  `json:"override,omitempty"`
	Recent   []snapSeen                     `json:"recent,omitempty"`
}

type snapSource struct {
	Claims       []snapClaim `json:"claims,omitempty"`
	ETA          *snapETA    `json:"eta,omitempty"`
	CustomerID   *snapID     `json:"customer_id,omitempty"`
	RestaurantID *snapID     `json:"restaurant_id,omitempty"`
	DasherID     *snapID     `json:"dasher_id,omitempty"`
}

type snapClaim struct {
	Seq    uint64         `json:"seq"`
	Status schemas.Status `json:"status"`
}

type snapETA struct {
	Seq uint64    `json:"seq"`
	At  time.Time `json:"at"`
}

type snapID struct {
	Seq uint64 `json:"seq"`
	ID  string `json:"id"`
}

type snapOverride struct {
	Seq      uint64                    `json:"seq"`
	Status   schemas.Status            `json:"status"`
	Observed map[schemas.Source]uint64 `json:"observed,omitempty"`
}

type snapSeen struct {
	Source  schemas.Source `json:"source"`
	Seq     uint64         `json:"seq"`
	EventID string         `json:"event_id"`
}

// MarshalSnapshot encodes the state as the KV snapshot. The encoding is
// deterministic: equal states give equal bytes.
func (s *State) MarshalSnapshot() ([]byte, error) {
	if s.timesEncodable() {
		return s.appendSnapshot(make([]byte, 0, 1024)), nil
	}
	b, err := json.Marshal(s.snapshotValue())
	if err != nil {
		return nil, fmt.Errorf("encode snapshot %s: %w", s.orderID, err)
	}
	return b, nil
}

// snapshotValue is the snapshot as a struct: what decoding reads, and the reference
// the hand-written encoder must match.
func (s *State) snapshotValue() snapshot {
	snap := snapshot{V: SnapshotVersion, View: s.View()}
	for i := range s.src {
		if ss := s.src[i].snap(); ss != nil {
			if snap.R.Sources == nil {
				snap.R.Sources = make(map[schemas.Source]*snapSource, numSources)
			}
			snap.R.Sources[sourceName[i]] = ss
		}
	}
	if o := s.override; o.seq > 0 {
		so := &snapOverride{Seq: o.seq, Status: o.rank.status()}
		for i, v := range o.observed {
			if v > 0 {
				if so.Observed == nil {
					so.Observed = make(map[schemas.Source]uint64, numSources)
				}
				so.Observed[sourceName[i]] = v
			}
		}
		snap.R.Override = so
	}
	for _, e := range s.recent.oldestFirst() {
		snap.R.Recent = append(snap.R.Recent, snapSeen{sourceName[e.src], e.seq, e.id})
	}
	return snap
}

// snap encodes a source's summary, or nil when the source sent nothing.
func (ss *sourceState) snap() *snapSource {
	out := &snapSource{}
	for _, c := range ss.claims.c[:ss.claims.n] {
		out.Claims = append(out.Claims, snapClaim{c.seq, c.rank.status()})
	}
	if ss.eta.seq > 0 {
		out.ETA = &snapETA{ss.eta.seq, ss.eta.at}
	}
	id := func(f stampedString) *snapID {
		if f.seq == 0 {
			return nil
		}
		return &snapID{f.seq, f.v}
	}
	out.CustomerID, out.RestaurantID, out.DasherID = id(ss.ids[idCustomer]), id(ss.ids[idRestaurant]), id(ss.ids[idDasher])
	if out.Claims == nil && out.ETA == nil && out.CustomerID == nil && out.RestaurantID == nil && out.DasherID == nil {
		return nil
	}
	return out
}

// UnmarshalSnapshot decodes a snapshot written by MarshalSnapshot. It rejects unknown
// encoding versions (ErrSnapshotVersion) and contents no fold could have produced.
func UnmarshalSnapshot(b []byte) (*State, error) {
	var head struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("decode resolver snapshot: %w", err)
	}
	if head.V != SnapshotVersion {
		return nil, fmt.Errorf("decode resolver snapshot: v=%d, this build reads v=%d: %w", head.V, SnapshotVersion, ErrSnapshotVersion)
	}
	var snap snapshot
	if err := json.Unmarshal(b, &snap); err != nil {
		return nil, fmt.Errorf("decode resolver snapshot: %w", err)
	}
	s, err := snap.state()
	if err != nil {
		return nil, fmt.Errorf("decode resolver snapshot %s: %w", snap.OrderID, err)
	}
	return s, nil
}

func (snap *snapshot) state() (*State, error) {
	if snap.OrderID == "" {
		return nil, errors.New("order_id is missing")
	}
	s := New(snap.OrderID)
	s.walSeq, s.updatedAt = snap.WalSeq, snap.UpdatedAt
	for src, v := range snap.Version {
		i := sourceIndex(src)
		if i == srcNone {
			return nil, fmt.Errorf("version: unknown source %q", src)
		}
		s.src[i].version = v
	}
	for src, in := range snap.R.Sources {
		i := sourceIndex(src)
		if i == srcNone {
			return nil, fmt.Errorf("r.src: unknown source %q", src)
		}
		if in == nil {
			return nil, fmt.Errorf("r.src.%s: null", src)
		}
		ss := &s.src[i]
		for _, c := range in.Claims {
			r := rankOf(c.Status)
			if r == rankNone || i == srcAgent || !mayClaim[i].has(r) || c.Seq == 0 || c.Seq > ss.version {
				return nil, fmt.Errorf("r.src.%s: impossible claim %d %q", src, c.Seq, c.Status)
			}
			ss.claims.add(c.Seq, r)
		}
		if in.ETA != nil {
			if in.ETA.Seq == 0 || in.ETA.Seq > ss.version {
				return nil, fmt.Errorf("r.src.%s.eta: impossible seq %d", src, in.ETA.Seq)
			}
			ss.eta = stampedTime{in.ETA.Seq, in.ETA.At.UTC()}
		}
		for k, f := range [numIDs]*snapID{in.CustomerID, in.RestaurantID, in.DasherID} {
			if f == nil {
				continue
			}
			if f.Seq == 0 || f.Seq > ss.version || f.ID == "" {
				return nil, fmt.Errorf("r.src.%s: impossible entity id %d %q", src, f.Seq, f.ID)
			}
			ss.ids[k] = stampedString{f.Seq, f.ID}
		}
	}
	if o := snap.R.Override; o != nil {
		r := rankOf(o.Status)
		if r == rankNone || o.Seq == 0 || o.Seq > s.src[srcAgent].version {
			return nil, fmt.Errorf("r.override: impossible override %d %q", o.Seq, o.Status)
		}
		s.override = override{seq: o.Seq, rank: r}
		for src, v := range o.Observed {
			j := sourceIndex(src)
			if j == srcNone {
				return nil, fmt.Errorf("r.override.observed: unknown source %q", src)
			}
			s.override.observed[j] = v
		}
	}
	for _, e := range snap.R.Recent {
		i := sourceIndex(e.Source)
		if i == srcNone {
			return nil, fmt.Errorf("r.recent: unknown source %q", e.Source)
		}
		s.recent.add(i, e.Seq, e.EventID)
	}
	s.res = s.resolve()
	return s, nil
}

// MarshalJSON encodes the state as its snapshot, so a State is JSON-encodable as is.
func (s *State) MarshalJSON() ([]byte, error) { return s.MarshalSnapshot() }

// UnmarshalJSON decodes a snapshot into s.
func (s *State) UnmarshalJSON(b []byte) error {
	d, err := UnmarshalSnapshot(b)
	if err != nil {
		return err
	}
	*s = *d
	return nil
}
