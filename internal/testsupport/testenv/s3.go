package testenv

import (
	"fmt"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// S3Env is an S3-compatible HTTP server (gofakes3, objects in memory) on loopback.
// Clients speak the S3 protocol to it over TCP (conditional PUTs, Content-MD5 checks
// and paged listings included), so a Store tested here is tested on the wire. It
// does not verify request signatures: credentials are sent, not checked.
type S3Env struct {
	// Endpoint is host:port, plain HTTP.
	Endpoint string
	// AccessKey and SecretKey are what a client must present.
	AccessKey, SecretKey string

	backend *s3mem.Backend
}

var s3Buckets atomic.Int64

// S3 starts a server for the test and sets AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY for it (so the test cannot be parallel).
func S3(t testing.TB) *S3Env {
	t.Helper()
	e := &S3Env{AccessKey: "orderflow-test", SecretKey: "orderflow-test-secret", backend: s3mem.New()}
	srv := httptest.NewServer(gofakes3.New(e.backend, gofakes3.WithIntegrityCheck(true)).Server())
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	e.Endpoint = u.Host
	t.Setenv("AWS_ACCESS_KEY_ID", e.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", e.SecretKey)
	return e
}

// Bucket creates a new, empty bucket and returns its name.
func (e *S3Env) Bucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("archive-%d", s3Buckets.Add(1))
	if err := e.backend.CreateBucket(name); err != nil {
		t.Fatal(err)
	}
	return name
}

// Location is the archive location of prefix in bucket on this server.
func (e *S3Env) Location(bucket, prefix string) string {
	return "s3://" + bucket + "/" + strings.Trim(prefix, "/") + "?endpoint=" + e.Endpoint + "&insecure=true&path-style=true"
}
