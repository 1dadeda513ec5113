// Package schemas owns the event contract: the Go types of an order event, its
// JSON Schema, and validation that reports every problem with its field path.
package schemas

import "time"

// SchemaVersion is the only event schema version this build understands.
const SchemaVersion = 1

// Source names the class of producer. It is taken from the subject, never trusted from the body.
type Source string

// The producer classes of DESIGN §2.
const (
	SourcePlatform  Source = "platform"
	SourceMerchant  Source = "merchant"
	SourceDriver    Source = "driver"
	SourceEstimator Source = "estimator"
	SourceAgent     Source = "agent"
)

// Sources lists every source in a fixed order, so loops over sources are deterministic.
var Sources = []Source{SourcePlatform, SourceMerchant, SourceDriver, SourceEstimator, SourceAgent}

// Valid reports whether s is one of the known sources.
func (s Source) Valid() bool {
	switch s {
	case SourcePlatform, SourceMerchant, SourceDriver, SourceEstimator, SourceAgent:
		return true
	}
	return false
}

// Status is an order's lifecycle status.
type Status string

// Statuses in lifecycle order, then cancelled.
const (
	StatusCreated        Status = "created"
	StatusConfirmed      Status = "confirmed"
	StatusPreparing      Status = "preparing"
	StatusReadyForPickup Status = "ready_for_pickup"
	StatusPickedUp       Status = "picked_up"
	StatusEnRoute        Status = "en_route"
	StatusArrived        Status = "arrived"
	StatusDelivered      Status = "delivered"
	StatusCancelled      Status = "cancelled"
)

// Statuses lists every status: the lifecycle in order, then cancelled.
var Statuses = []Status{
	StatusCreated, StatusConfirmed, StatusPreparing, StatusReadyForPickup,
	StatusPickedUp, StatusEnRoute, StatusArrived, StatusDelivered, StatusCancelled,
}

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if v == s {
			return true
		}
	}
	return false
}

// Event is one order event as producers publish it (DESIGN §2, "Event body").
type Event struct {
	SchemaVersion int               `json:"schema_version"`
	EventID       string            `json:"event_id"`
	OrderID       string            `json:"order_id"`
	Source        Source            `json:"source"`
	SourceSeq     uint64            `json:"source_seq"`
	OccurredAt    time.Time         `json:"occurred_at"`
	Status        Status            `json:"status,omitempty"`
	ETA           *time.Time        `json:"eta,omitempty"`
	ActorID       string            `json:"actor_id,omitempty"`
	CustomerID    string            `json:"customer_id,omitempty"`
	RestaurantID  string            `json:"restaurant_id,omitempty"`
	DasherID      string            `json:"dasher_id,omitempty"`
	Reason        string            `json:"reason,omitempty"`
	Observed      map[Source]uint64 `json:"observed,omitempty"`
}
