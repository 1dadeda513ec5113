package regions

import (
	"testing"
	"time"
)

func TestStalled(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    PeerStatus
		want bool
	}{
		{"caught up", PeerStatus{Link: "up", LagEvents: 0, LastHeard: time.Hour}, false},
		{"link down", PeerStatus{Link: "down", LagEvents: 5, LastHeard: time.Hour}, false},
		{"flowing", PeerStatus{Link: "up", LagEvents: 5, LastHeard: time.Second}, false},
		{"silent while behind", PeerStatus{Link: "up", LagEvents: 5, LastHeard: StallAfter + time.Second}, true},
		{"never ran since start", PeerStatus{Link: "up", LagEvents: 1, LastHeard: -1}, true},
	} {
		if got := stalled(tc.p); got != tc.want {
			t.Errorf("%s: stalled = %v, want %v", tc.name, got, tc.want)
		}
	}
}
