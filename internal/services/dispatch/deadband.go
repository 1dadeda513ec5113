package dispatch

import "time"

// DeadBand is when a dasher's app sends a position. A dasher stopped at a restaurant
// or a red light need not send one every second: the app sends when the position
// moved at least MinMoveM since the last one sent, when the speed changed by at least
// MinSpeedChangeMPS (starting or stopping), or when MaxSilence passed (a heartbeat,
// so a quiet dasher is known to be online). The simulator follows this policy.
type DeadBand struct {
	MinMoveM          float64
	MinSpeedChangeMPS float64
	MaxSilence        time.Duration
}

// DefaultDeadBand is the policy the simulator uses: 25 m, 3 m/s, 15 s. With GPS
// noise of about 5–10 m, 25 m sends nothing while parked; at city speed (8 m/s) it
// sends about every 3 s, so a position is at most ~25 m off on a map.
var DefaultDeadBand = DeadBand{MinMoveM: 25, MinSpeedChangeMPS: 3, MaxSilence: 15 * time.Second}

// ShouldSend reports whether cur must be sent, given last, the last position sent
// (zero At: nothing sent yet).
func (d DeadBand) ShouldSend(last, cur Position) bool {
	if last.At.IsZero() || cur.At.Sub(last.At) >= d.MaxSilence {
		return true
	}
	if DistanceM(last.Point, cur.Point) >= d.MinMoveM {
		return true
	}
	ds := cur.SpeedMPS - last.SpeedMPS
	return ds >= d.MinSpeedChangeMPS || -ds >= d.MinSpeedChangeMPS
}
