package deploy_test

import (
	"slices"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/orderflow/orderflow/internal/adapters/regions"
)

// TestRegionConfigs parses the sample nats-server configurations of two regions on
// clusters and checks they set what the R3 soak test sets in Go (internal/app
// TestRegionsR3PartitionNodeLossAndHeal): a JetStream domain per region, one
// leafnode remote from a to every server of b denying what serve's embedded server
// denies, and b's servers advertising no other leafnode addresses.
func TestRegionConfigs(t *testing.T) {
	a, err := server.ProcessConfigFile("nats-region-a.conf")
	if err != nil {
		t.Fatal(err)
	}
	b, err := server.ProcessConfigFile("nats-region-b.conf")
	if err != nil {
		t.Fatal(err)
	}
	if a.JetStreamDomain != "a" || b.JetStreamDomain != "b" {
		t.Errorf("domains %q and %q, want a and b", a.JetStreamDomain, b.JetStreamDomain)
	}
	if len(a.LeafNode.Remotes) != 1 {
		t.Fatalf("region a has %d leafnode remotes, want 1", len(a.LeafNode.Remotes))
	}
	want, err := regions.Remote("b1:7422", "b2:7422", "b3:7422")
	if err != nil {
		t.Fatal(err)
	}
	got := a.LeafNode.Remotes[0]
	if len(got.URLs) != len(want.URLs) {
		t.Errorf("region a's remote lists %d servers of b, want %d", len(got.URLs), len(want.URLs))
	}
	if !slices.Equal(got.DenyImports, want.DenyImports) || !slices.Equal(got.DenyExports, want.DenyExports) {
		t.Errorf("region a's remote denies imports %v, exports %v; serve's embedded server denies %v, %v",
			got.DenyImports, got.DenyExports, want.DenyImports, want.DenyExports)
	}
	if len(b.LeafNode.Remotes) != 0 || b.LeafNode.Port == 0 || !b.LeafNode.NoAdvertise {
		t.Errorf("region b: %d remotes, leafnode port %d, no_advertise %v; want only a listener that advertises nothing",
			len(b.LeafNode.Remotes), b.LeafNode.Port, b.LeafNode.NoAdvertise)
	}
}
