package archive_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/sinks/archive"
)

// storeContract is what the archiver relies on from every Store: create-only Puts,
// Gets that say "not exist", sorted prefix listings, and name checks.
func storeContract(t *testing.T, s archive.Store) {
	ctx := context.Background()
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
	for _, name := range []string{"orders/day=2026-01-05/b1.parquet", "events/day=2026-01-04/b0.parquet", "events/day=2026-01-05/a0.parquet"} {
		if err := s.Put(ctx, name, []byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	names, err := s.List(ctx, "events/")
	want := []string{"events/day=2026-01-04/b0.parquet", "events/day=2026-01-05/a0.parquet", "events/day=2026-01-05/b1.parquet"}
	if err != nil || !slices.Equal(names, want) {
		t.Fatalf("list events/: %v %v, want %v", names, err, want)
	}
	if names, _ := s.List(ctx, "events/day=2026-01-05/b1.parquet"); !slices.Equal(names, want[2:]) {
		t.Fatalf("list of one name: %v", names)
	}
	if names, _ := s.List(ctx, ""); len(names) != 4 {
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
	// Larger than the S3 client's multipart threshold (16 MiB): still one PUT.
	big := bytes.Repeat([]byte("parquet!"), 3<<20)
	if err := s.Put(ctx, "events/day=2026-01-06/big.parquet", big); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, "events/day=2026-01-06/big.parquet"); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big file: %d bytes back, %v", len(got), err)
	}
	// Create-only holds above the threshold too (a multipart upload would not
	// carry the condition).
	if err := s.Put(ctx, "events/day=2026-01-06/big.parquet", big); !errors.Is(err, archive.ErrExists) {
		t.Fatalf("second put of the big file: %v, want ErrExists", err)
	}
}

func TestDirStoreContract(t *testing.T) {
	dir := t.TempDir()
	s, err := archive.NewDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	storeContract(t, s)
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

func TestS3StoreContract(t *testing.T) {
	env := testenv.S3(t)
	bucket := env.Bucket(t)
	ctx := context.Background()
	s, err := archive.OpenStore(ctx, env.Location(bucket, "prod/orderflow"))
	if err != nil {
		t.Fatal(err)
	}
	storeContract(t, s)
	// The prefix is a namespace: a store without it sees the keys under it, and a
	// store under another prefix sees nothing.
	root, err := archive.OpenStore(ctx, env.Location(bucket, ""))
	if err != nil {
		t.Fatal(err)
	}
	if names, err := root.List(ctx, "prod/orderflow/orders/"); err != nil || !slices.Equal(names, []string{"prod/orderflow/orders/day=2026-01-05/b1.parquet"}) {
		t.Fatalf("keys under the prefix: %v %v", names, err)
	}
	other, err := archive.OpenStore(ctx, env.Location(bucket, "staging"))
	if err != nil {
		t.Fatal(err)
	}
	if names, err := other.List(ctx, ""); err != nil || len(names) != 0 {
		t.Fatalf("another prefix sees %v %v", names, err)
	}
}

func TestOpenStoreRefusesWhatCannotWork(t *testing.T) {
	env := testenv.S3(t)
	ctx := context.Background()
	for _, loc := range []string{
		env.Location("no-such-bucket", ""),
		"s3://",
		"s3://b/p?endpoint=" + env.Endpoint + "&insecure=maybe",
		"s3://b/p?endpont=" + env.Endpoint,
		"s3://key:secret@b/p",
		"gs://bucket/prefix",
	} {
		if _, err := archive.OpenStore(ctx, loc); err == nil {
			t.Errorf("OpenStore(%q) accepted", loc)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("OpenStore(%q) error shows the secret: %v", loc, err)
		}
	}
}

func TestParseS3URL(t *testing.T) {
	o, err := archive.ParseS3URL("s3://orders-archive/eu/prod/?endpoint=minio.internal:9000&insecure=true&region=eu-west-1&path-style=1")
	want := archive.S3Options{Bucket: "orders-archive", Prefix: "eu/prod", Endpoint: "minio.internal:9000", Insecure: true, Region: "eu-west-1", PathStyle: true}
	if err != nil || o != want {
		t.Fatalf("ParseS3URL = %+v %v, want %+v", o, err, want)
	}
	if o, err := archive.ParseS3URL("s3://b"); err != nil || o != (archive.S3Options{Bucket: "b"}) {
		t.Fatalf("bare bucket: %+v %v", o, err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  archive.Config
		ok   bool
	}{
		{"dir only", archive.Config{Location: "x"}, true},
		{"no store", archive.Config{}, false},
		{"negative age", archive.Config{Location: "x", MinAge: -1}, false},
		{"huge batch", archive.Config{Location: "x", BatchOrders: 100_000}, false},
		{"tiny interval", archive.Config{Location: "x", Interval: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.SetDefaults()
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
