package auth

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// StaticKeys is a key set that never changes: the local key, or a JWKS file.
type StaticKeys struct{ set *jose.JSONWebKeySet }

// Keys returns the set.
func (s StaticKeys) Keys(context.Context, bool) (*jose.JSONWebKeySet, error) { return s.set, nil }

// LocalKeys verifies tokens signed by the local key.
func LocalKeys(pub crypto.PublicKey) (StaticKeys, error) {
	kid, err := KeyID(pub)
	if err != nil {
		return StaticKeys{}, err
	}
	return StaticKeys{&jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: pub, KeyID: kid, Algorithm: string(jose.EdDSA), Use: "sig"}}}}, nil
}

// ParseJWKS reads a JWK Set, keeping only public signing keys: a set that
// published a private or symmetric key by mistake must not make HMAC tokens,
// signed with what anyone could read, verify.
func ParseJWKS(b []byte) (*jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	out := &jose.JSONWebKeySet{}
	for _, k := range set.Keys {
		if !k.Valid() || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
			continue
		}
		out.Keys = append(out.Keys, k.Public())
	}
	if len(out.Keys) == 0 {
		return nil, errors.New("jwks: no public signing keys")
	}
	return out, nil
}

// JWKSFile reads a key set from a file once.
func JWKSFile(path string) (StaticKeys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return StaticKeys{}, err
	}
	set, err := ParseJWKS(b)
	if err != nil {
		return StaticKeys{}, fmt.Errorf("%s: %w", path, err)
	}
	return StaticKeys{set}, nil
}

// RemoteKeys fetches a key set over HTTP(S), caches it for MaxAge and refetches
// early when a token names an unknown kid (key rotation), at most once per MinRefresh.
type RemoteKeys struct {
	URL        string
	Client     *http.Client
	MaxAge     time.Duration
	MinRefresh time.Duration

	mu       sync.Mutex
	set      *jose.JSONWebKeySet
	fetched  time.Time // last successful fetch
	tried    time.Time // last attempt, successful or not
	fetching bool
}

// NewRemoteKeys fetches url once, so a wrong URL fails at start, not at the first request.
func NewRemoteKeys(ctx context.Context, url string) (*RemoteKeys, error) {
	r := &RemoteKeys{URL: url, Client: &http.Client{Timeout: 10 * time.Second}, MaxAge: 5 * time.Minute, MinRefresh: 10 * time.Second}
	if _, err := r.Keys(ctx, false); err != nil {
		return nil, err
	}
	return r, nil
}

// Keys returns the cached set, refetching when it is older than MaxAge or when
// refresh is asked (a token names an unknown kid), at most once per MinRefresh,
// failed attempts included. A failed refetch keeps the cached set (the identity
// provider being down must not log everyone out), and the fetch runs without the
// lock, one at a time: while it runs, callers get the cached set. So a slow or
// down provider, or tokens with made-up kids, cannot queue every request behind it.
func (r *RemoteKeys) Keys(ctx context.Context, refresh bool) (*jose.JSONWebKeySet, error) {
	r.mu.Lock()
	stale := time.Since(r.fetched) >= r.MaxAge
	due := r.set == nil || ((stale || refresh) && time.Since(r.tried) >= r.MinRefresh)
	if !due || (r.fetching && r.set != nil) {
		set := r.set
		r.mu.Unlock()
		return set, nil
	}
	r.fetching, r.tried = true, time.Now()
	r.mu.Unlock()

	set, err := r.fetch(ctx)

	r.mu.Lock()
	defer r.mu.Unlock()
	r.fetching = false
	if err != nil {
		if r.set != nil {
			return r.set, nil
		}
		return nil, err
	}
	// The same keys keep the same set, so a Verifier's memory of verified tokens,
	// which belongs to one set, survives a refetch that changed nothing.
	if !sameKeys(r.set, set) {
		r.set = set
	}
	r.fetched = time.Now()
	return r.set, nil
}

func (r *RemoteKeys) fetch(ctx context.Context) (*jose.JSONWebKeySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", r.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks %s: %s", r.URL, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", r.URL, err)
	}
	return ParseJWKS(b)
}

// OpenKeys resolves --auth-jwks: an http(s) URL or a file path.
func OpenKeys(ctx context.Context, jwks string) (KeySource, error) {
	if strings.HasPrefix(jwks, "http://") || strings.HasPrefix(jwks, "https://") {
		return NewRemoteKeys(ctx, jwks)
	}
	return JWKSFile(jwks)
}

// sameKeys reports whether two key sets hold the same keys.
func sameKeys(a, b *jose.JSONWebKeySet) bool {
	if a == nil || b == nil {
		return a == b
	}
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}
