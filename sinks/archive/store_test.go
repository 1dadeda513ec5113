package archive_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/orderflow/orderflow/sinks/archive"
)

func TestDirStoreIsCreateOnly(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := archive.NewDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "events/day=2026-01-05/b1.parquet", []byte("one")); err != nil {
		t.Fatal(err)
	}
	// A second Put of the name changes nothing: finishing a batch twice is harmless.
	if err := s.Put(ctx, "events/day=2026-01-05/b1.parquet", []byte("two")); !errors.Is(err, archive.ErrExists) {
		t.Fatalf("second put: %v, want ErrExists", err)
	}
	got, err := s.Get(ctx, "events/day=2026-01-05/b1.parquet")
	if err != nil || string(got) != "one" {
		t.Fatalf("get: %q %v", got, err)
	}
	if err := s.Put(ctx, "orders/day=2026-01-05/b1.parquet", []byte("o")); err != nil {
		t.Fatal(err)
	}
	names, err := s.List(ctx, "events/")
	if err != nil || !slices.Equal(names, []string{"events/day=2026-01-05/b1.parquet"}) {
		t.Fatalf("list events/: %v %v", names, err)
	}
	if names, _ := s.List(ctx, ""); len(names) != 2 {
		t.Fatalf("list all: %v", names)
	}
	if names, _ := s.List(ctx, "events/day=2027-01-01/"); len(names) != 0 {
		t.Fatalf("list of a missing day: %v", names)
	}
	if _, err := s.Get(ctx, "events/day=2026-01-05/nope.parquet"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("get missing: %v, want fs.ErrNotExist", err)
	}
	for _, bad := range []string{"../x", "/abs", "a/../../x", "events/.tmp-x", ""} {
		if err := s.Put(ctx, bad, nil); err == nil {
			t.Errorf("put %q: accepted", bad)
		}
	}
	// No temporary file is left behind.
	err = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "events", "day=2026-01-05", "b1.parquet")); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  archive.Config
		ok   bool
	}{
		{"dir only", archive.Config{Dir: "x"}, true},
		{"no store", archive.Config{}, false},
		{"negative age", archive.Config{Dir: "x", MinAge: -1}, false},
		{"huge batch", archive.Config{Dir: "x", BatchOrders: 100_000}, false},
		{"tiny interval", archive.Config{Dir: "x", Interval: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.SetDefaults()
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
