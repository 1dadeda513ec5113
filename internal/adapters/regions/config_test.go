package regions

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

func TestParsePeer(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Peer
		err  string
	}{
		{"eu-west=10.0.0.7:7422", Peer{"eu-west", "10.0.0.7:7422"}, ""},
		{"us", Peer{"us", ""}, ""},
		{"EU=h:1", Peer{}, "region name"},
		{"a-very-long-region-name=h:1", Peer{}, "region name"},
		{"eu=nohost", Peer{}, "address"},
	} {
		got, err := ParsePeer(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePeer(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParsePeer(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// TestMilestonesHomeDefault: both regions of a pair compute the same home.
func TestMilestonesHomeDefault(t *testing.T) {
	a := Config{Name: "eu", Peers: []Peer{{"ap", "h:1"}}}
	b := Config{Name: "ap", Peers: []Peer{{"eu", "h:1"}}}
	a.SetDefaults()
	b.SetDefaults()
	if a.MilestonesHome != "ap" || b.MilestonesHome != "ap" {
		t.Fatalf("homes %q and %q, want ap for both", a.MilestonesHome, b.MilestonesHome)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string
	}{
		{"single region", Config{}, ""},
		{"two regions", Config{Name: "a", Listen: "127.0.0.1:7422", Peers: []Peer{{"b", "h:1"}}}, ""},
		{"bad name", Config{Name: "A_1"}, "name must match"},
		{"self as peer", Config{Name: "a", Peers: []Peer{{"a", "h:1"}}}, "is this region"},
		{"three regions", Config{Name: "a", Peers: []Peer{{"b", "h:1"}, {"c", "h:2"}}}, "two regions"},
		{"bad listen", Config{Name: "a", Listen: "7422"}, "region listen"},
		{"milestones at a peer", Config{Name: "a", Peers: []Peer{{"b", "h:1"}}, MilestonesHome: "b"}, ""},
		{"milestones nowhere", Config{Name: "a", Peers: []Peer{{"b", "h:1"}}, MilestonesHome: "c"}, "milestones region"},
		{"peer creds", Config{Name: "a", Peers: []Peer{{"b", "h:1"}}, PeerCreds: map[string]string{"b": "b.creds"}}, ""},
		{"creds for no peer", Config{Name: "a", Peers: []Peer{{"b", "h:1"}}, PeerCreds: map[string]string{"c": "c.creds"}}, "not a peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.SetDefaults()
			err := tc.cfg.Validate()
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.err)
			}
		})
	}
}

// TestConfigureOneLinkPerPair: the region whose name sorts first opens the link, the
// other only listens, so two regions never form a leafnode loop; the link never
// carries producer, milestone or KV subjects.
func TestConfigureOneLinkPerPair(t *testing.T) {
	a := Config{Name: "a", Listen: "127.0.0.1:7001", Peers: []Peer{{"b", "127.0.0.1:7002"}}}
	b := Config{Name: "b", Listen: "127.0.0.1:7002", Peers: []Peer{{"a", "127.0.0.1:7001"}}}
	var oa, ob server.Options
	if err := a.Configure(&oa); err != nil {
		t.Fatal(err)
	}
	if err := b.Configure(&ob); err != nil {
		t.Fatal(err)
	}
	if oa.JetStreamDomain != "a" || ob.JetStreamDomain != "b" || oa.ServerName == ob.ServerName {
		t.Fatalf("domains %q %q, server names %q %q", oa.JetStreamDomain, ob.JetStreamDomain, oa.ServerName, ob.ServerName)
	}
	if len(oa.LeafNode.Remotes) != 1 || len(ob.LeafNode.Remotes) != 0 {
		t.Fatalf("a opens %d links, b opens %d; want 1 and 0", len(oa.LeafNode.Remotes), len(ob.LeafNode.Remotes))
	}
	r := oa.LeafNode.Remotes[0]
	if r.URLs[0].Host != "127.0.0.1:7002" {
		t.Errorf("a links to %s", r.URLs[0])
	}
	for _, want := range []string{"orders.>", "$KV.>"} {
		if !contains(r.DenyImports, want) || !contains(r.DenyExports, want) {
			t.Errorf("link does not deny %s both ways: imports %v exports %v", want, r.DenyImports, r.DenyExports)
		}
	}
	if ob.LeafNode.Port != 7002 {
		t.Errorf("b listens on %d", ob.LeafNode.Port)
	}
	var none server.Options
	if err := (Config{}).Configure(&none); err != nil || none.JetStreamDomain != "" || none.LeafNode.Port != 0 {
		t.Errorf("single region changed the server options: %v %+v", err, none.LeafNode)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// TestSecureLinks: with auth, the link a region opens presents the peer's creds and
// binds the local account; one opened without creds is refused before it starts;
// the accepting region's listener takes TLS when given.
func TestSecureLinks(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "b.creds")
	if err := os.WriteFile(creds, []byte("creds"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := Config{Name: "a", Listen: "127.0.0.1:7422", Peers: []Peer{{"b", "h:1"}}, PeerCreds: map[string]string{"b": creds}}
	a.SetDefaults()
	var oa server.Options
	if err := a.Configure(&oa); err != nil {
		t.Fatal(err)
	}
	dial := &tls.Config{MinVersion: tls.VersionTLS12}
	if err := a.SecureLinks(&oa, LinkSecurity{Account: "ACC", DialTLS: dial}); err != nil {
		t.Fatal(err)
	}
	if r := oa.LeafNode.Remotes[0]; r.Credentials != creds || r.LocalAccount != "ACC" || !r.TLS || r.TLSConfig == nil {
		t.Errorf("link to b: creds %q account %q tls %v", r.Credentials, r.LocalAccount, r.TLS)
	}

	a.PeerCreds = nil
	var o server.Options
	_ = a.Configure(&o)
	if err := a.SecureLinks(&o, LinkSecurity{Account: "ACC"}); err == nil || !strings.Contains(err.Error(), "--peer-creds b=FILE") {
		t.Errorf("link without creds: %v, want a refusal naming --peer-creds", err)
	}

	b := Config{Name: "b", Listen: "0.0.0.0:7422", Peers: []Peer{{"a", ""}}}
	b.SetDefaults()
	var ob server.Options
	_ = b.Configure(&ob)
	if err := b.SecureLinks(&ob, LinkSecurity{Account: "ACC", ListenTLS: dial}); err != nil || ob.LeafNode.TLSConfig == nil {
		t.Errorf("b's listener: err %v, tls %v", err, ob.LeafNode.TLSConfig != nil)
	}
}
