package regions

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/pipelines/topology"
)

func TestJudgeHome(t *testing.T) {
	ledger := func(epoch string, subjects ...string) jetstream.StreamConfig {
		c := jetstream.StreamConfig{Name: topology.MilestonesStream, Subjects: subjects}
		if epoch != "" {
			c.Metadata = map[string]string{topology.MetaEpoch: epoch, topology.MetaPromotedFrom: "a"}
		}
		return c
	}
	copyOf := func(home string) jetstream.StreamConfig {
		return jetstream.StreamConfig{Name: topology.MilestonesStream, Sources: []*jetstream.StreamSource{topology.PeerSource(topology.MilestonesStream, home)}}
	}
	heldBy := func(why string) jetstream.StreamConfig {
		c := ledger("", topology.MilestonesHeldSubject)
		c.Metadata = map[string]string{topology.MetaHeld: why}
		return c
	}
	taking := topology.MilestonesPrefix + ".*.*"
	for _, tc := range []struct {
		name       string
		epoch      int
		peer       jetstream.StreamConfig
		verdict    HomeVerdict
		yield, sup bool
	}{
		{"peer copies this region", 0, copyOf("a"), HomeConfirmed, false, false},
		{"peer copies another region", 0, copyOf("c"), HomeUnconfirmed, false, false},
		{"peer promoted after this region's ledger", 0, ledger("1", taking), HomeContested, true, false},
		{"both never promoted (two homes configured)", 0, ledger("", taking, topology.MilestonesRelayPrefix+".*.*"), HomeContested, true, false},
		{"same epoch", 1, ledger("1", taking), HomeContested, true, false},
		{"this region promoted later", 2, ledger("1", taking), HomeContested, false, true},
		{"peer handing its ledger over", 0, ledger("1", topology.MilestonesHeldSubject), HomeConfirmed, false, false},
		{"peer held by its guard", 0, heldBy("region a holds a ledger too"), HomeUnconfirmed, false, false},
	} {
		c := judgeHome("a", tc.epoch, "b", tc.peer)
		if c.Verdict != tc.verdict || c.Yield() != tc.yield || c.Supersedes() != tc.sup {
			t.Errorf("%s: %+v (yield %v, supersedes %v), want verdict %d yield %v supersedes %v", tc.name, c, c.Yield(), c.Supersedes(), tc.verdict, tc.yield, tc.sup)
		}
	}
}
