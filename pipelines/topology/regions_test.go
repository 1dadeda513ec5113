package topology

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestRegionalStreams: a region's producers' subjects go to ORDER_INGEST only, and
// ORDER_EVENTS sources its own ingest log and each peer's by domain, partitioned as
// in one region; without a region nothing changes.
func TestRegionalStreams(t *testing.T) {
	single := Topology{}
	single.SetDefaults()
	one := single.EventsConfig()
	if len(one.Subjects) != 1 || one.Subjects[0] != EventsSubjects || len(one.Sources) != 0 {
		t.Fatalf("single-region WAL changed: subjects %v sources %v", one.Subjects, one.Sources)
	}

	reg := single
	reg.Region, reg.Peers = "eu", []string{"us"}
	wal, in := reg.EventsConfig(), reg.IngestConfig()
	if len(wal.Subjects) != 0 {
		t.Errorf("regional WAL captures %v; producers' subjects belong to %s", wal.Subjects, IngestStream)
	}
	if transformDest(wal) != transformDest(one) {
		t.Errorf("partitioning %q, want %q as in one region", transformDest(wal), transformDest(one))
	}
	if len(wal.Sources) != 2 || wal.Sources[0].Name != IngestStream || wal.Sources[0].Domain != "" ||
		wal.Sources[1].Name != IngestStream || wal.Sources[1].Domain != "us" {
		t.Errorf("sources %+v %+v, want the local %s and us's", wal.Sources[0], wal.Sources[1], IngestStream)
	}
	if len(in.Subjects) != 1 || in.Subjects[0] != EventsSubjects || in.SubjectTransform != nil || len(in.Sources) != 0 {
		t.Errorf("ingest log: subjects %v transform %v sources %v", in.Subjects, in.SubjectTransform, in.Sources)
	}
	if in.Duplicates != wal.Duplicates || in.MaxMsgSize != wal.MaxMsgSize || in.Discard != wal.Discard {
		t.Errorf("ingest log limits differ from the WAL's")
	}
	// The server reports a source given by domain as its API prefix, in any order.
	reported := []*jetstream.StreamSource{
		{Name: IngestStream, External: &jetstream.ExternalStream{APIPrefix: "$JS.us.API"}},
		{Name: IngestStream},
	}
	if !sourcesEqual(wal.Sources, reported) {
		t.Errorf("sourcesEqual: %+v and the server's report of it differ", wal.Sources)
	}
	if sourcesEqual(wal.Sources, wal.Sources[:1]) || sourcesEqual(wal.Sources, []*jetstream.StreamSource{{Name: IngestStream}, {Name: IngestStream, Domain: "eu"}}) {
		t.Error("sourcesEqual: a missing source or another domain counted as equal")
	}
}

// TestMilestonesLedgerAndCopies: every region computes the same milestones home
// (the name that sorts first, unless configured); the home's ledger keeps one
// message per subject and also captures forwarded milestones, stored under the
// ledger's own subjects; the other regions hold a copy without subjects and queue
// their own milestones locally.
func TestMilestonesLedgerAndCopies(t *testing.T) {
	regional := func(region string, peers ...string) Topology {
		t := Topology{Region: region, Peers: peers}
		t.SetDefaults()
		return t
	}
	eu, us := regional("eu", "us"), regional("us", "eu")
	if eu.MilestonesHome != "eu" || us.MilestonesHome != "eu" {
		t.Fatalf("homes %q and %q, want eu for both", eu.MilestonesHome, us.MilestonesHome)
	}
	home := eu.MilestonesConfig()
	if MilestonesCopyOf(home) != "" || home.MaxMsgsPerSubject != 1 || !home.DiscardNewPerSubject ||
		len(home.Subjects) != 2 || home.Subjects[1] != MilestonesRelayPrefix+".*.*" ||
		home.SubjectTransform == nil || home.SubjectTransform.Source != MilestonesRelayPrefix+".*.*" {
		t.Errorf("home ledger %+v", home)
	}
	cp := us.MilestonesConfig()
	if MilestonesCopyOf(cp) != "eu" || len(cp.Subjects) != 0 || cp.Mirror != nil {
		t.Errorf("copy %+v: want a copy of eu's ledger without subjects", cp)
	}
	if eu.MilestonesPublishPrefix() != MilestonesPrefix || us.MilestonesPublishPrefix() != MilestonesQueuePrefix {
		t.Errorf("publish prefixes %q %q", eu.MilestonesPublishPrefix(), us.MilestonesPublishPrefix())
	}
	if q := us.MilestonesQueueConfig(); q.Retention != jetstream.WorkQueuePolicy || q.Subjects[0] != MilestonesQueuePrefix+".*.*" {
		t.Errorf("queue %+v", q)
	}
	single := Topology{}
	single.SetDefaults()
	if !single.MilestonesHomed() || MilestonesCopyOf(single.MilestonesConfig()) != "" || len(single.MilestonesConfig().Subjects) != 1 {
		t.Errorf("single-region ledger changed: %+v", single.MilestonesConfig())
	}
	bad := regional("eu", "us")
	bad.MilestonesHome = "ap"
	if err := bad.Validate(); err == nil {
		t.Error("a milestones home that is no region validated")
	}
}
