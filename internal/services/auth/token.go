package auth

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/orderflow/orderflow/schemas"
)

// DefaultAudience is the `aud` a token must carry unless serve is told otherwise.
const DefaultAudience = "orderflow"

// TokenKeyFile is the local Ed25519 signing key, relative to the auth directory.
const TokenKeyFile = "token-ed25519.pem"

// Algorithms are the only signature algorithms a token may use (DESIGN §8.2).
// Anything else, `none` included, fails to parse.
var Algorithms = []jose.SignatureAlgorithm{jose.EdDSA, jose.RS256}

// ErrInvalidToken is wrapped by every Verify error: the caller answers 401.
var ErrInvalidToken = errors.New("invalid token")

var actorPattern = regexp.MustCompile(`^[A-Za-z0-9_.@:-]{1,64}$`)

// Claims are what an orderflow token says beyond the registered claims.
type Claims struct {
	jwt.Claims
	// Source fixes the producer class the bearer publishes as.
	Source schemas.Source `json:"source"`
	// ActorID is the dasher, merchant user, agent or service instance: the unit of
	// rate limiting, and for driver, merchant and agent the required actor_id.
	ActorID string `json:"actor_id"`
}

// Identity is a verified token's bearer.
type Identity struct {
	Source  schemas.Source
	ActorID string
	Expires time.Time
}

// Dir is where a data directory keeps its keys.
func Dir(dataDir string) string { return filepath.Join(dataDir, "auth") }

// LoadOrCreateTokenKey reads the Ed25519 key in dir, creating it (mode 0600) on
// first use, so `serve` and `token issue` on one data directory share it.
func LoadOrCreateTokenKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, TokenKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, gerr := ed25519.GenerateKey(rand.Reader)
		if gerr != nil {
			return nil, gerr
		}
		der, merr := x509.MarshalPKCS8PrivateKey(priv)
		if merr != nil {
			return nil, merr
		}
		if err := writeSecret(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
			return nil, err
		}
		return priv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read token key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("token key %s: not PEM", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("token key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("token key %s: not an Ed25519 key", path)
	}
	return priv, nil
}

