package app_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderflow/orderflow/internal/adapters/regions"
	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// selfSigned writes a certificate for 127.0.0.1 and localhost and its key.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "orderflow-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestServeWithAuthAndTLS runs serve as a deployment on a network would: NATS
// users, tokens, TLS on both listeners. The pipeline works with its own
// credentials; an anonymous NATS client and a request without a token are refused.
func TestServeWithAuthAndTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan app.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Serve(ctx, app.ServeConfig{
			DataDir: dir, NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Topology: topology.Topology{Partitions: 2},
			Security: app.SecurityConfig{Auth: true, TLSCert: certFile, TLSKey: keyFile},
			Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)), Started: func(a app.Addrs) { addrs <- a },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	var a app.Addrs
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("serve with auth and TLS stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start within 30s")
	}

	key, err := auth.LoadOrCreateTokenKey(auth.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.Issue(key, auth.IssueRequest{Source: schemas.SourceDriver, ActorID: "d-7"})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	base := "https://" + a.HTTP
	do := func(method, path, body string, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	ev := `{"schema_version":1,"event_id":"o-1-driver-1","order_id":"o-1","source":"driver","source_seq":1,"occurred_at":"2026-11-28T12:00:00Z","status":"picked_up","actor_id":"d-7"}`
	if code, body := do(http.MethodPost, "/v1/orders/o-1/events", ev, tok); code != http.StatusAccepted {
		t.Fatalf("POST: %d %s", code, body)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := do(http.MethodGet, "/v1/orders/o-1", "", tok)
		var st struct{ Status string }
		_ = json.Unmarshal([]byte(body), &st)
		if code == http.StatusOK && st.Status == "picked_up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pipeline did not fold the event within 15s: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _ := do(http.MethodGet, "/v1/orders/o-1", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("read without a token: %d, want 401", code)
	}
	if resp, err := http.Get("http://" + a.HTTP + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("plain HTTP on the TLS listener answered %d", resp.StatusCode)
		}
	}
	// NATS: TLS and credentials both required.
	if nc, err := nats.Connect(a.NATS, nats.Secure(&tls.Config{RootCAs: pool})); err == nil {
		nc.Close()
		t.Fatal("an anonymous NATS client connected")
	}
	creds, err := os.CreateTemp(t.TempDir(), "*.creds")
	if err != nil {
		t.Fatal(err)
	}
	authz, err := auth.LoadOrCreateAuthority(auth.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := authz.UserCreds(auth.RoleReader, "", time.Hour)
	_, _ = creds.Write(b)
	creds.Close()
	if nc, err := nats.Connect(a.NATS, nats.UserCredentials(creds.Name())); err == nil {
		nc.Close()
		t.Fatal("a NATS client without TLS connected")
	}
	nc, err := nats.Connect(a.NATS, nats.UserCredentials(creds.Name()), nats.Secure(&tls.Config{RootCAs: pool}), nats.CustomInboxPrefix(auth.RoleReader.InboxPrefix()))
	if err != nil {
		t.Fatalf("reader over TLS: %v", err)
	}
	nc.Close()
}

// TestServeRefusesPublicListenWithoutAuth: secure by default, with a way out named:
// beyond loopback, auth; and with auth, HTTP over TLS or TLS said to end in front.
func TestServeRefusesPublicListenWithoutAuth(t *testing.T) {
	for _, c := range []struct {
		cfg  app.ServeConfig
		want string
	}{
		{app.ServeConfig{HTTPListen: "0.0.0.0:0", NATSListen: "127.0.0.1:0"}, "--auth"},
		{app.ServeConfig{HTTPListen: "127.0.0.1:0", NATSListen: ":0"}, "--auth"},
		{app.ServeConfig{HTTPListen: "0.0.0.0:0", NATSListen: "127.0.0.1:0", Security: app.SecurityConfig{Auth: true}}, "--http-plaintext"},
		{app.ServeConfig{HTTPListen: "127.0.0.1:0", NATSListen: "127.0.0.1:0", Region: regions.Config{Name: "b", Listen: "0.0.0.0:0"}}, "--auth"},
	} {
		cfg := c.cfg
		cfg.DataDir = t.TempDir()
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		err := app.Serve(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s / %s: err = %v, want a refusal naming %s", cfg.HTTPListen, cfg.NATSListen, err, c.want)
		}
	}
}
