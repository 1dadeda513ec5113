package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Store is a Store in a bucket of any S3-compatible service (AWS S3, MinIO, Ceph,
// R2, ...). Put is a PUT with "If-None-Match: *": the service refuses to replace an
// object, which is the create-only rule, and acknowledges only a stored object, which
// is durability. Names are object keys under an optional prefix.
type S3Store struct {
	client *minio.Client
	bucket string
	prefix string // "" or ends with "/"
}

// S3Options locate a bucket. Credentials come from the environment
// (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, or MINIO_ROOT_USER /
// MINIO_ROOT_PASSWORD), then the instance's IAM role; never from a URL or a flag, so
// they stay out of process listings and config files.
type S3Options struct {
	Bucket string
	Prefix string
	// Endpoint is host[:port]. Default s3.amazonaws.com.
	Endpoint string
	// Insecure talks plain HTTP (a MinIO on a private network, a test server).
	Insecure bool
	// Region is optional for most services.
	Region string
	// PathStyle addresses the bucket in the path, not the host name (MinIO, Ceph).
	PathStyle bool
}

// ParseS3URL reads s3://bucket[/prefix][?endpoint=host:port&insecure=true&region=R&path-style=true].
func ParseS3URL(raw string) (S3Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return S3Options{}, fmt.Errorf("archive location %q: %w", raw, err)
	}
	if u.Scheme != "s3" || u.Host == "" {
		return S3Options{}, fmt.Errorf("archive location %q: want s3://bucket[/prefix]", raw)
	}
	if u.User != nil {
		return S3Options{}, fmt.Errorf("archive location %q: credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not the URL", u.Redacted())
	}
	o := S3Options{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/")}
	q := u.Query()
	for k := range q {
		switch k {
		case "endpoint", "insecure", "region", "path-style":
		default:
			return S3Options{}, fmt.Errorf("archive location %q: unknown parameter %q (endpoint, insecure, region, path-style)", raw, k)
		}
	}
	o.Endpoint, o.Region = q.Get("endpoint"), q.Get("region")
	for k, dst := range map[string]*bool{"insecure": &o.Insecure, "path-style": &o.PathStyle} {
		if v := q.Get(k); v != "" {
			if *dst, err = strconv.ParseBool(v); err != nil {
				return S3Options{}, fmt.Errorf("archive location %q: %s=%q is not a boolean", raw, k, v)
			}
		}
	}
	return o, nil
}

// NewS3Store connects and checks that the bucket exists: archiving into a bucket that
// is not there should fail at start, not at the first batch an hour later.
func NewS3Store(ctx context.Context, o S3Options) (*S3Store, error) {
	if o.Endpoint == "" {
		o.Endpoint = "s3.amazonaws.com"
	}
	creds := credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{}, &credentials.EnvMinio{}, &credentials.IAM{},
	})
	lookup := minio.BucketLookupAuto
	if o.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(o.Endpoint, &minio.Options{
		Creds: creds, Secure: !o.Insecure, Region: o.Region, BucketLookup: lookup,
	})
	if err != nil {
		return nil, fmt.Errorf("archive s3://%s: %w", o.Bucket, err)
	}
	ok, err := client.BucketExists(ctx, o.Bucket)
	if err != nil {
		return nil, fmt.Errorf("archive s3://%s at %s: %w", o.Bucket, o.Endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("archive s3://%s at %s: no such bucket (create it first)", o.Bucket, o.Endpoint)
	}
	s := &S3Store{client: client, bucket: o.Bucket}
	if o.Prefix != "" {
		s.prefix = o.Prefix + "/"
	}
	return s, nil
}

// Put uploads in one PUT with If-None-Match: * and a Content-MD5, so neither a
// replaced nor a corrupted object can be stored. One PUT, never multipart, keeps the
// condition and the write one atomic step (archive files are far below S3's 5 GiB
// single-PUT limit).
func (s *S3Store) Put(ctx context.Context, name string, data []byte) error {
	if err := validName(name); err != nil {
		return err
	}
	opts := minio.PutObjectOptions{ContentType: "application/vnd.apache.parquet", SendContentMd5: true, DisableMultipart: true}
	opts.SetMatchETagExcept("*")
	_, err := s.client.PutObject(ctx, s.bucket, s.prefix+name, bytes.NewReader(data), int64(len(data)), opts)
	if minio.ToErrorResponse(err).Code == minio.PreconditionFailed {
		return fmt.Errorf("put %s: %w", name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("put s3://%s/%s%s: %w", s.bucket, s.prefix, name, err)
	}
	return nil
}

// Get downloads an object.
func (s *S3Store) Get(ctx context.Context, name string) ([]byte, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, s.prefix+name, minio.GetObjectOptions{})
	var b []byte
	if err == nil {
		b, err = io.ReadAll(obj)
		obj.Close()
	}
	if code := minio.ToErrorResponse(err).Code; code == minio.NoSuchKey {
		return nil, fmt.Errorf("get %s: %w", name, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("get s3://%s/%s%s: %w", s.bucket, s.prefix, name, err)
	}
	return b, nil
}

// List pages through ListObjectsV2 with the prefix.
func (s *S3Store) List(ctx context.Context, prefix string) ([]string, error) {
	var out []string
	for obj := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("list s3://%s/%s%s: %w", s.bucket, s.prefix, prefix, obj.Err)
		}
		out = append(out, strings.TrimPrefix(obj.Key, s.prefix))
	}
	sort.Strings(out)
	return out, nil
}

// OpenStore opens the store a location names: s3://bucket/prefix (see ParseS3URL)
// or a local directory.
func OpenStore(ctx context.Context, location string) (Store, error) {
	if strings.HasPrefix(location, "s3://") {
		o, err := ParseS3URL(location)
		if err != nil {
			return nil, err
		}
		return NewS3Store(ctx, o)
	}
	if strings.Contains(location, "://") {
		return nil, errors.New("archive location " + strconv.Quote(location) + ": a directory or s3://bucket/prefix")
	}
	return NewDirStore(location)
}

// openStoreForRead opens the store at location as OpenStore does, except that a
// directory must exist already: a reader never creates one.
func openStoreForRead(ctx context.Context, location string) (Store, error) {
	if !strings.Contains(location, "://") {
		info, err := os.Stat(location)
		if err != nil {
			return nil, fmt.Errorf("archive dir %s: %w", location, err)
		}
		if !info.IsDir() {
			return nil, fmt.Errorf("archive dir %s: not a directory", location)
		}
	}
	return OpenStore(ctx, location)
}