// writeSecret creates path exclusively with mode 0600 (its directory 0700): a
// second writer racing the first gets an error rather than a different key.
func writeSecret(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// KeyID is the RFC 7638 thumbprint of a public key, the `kid` of the tokens it signs.
func KeyID(pub crypto.PublicKey) (string, error) {
	jwk := jose.JSONWebKey{Key: pub}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// IssueRequest says who a token is for.
type IssueRequest struct {
	Source   schemas.Source
	ActorID  string
	TTL      time.Duration // default 1h
	Audience string        // default DefaultAudience
	Now      time.Time     // default time.Now()
}

// Issue signs a token with the local key.
func Issue(key ed25519.PrivateKey, req IssueRequest) (string, error) {
	if !req.Source.Valid() {
		return "", fmt.Errorf("source %q: must be one of %v", req.Source, schemas.Sources)
	}
	if !actorPattern.MatchString(req.ActorID) {
		return "", fmt.Errorf("actor %q: must match %s", req.ActorID, actorPattern)
	}
	if req.TTL <= 0 {
		req.TTL = time.Hour
	}
	if req.Audience == "" {
		req.Audience = DefaultAudience
	}
	if req.Now.IsZero() {
		req.Now = time.Now()
	}
	kid, err := KeyID(key.Public())
	if err != nil {
		return "", err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		return "", err
	}
	c := Claims{
		Claims: jwt.Claims{
			Subject:  req.ActorID,
			Audience: jwt.Audience{req.Audience},
			IssuedAt: jwt.NewNumericDate(req.Now),
			Expiry:   jwt.NewNumericDate(req.Now.Add(req.TTL)),
		},
		Source: req.Source, ActorID: req.ActorID,
	}
	return jwt.Signed(signer).Claims(c).Serialize()
}

// KeySource yields the keys tokens are verified with: the local public key, or a
// JWKS an identity provider publishes.
type KeySource interface {
	// Keys returns the current key set; refresh asks for a fresh copy (a token named
	// a kid the cached set does not have).
	Keys(ctx context.Context, refresh bool) (*jose.JSONWebKeySet, error)
}

// Verifier checks bearer tokens. It remembers tokens it verified until they
// expire, so a client resending its token (or bursting into the rate limit) costs
// a map lookup, not a signature check. The memory belongs to one key set: when the
// set changes (a JWKS refetch, at most MaxAge apart), it starts over, so a key the
// identity provider withdrew stops verifying its tokens.
type Verifier struct {
	keys     KeySource
	audience string
	leeway   time.Duration
	now      func() time.Time

	mu       sync.Mutex
	cache    map[string]Identity
	cacheSet *jose.JSONWebKeySet // the key set the cached tokens were verified with
}

// maxCachedTokens bounds the verified-token cache; past it, the cache starts over.
const maxCachedTokens = 1 << 16

// NewVerifier verifies tokens signed by keys and addressed to audience
// (DefaultAudience when empty).
func NewVerifier(keys KeySource, audience string) *Verifier {
	if audience == "" {
		audience = DefaultAudience
	}
	return &Verifier{keys: keys, audience: audience, leeway: 30 * time.Second, now: time.Now, cache: map[string]Identity{}}
}

// Verify parses and checks raw: algorithm, signature, exp (required), nbf, aud,
// and the orderflow claims. Every error wraps ErrInvalidToken.
func (v *Verifier) Verify(ctx context.Context, raw string) (Identity, error) {
	now := v.now()
	keys, err := v.keys.Keys(ctx, false)
	if err != nil {
		return Identity{}, err
	}
	v.mu.Lock()
	v.useSetLocked(keys)
	id, ok := v.cache[raw]
	v.mu.Unlock()
	if ok && now.Before(id.Expires.Add(v.leeway)) {
		return id, nil
	}
	id, keys, err = v.verify(ctx, raw, keys, now)
	if err == nil {
		v.mu.Lock()
		v.useSetLocked(keys)
		if len(v.cache) >= maxCachedTokens {
			clear(v.cache)
		}
		v.cache[raw] = id
		v.mu.Unlock()
	}
	return id, err
}

// useSetLocked forgets every cached token when the key set is not the one they
// were verified with.
func (v *Verifier) useSetLocked(keys *jose.JSONWebKeySet) {
	if keys != v.cacheSet {
		clear(v.cache)
		v.cacheSet = keys
	}
}

// verify checks raw against keys, refetching them once when the token names a kid
// they lack; it returns the set it verified with.
func (v *Verifier) verify(ctx context.Context, raw string, keys *jose.JSONWebKeySet, now time.Time) (Identity, *jose.JSONWebKeySet, error) {
	fail := func(msg string, err error) (Identity, *jose.JSONWebKeySet, error) {
		if err != nil {
			return Identity{}, nil, fmt.Errorf("%w: %s: %v", ErrInvalidToken, msg, err)
		}
		return Identity{}, nil, fmt.Errorf("%w: %s", ErrInvalidToken, msg)
	}
	tok, err := jwt.ParseSigned(raw, Algorithms)
	if err != nil {
		return fail("parse", err)
	}
	if len(tok.Headers) != 1 {
		return fail("expected one signature", nil)
	}
	if kid := tok.Headers[0].KeyID; kid != "" && len(keys.Key(kid)) == 0 {
		if keys, err = v.keys.Keys(ctx, true); err != nil {
			return Identity{}, nil, err
		}
	}
	var c Claims
	if err := tok.Claims(verificationKeys(keys, tok.Headers[0].KeyID), &c); err != nil {
		return fail("signature", err)
	}
	if c.Expiry == nil {
		return fail("no exp claim", nil)
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{v.audience}, Time: now}, v.leeway); err != nil {
		return fail("claims", err)
	}
	if !c.Source.Valid() {
		return fail(fmt.Sprintf("source claim %q is not a known source", c.Source), nil)
	}
	if !actorPattern.MatchString(c.ActorID) {
		return fail("actor_id claim missing or malformed", nil)
	}
	return Identity{Source: c.Source, ActorID: c.ActorID, Expires: c.Expiry.Time()}, keys, nil
}

// verificationKeys is what go-jose verifies with: the set picks a key by kid; a
// token without kid is tried against a set of exactly one key only.
func verificationKeys(keys *jose.JSONWebKeySet, kid string) any {
	if kid == "" && len(keys.Keys) == 1 {
		return keys.Keys[0]
	}
	return keys
}

// BearerToken reads `Authorization: Bearer <token>` (one header, scheme in any case).
func BearerToken(r *http.Request) (string, bool) {
	hs := r.Header.Values("Authorization")
	if len(hs) != 1 {
		return "", false
	}
	scheme, tok, ok := strings.Cut(hs[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
