package topology

import (
	"testing"
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
	if !sourcesEqual(wal.Sources, wal.Sources) || sourcesEqual(wal.Sources, wal.Sources[:1]) {
		t.Error("sourcesEqual")
	}
}
