package estimator

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/schemas"
)

// Checkpoint is what the estimator keeps in KV (see CheckpointStore) so a
// restart resumes the WAL where it stopped instead of reading it from the
// start: the model as it was after folding every WAL message up to WALSeq (and
// nothing after), and the events it decided but the WAL had not confirmed yet,
// which the restarted estimator publishes again under the same ids. Written
// under the lock that orders folding and deciding, so the model, WALSeq and
// Pending always agree: resuming at WALSeq+1 folds every later message exactly
// once (none skipped, none twice), and every source_seq the model handed out is
// either in the WAL or in Pending.
type Checkpoint struct {
	WALSeq uint64 `json:"wal_seq"`
	// WALCreated is when the WAL stream WALSeq counts in was created: a WAL deleted
	// and created again numbers other events the same, so a checkpoint of another
	// WAL is ignored even when the new one has grown past WALSeq. Zero in older
	// checkpoints (only the ahead-of-the-WAL check applies then).
	WALCreated time.Time       `json:"wal_created,omitzero"`
	Model      ModelState      `json:"model"`
	Pending    []schemas.Event `json:"pending,omitempty"`
}

// ModelState is a Model's durable part: its open orders and what it learnt.
// Delivered and cancelled orders are left out (nothing more is predicted for
// them, and what they taught is in Prep), so the checkpoint grows with the open
// orders, not with history; dasher positions too: they come back on the firehose
// within a heartbeat.
type ModelState struct {
	Orders map[string]OrderState `json:"orders,omitempty"`
	Prep   map[string]PrepState  `json:"prep,omitempty"`
	Global PrepState             `json:"global"`
}

// OrderState is one order as the model knows it.
type OrderState struct {
	Restaurant  string          `json:"restaurant,omitempty"`
	Dasher      string          `json:"dasher,omitempty"`
	Status      schemas.Status  `json:"status,omitempty"`
	ConfirmedAt time.Time       `json:"confirmed_at,omitzero"`
	ReadyAt     time.Time       `json:"ready_at,omitzero"`
	Pickup      *dispatch.Point `json:"pickup,omitempty"`
	Dropoff     *dispatch.Point `json:"dropoff,omitempty"`
	Visited     bool            `json:"visited,omitempty"`
	Seq         uint64          `json:"seq,omitempty"`
	Predicted   schemas.Status  `json:"predicted,omitempty"`
	ETA         time.Time       `json:"eta,omitzero"`
	ETAAt       time.Time       `json:"eta_at,omitzero"`
}

// PrepState is a running mean of preparation seconds.
type PrepState struct {
	N   float64 `json:"n"`
	Sum float64 `json:"sum"`
}

// State returns the model's durable part.
func (m *Model) State() ModelState {
	s := ModelState{Orders: make(map[string]OrderState, len(m.orders)), Prep: make(map[string]PrepState, len(m.prep)),
		Global: PrepState{N: m.global.n, Sum: m.global.sum}}
	for id, o := range m.orders {
		if done(o) {
			continue
		}
		s.Orders[id] = OrderState{
			Restaurant: o.restaurant, Dasher: o.dasher, Status: o.status, ConfirmedAt: o.confirmedAt, ReadyAt: o.readyAt,
			Pickup: o.pickup, Dropoff: o.dropoff, Visited: o.visited, Seq: o.seq, Predicted: o.predicted, ETA: o.eta, ETAAt: o.etaAt,
		}
	}
	for r, p := range m.prep {
		s.Prep[r] = PrepState{N: p.n, Sum: p.sum}
	}
	return s
}

// ModelFromState rebuilds a model State returned.
func ModelFromState(s ModelState) *Model {
	m := NewModel()
	m.global = mean{n: s.Global.N, sum: s.Global.Sum}
	for id, o := range s.Orders {
		m.orders[id] = &order{
			restaurant: o.Restaurant, dasher: o.Dasher, status: o.Status, confirmedAt: o.ConfirmedAt, readyAt: o.ReadyAt,
			pickup: o.Pickup, dropoff: o.Dropoff, visited: o.Visited, seq: o.Seq, predicted: o.Predicted, eta: o.ETA, etaAt: o.ETAAt,
		}
	}
	for r, p := range s.Prep {
		m.prep[r] = &mean{n: p.N, sum: p.Sum}
	}
	return m
}

// parseSingleValueCheckpoint reads the one-value JSON checkpoint earlier
// versions wrote (limited to max_payload); CheckpointStore.Load still reads it.
func parseSingleValueCheckpoint(b []byte) (Checkpoint, error) {
	var c Checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return Checkpoint{}, fmt.Errorf("estimator checkpoint: %w", err)
	}
	return c, nil
}
