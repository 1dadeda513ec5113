package app_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/orderflow/orderflow/internal/adapters/embedded"
	"github.com/orderflow/orderflow/internal/adapters/regions"
	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/testsupport/netfault"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// regionCreds issues, as `orderflow creds issue --role R --data-dir dataDir` does,
// a credential of dataDir's authority (created if new) into a file.
func regionCreds(t *testing.T, dataDir string, role auth.Role) string {
	t.Helper()
	authz, err := auth.LoadOrCreateAuthority(auth.Dir(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	b, err := authz.UserCreds(role, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), string(role)+".creds")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startSecureRegion runs one region with --auth; its test connection is the
// pipeline user of the region's own authority.
func startSecureRegion(t *testing.T, dataDir string, rc regions.Config) (*region, func()) {
	t.Helper()
	return startSecureRegionWith(t, app.ServeConfig{DataDir: dataDir, Region: rc, Security: app.SecurityConfig{Auth: true}})
}

// startSecureRegionWith is startSecureRegion with any serve settings (auth on).
// The test's connection reads region status, so it uses the region inbox, the one
// whose replies cross the link (as `orderflow region status` does).
func startSecureRegionWith(t *testing.T, cfg app.ServeConfig, opts ...nats.Option) (*region, func()) {
	t.Helper()
	cfg.Security.Auth, cfg.NATSListen = true, "127.0.0.1:0"
	creds, err := auth.ConnectOptions(mustRead(t, regionCreds(t, cfg.DataDir, auth.RolePipeline)))
	if err != nil {
		t.Fatal(err)
	}
	return serveRegion(t, cfg, append(append(creds, auth.RegionInbox(), nats.MaxReconnects(0)), opts...)...)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// twoSecureRegions is twoRegions with --auth on both: each region has its own
// authority, and a opens the link with the region credential b issued for it.
func twoSecureRegions(t *testing.T) (a, b *region, link *netfault.Link, dirB, leafB string) {
	t.Helper()
	leafB = freeAddr(t)
	link = netfault.NewLink(t, "a-b", leafB)
	dirB = t.TempDir()
	linkCreds := regionCreds(t, dirB, auth.RoleRegion)
	b, _ = startSecureRegion(t, dirB, regions.Config{Name: "b", Listen: leafB, Peers: []regions.Peer{{Name: "a"}}})
	a, _ = startSecureRegion(t, t.TempDir(), regions.Config{
		Name: "a", Listen: freeAddr(t), Peers: []regions.Peer{{Name: "b", Addr: link.Addr()}},
		PeerCreds: map[string]string{"b": linkCreds},
	})
	return a, b, link, dirB, leafB
}

// TestSecureRegionsPartitionAndHeal: the partition and heal check with --auth on
// both regions, each its own operator and account, joined by an authenticated link.
func TestSecureRegionsPartitionAndHeal(t *testing.T) {
	a, b, link, _, _ := twoSecureRegions(t)
	partitionAndHeal(t, a, b, link, 150)
}

// TestSecureRegionsOverTLS: with --tls-cert on both regions the link is TLS too:
// a verifies b's certificate (here through --tls-ca) and replication runs over it;
// a server that does not trust b's certificate cannot open the link.
func TestSecureRegionsOverTLS(t *testing.T) {
	ctx := context.Background()
	certA, keyA, poolA := selfSigned(t, t.TempDir())
	certB, keyB, poolB := selfSigned(t, t.TempDir())
	dirB, leafB := t.TempDir(), freeAddr(t)
	linkCreds := regionCreds(t, dirB, auth.RoleRegion)
	b, _ := startSecureRegionWith(t, app.ServeConfig{
		DataDir:  dirB,
		Region:   regions.Config{Name: "b", Listen: leafB, Peers: []regions.Peer{{Name: "a"}}},
		Security: app.SecurityConfig{TLSCert: certB, TLSKey: keyB},
	}, nats.Secure(&tls.Config{RootCAs: poolB, MinVersion: tls.VersionTLS12}))
	a, _ := startSecureRegionWith(t, app.ServeConfig{
		DataDir: t.TempDir(),
		Region: regions.Config{
			Name: "a", Listen: freeAddr(t), Peers: []regions.Peer{{Name: "b", Addr: leafB}},
			PeerCreds: map[string]string{"b": linkCreds},
		},
		Security: app.SecurityConfig{TLSCert: certA, TLSKey: keyA, TLSCA: certB},
	}, nats.Secure(&tls.Config{RootCAs: poolA, MinVersion: tls.VersionTLS12}))

	msgs, _, err := simulate.Generate(simulate.Config{Seed: 5, Orders: 30})
	if err != nil {
		t.Fatal(err)
	}
	publishSplit(t, rand.New(rand.NewSource(5)), msgs, a, b)
	waitFor(t, 60*time.Second, "both WALs hold every event", walsHold(ctx, distinctEvents(msgs), a, b))

	// Valid creds, but no trust in b's certificate: the handshake fails.
	startIntruder(t, leafB, linkCreds).waitLogged(t, "certificate")
}

// TestSecureRegionRefusesLinkWithoutCreds: a region with --auth that opens a link
// does not start without the peer's credential for it.
func TestSecureRegionRefusesLinkWithoutCreds(t *testing.T) {
	dir := t.TempDir()
	cfg := app.ServeConfig{
		DataDir: dir, NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0",
		Region:   regions.Config{Name: "a", Listen: freeAddr(t), Peers: []regions.Peer{{Name: "b", Addr: freeAddr(t)}}},
		Security: app.SecurityConfig{Auth: true},
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4})),
	}
	err := app.Serve(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "--peer-creds b=FILE") {
		t.Fatalf("serve without the peer's creds: want a refusal naming --peer-creds, got %v", err)
	}
	cfg.Security.Auth = false
	cfg.Region.PeerCreds = map[string]string{"b": filepath.Join(dir, "b.creds")}
	if err := app.Serve(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "--peer-creds needs --auth") {
		t.Fatalf("peer creds without auth: want a refusal, got %v", err)
	}
}

