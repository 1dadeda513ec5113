package clickhouse

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestMigrateIdempotent applies the migrations twice: the second run applies none.
func TestMigrateIdempotent(t *testing.T) {
	conn, _ := sharedDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	applied, err := Migrate(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	f, err := DetectFeatures(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"0001_create_tables"}
	if f.DedupToken {
		want = append(want, "0002_insert_dedup_window")
	}
	if !slices.Equal(applied, want) {
		t.Fatalf("first Migrate applied %v, want %v", applied, want)
	}
	again, err := Migrate(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 0 {
		t.Fatalf("second Migrate applied %v", again)
	}
	for _, tbl := range dataTables {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+tbl).Scan(&n); err != nil {
			t.Fatalf("table %s: %v", tbl, err)
		}
	}
}
