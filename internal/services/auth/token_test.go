package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/orderflow/orderflow/schemas"
)

func localVerifier(t *testing.T) (ed25519.PrivateKey, *Verifier) {
	t.Helper()
	key, err := LoadOrCreateTokenKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := LocalKeys(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return key, NewVerifier(keys, "")
}

func TestIssueVerify(t *testing.T) {
	key, v := localVerifier(t)
	tok, err := Issue(key, IssueRequest{Source: schemas.SourceDriver, ActorID: "d-7", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.Source != schemas.SourceDriver || id.ActorID != "d-7" {
		t.Fatalf("identity %+v", id)
	}
}

func TestKeyIsStableAndPrivate(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreateTokenKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateTokenKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Equal(b) {
		t.Fatal("second load returned a different key")
	}
	fi, err := os.Stat(filepath.Join(dir, TokenKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
}

// TestRefused: every kind of bad token is ErrInvalidToken.
func TestRefused(t *testing.T) {
	key, v := localVerifier(t)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	mk := func(k ed25519.PrivateKey, c Claims) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: k}, nil)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := jwt.Signed(s).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	good := Claims{Claims: jwt.Claims{Audience: jwt.Audience{DefaultAudience}, Expiry: jwt.NewNumericDate(now.Add(time.Hour))}, Source: schemas.SourceDriver, ActorID: "d-1"}
	expired, _ := Issue(key, IssueRequest{Source: schemas.SourceDriver, ActorID: "d-1", TTL: time.Minute, Now: now.Add(-time.Hour)})
	wrongAud, _ := Issue(key, IssueRequest{Source: schemas.SourceDriver, ActorID: "d-1", Audience: "someone-else"})
	noExp := good
	noExp.Expiry = nil
	badSource := good
	badSource.Source = "admin"
	noActor := good
	noActor.ActorID = ""
	// alg none: header and claims of a good token, no signature.
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	none := enc(map[string]string{"alg": "none", "typ": "JWT"}) + "." + enc(good) + "."
	// HS256 keyed with the public key: the classic algorithm confusion.
	pub := key.Public().(ed25519.PublicKey)
	hs, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte(pub)}, nil)
	hsTok, _ := jwt.Signed(hs).Claims(good).Serialize()
	good1 := mk(key, good)
	tampered := good1[:strings.LastIndex(good1, ".")] + ".AAAA"
	for name, raw := range map[string]string{
		"forged": mk(other, good), "expired": expired, "wrong audience": wrongAud, "no exp": mk(key, noExp),
		"alg none": none, "hs256 confusion": hsTok, "unknown source": mk(key, badSource), "no actor": mk(key, noActor),
		"garbage": "not.a.token", "empty": "", "tampered": tampered,
	} {
		if _, err := v.Verify(context.Background(), raw); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: err = %v, want ErrInvalidToken", name, err)
		}
	}
	if _, err := v.Verify(context.Background(), good1); err != nil {
		t.Fatalf("control token refused: %v", err)
	}
}

// TestRemoteJWKSWithRotation: an RS256 key published by an identity provider,
// rotated to a new kid while serve runs.
func TestRemoteJWKSWithRotation(t *testing.T) {
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	k2, _ := rsa.GenerateKey(rand.Reader, 2048)
	var mu sync.Mutex
	current := []jose.JSONWebKey{{Key: k1.Public(), KeyID: "k1", Algorithm: "RS256", Use: "sig"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: current})
	}))
	defer srv.Close()
	keys, err := OpenKeys(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	keys.(*RemoteKeys).MinRefresh = 0
	v := NewVerifier(keys, "")
	sign := func(k *rsa.PrivateKey, kid string) string {
		s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k}, (&jose.SignerOptions{}).WithHeader("kid", kid))
		raw, _ := jwt.Signed(s).Claims(Claims{Claims: jwt.Claims{Audience: jwt.Audience{DefaultAudience}, Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}, Source: schemas.SourceAgent, ActorID: "a-1"}).Serialize()
		return raw
	}
	if _, err := v.Verify(context.Background(), sign(k1, "k1")); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), sign(k2, "k2")); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("unpublished key: %v", err)
	}
	mu.Lock()
	current = append(current, jose.JSONWebKey{Key: k2.Public(), KeyID: "k2", Algorithm: "RS256", Use: "sig"})
	mu.Unlock()
	if _, err := v.Verify(context.Background(), sign(k2, "k2")); err != nil {
		t.Fatalf("rotated key: %v", err)
	}

	// A refetch that finds the same keys keeps the set (and the verified tokens).
	before, _ := keys.Keys(context.Background(), false)
	keys.(*RemoteKeys).MaxAge = 0
	after, _ := keys.Keys(context.Background(), false)
	keys.(*RemoteKeys).MaxAge = 5 * time.Minute
	if before != after {
		t.Error("a refetch of unchanged keys replaced the key set")
	}

	// The provider withdraws k1: once the set is refetched (MaxAge), a token it
	// signed no longer verifies, though this verifier accepted it before.
	old := sign(k1, "k1")
	if _, err := v.Verify(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	current = current[1:]
	mu.Unlock()
	keys.(*RemoteKeys).MaxAge = 0
	if _, err := v.Verify(context.Background(), old); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("a token of a withdrawn key: %v, want refused", err)
	}
}

func TestJWKSRefusesSymmetricKeys(t *testing.T) {
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: []byte("secret"), KeyID: "h", Algorithm: "HS256"}}})
	if _, err := ParseJWKS(b); err == nil {
		t.Fatal("a symmetric key was accepted")
	}
}

// TestRemoteJWKSDoesNotQueueBehindASlowProvider: while a refetch hangs on the
// identity provider, other callers get the cached set at once; after a failed
// refetch, the next one waits MinRefresh (tokens with made-up kids ask for one each).
func TestRemoteJWKSDoesNotQueueBehindASlowProvider(t *testing.T) {
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	var requests atomic.Int32
	hang := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) > 1 {
			once.Do(func() { close(hang) })
			<-release
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k1.Public(), KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	}))
	defer srv.Close()
	defer close(release)
	keys, err := NewRemoteKeys(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	keys.MinRefresh = 0
	slow := make(chan error, 1)
	go func() {
		_, err := keys.Keys(context.Background(), true)
		slow <- err
	}()
	<-hang // the refetch is now stuck at the provider
	done := make(chan *jose.JSONWebKeySet, 1)
	go func() {
		set, _ := keys.Keys(context.Background(), true)
		done <- set
	}()
	select {
	case set := <-done:
		if set == nil || len(set.Key("k1")) != 1 {
			t.Fatalf("got %v, want the cached set", set)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a caller waited behind the stuck refetch")
	}
	release <- struct{}{} // the stuck refetch fails
	if err := <-slow; err != nil {
		t.Fatalf("a failed refetch with a cached set: %v, want the cached set", err)
	}
	keys.MinRefresh = time.Hour
	before := requests.Load()
	if _, err := keys.Keys(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if got := requests.Load(); got != before {
		t.Fatalf("a refetch %d requests after a failed one within MinRefresh", got-before)
	}
}