// intruder is a server that tries to join region b's link on its own terms.
type intruder struct {
	nc     *nats.Conn
	mu     sync.Mutex
	log    strings.Builder // the server's warnings and errors, lower case
	logged chan struct{}
}

// Write takes the server's log lines (the link's refusals among them).
func (in *intruder) Write(p []byte) (int, error) {
	in.mu.Lock()
	in.log.WriteString(strings.ToLower(string(p)))
	in.mu.Unlock()
	select {
	case in.logged <- struct{}{}:
	default:
	}
	return len(p), nil
}

// waitLogged waits until the server logged want; 30s bound only a hang.
func (in *intruder) waitLogged(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		in.mu.Lock()
		log := in.log.String()
		in.mu.Unlock()
		if strings.Contains(log, want) {
			return
		}
		select {
		case <-in.logged:
		case <-deadline:
			t.Fatalf("the intruder's server did not log %q within 30s; it logged:\n%s", want, log)
		}
	}
}

// startIntruder runs a plain JetStream server (region x, no auth) that opens a
// link to addr, presenting creds when not empty, and without the region link's
// deny list: an honest peer's choice, which an intruder does not make.
func startIntruder(t *testing.T, addr, creds string) *intruder {
	t.Helper()
	in := &intruder{logged: make(chan struct{}, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc := regions.Config{Name: "x", Peers: []regions.Peer{{Name: "y", Addr: addr}}}
	rc.SetDefaults()
	srv, err := embedded.Start(ctx, embedded.Config{
		DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(in, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Configure: func(o *natsserver.Options) error {
			if err := rc.Configure(o); err != nil {
				return err
			}
			for _, r := range o.LeafNode.Remotes {
				r.Credentials = creds
				r.DenyImports, r.DenyExports = nil, nil
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	if in.nc, err = nats.Connect(srv.ClientURL(), auth.RegionInbox()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.nc.Close)
	return in
}

// TestSecureRegionLinkRefusals: region b (--auth) refuses a link without
// credentials and one with a region credential of another authority; a link with
// b's own region credential comes up but carries only the link's subjects: no
// producer events into b's ingest log, no KV reads, no other JetStream API.
func TestSecureRegionLinkRefusals(t *testing.T) {
	dirB, leafB := t.TempDir(), freeAddr(t)
	linkCreds := regionCreds(t, dirB, auth.RoleRegion)
	// With auth, the region listener may face the network.
	_, port, _ := net.SplitHostPort(leafB)
	b, _ := startSecureRegion(t, dirB, regions.Config{Name: "b", Listen: "0.0.0.0:" + port, Peers: []regions.Peer{{Name: "a"}}})

	t.Run("no creds", func(t *testing.T) {
		startIntruder(t, leafB, "").waitLogged(t, "authorization violation")
	})
	t.Run("creds of another authority", func(t *testing.T) {
		startIntruder(t, leafB, regionCreds(t, t.TempDir(), auth.RoleRegion)).waitLogged(t, "authorization violation")
	})

	in := startIntruder(t, leafB, linkCreds)
	in.waitLogged(t, "leafnode connection created")
	// What the link is for answers: b's ingest log through b's domain API.
	var info struct {
		Config struct{ Name string } `json:"config"`
	}
	waitFor(t, 30*time.Second, "b's ingest log answers over the link", func() error {
		m, err := in.nc.Request("$JS.b.API.STREAM.INFO."+topology.IngestStream, nil, 5*time.Second)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(m.Data, &info); err != nil || info.Config.Name != topology.IngestStream {
			return fmt.Errorf("answer %s (%v)", m.Data, err)
		}
		return nil
	})
	before := ingestCount(t, b)
	denied := map[string]string{
		"publish a producer event":     schemas.Subject(schemas.SourcePlatform, "intruder-1"),
		"read a snapshot (KV get)":     "$JS.b.API.DIRECT.GET.KV_" + topology.StatusBucket + ".$KV." + topology.StatusBucket + ".intruder-1",
		"KV info":                      "$JS.b.API.STREAM.INFO.KV_" + topology.StatusBucket,
		"write a snapshot (KV put)":    "$KV." + topology.StatusBucket + ".intruder-1",
		"consume the WAL":              "$JS.b.API.CONSUMER.CREATE." + topology.EventsStream,
		"delete the ingest log":        "$JS.b.API.STREAM.DELETE." + topology.IngestStream,
		"purge the ingest log":         "$JS.b.API.STREAM.PURGE." + topology.IngestStream,
		"publish a milestone directly": "orders.milestones.delivered.intruder-1",
	}
	for what, subject := range denied {
		// b does not let the link's side see any interest in these subjects, so the
		// intruder's own server answers at once that no one listens.
		_, err := in.nc.Request(subject, []byte(`{}`), 5*time.Second)
		if !errors.Is(err, nats.ErrNoResponders) {
			t.Errorf("%s (%s) across the link: want no responders, got %v", what, subject, err)
		}
	}
	if after := ingestCount(t, b); after != before {
		t.Errorf("b's ingest log went from %d to %d messages", before, after)
	}
}

func ingestCount(t *testing.T, r *region) uint64 {
	t.Helper()
	s, err := r.js.Stream(context.Background(), topology.IngestStream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}
