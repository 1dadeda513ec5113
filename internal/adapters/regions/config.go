// Package regions joins orderflow's embedded JetStream servers of several regions
// with NATS's own links, reports how far each region's copy of its peers' events
// lags, restarts stalled sources, and keeps the one global milestone ledger fed:
// the forwarder (forward.go) moves a region's milestones to the milestones home, and
// promote.go turns a copy into the ledger or hands a ledger over (DESIGN §8.1).
//
// # Topology
//
// Each region is its own JetStream domain, named after the region, so every region
// has streams of the same names (ORDER_EVENTS, ORDER_INGEST, ...) apart from the
// others'. Two regions are joined by one leafnode connection: the region whose name
// sorts first solicits the other's --region-listen address (one link per pair; a
// second link the other way would be a loop NATS refuses). Over that link, each
// region's ORDER_EVENTS sources the peer's ORDER_INGEST through the peer's domain
// API ($JS.<peer>.API), so replication is JetStream's own stream sourcing, resumed
// from the last sourced sequence after any cut. The stream design that keeps this
// free of cycles and echo is in pipelines/topology (regions.go).
package regions

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// DefaultName is the region of an instance started without --region.
const DefaultName = "local"

var nameRE = regexp.MustCompile(`^[a-z0-9-]{1,16}$`)

// LocalSubjects never cross a region link: producers' events, milestones, DLQ
// (orders.>) and KV writes ($KV.>) each belong to the region they were sent to.
var LocalSubjects = []string{"orders.>", "$KV.>", "$O.>"}

// Peer is another region: its name (= its JetStream domain) and, for the embedded
// server, the address of its --region-listen.
type Peer struct {
	Name string
	Addr string // host:port; may be empty with --nats-url, where NATS links are the operator's
}

// Config is this instance's region and its peers. The zero value is the
// single-region deployment: no domain, no links, the topology of DESIGN §2.
type Config struct {
	// Name is this region, [a-z0-9-]{1,16}. Empty: single-region.
	Name string
	// Listen is where peer regions' servers connect (a leafnode listener).
	Listen string
	// Peers are the other regions.
	Peers []Peer
	// MilestonesHome is the region holding the global milestone ledger; the others
	// copy it (pipelines/topology milestones.go). Empty: the region whose name
	// sorts first, so every region computes the same home.
	MilestonesHome string
	// Handover, at start, hands a local ORDER_MILESTONES that disagrees with
	// MilestonesHome (a ledger of its own, or a copy of another region) over to
	// the home: its milestones are copied to the home's ledger, then it is replaced
	// by a copy (DemoteMilestones). Without it serve refuses such a stream.
	Handover bool
	// PeerCreds are, by peer name, the .creds files this region's server presents
	// when it opens the link to that peer: a user of the peer's ORDERFLOW account in
	// the region role, issued by the peer (orderflow creds issue --role region).
	// Needed with --auth, where the regions' servers run in operator mode; see
	// SecureLinks.
	PeerCreds map[string]string
	// ReconnectInterval is how long a cut link waits between reconnect attempts.
	// Default 1s (NATS's own default is 1s too, but says so explicitly here because
	// it bounds how soon replication resumes after a heal).
	ReconnectInterval time.Duration
}

// Enabled reports whether this instance runs as one of several regions.
func (c Config) Enabled() bool { return c.Name != "" || len(c.Peers) > 0 }

// ParsePeer reads NAME=HOST:PORT (or NAME alone, for --nats-url deployments).
func ParsePeer(s string) (Peer, error) {
	name, addr, _ := strings.Cut(s, "=")
	p := Peer{Name: strings.TrimSpace(name), Addr: strings.TrimSpace(addr)}
	if !nameRE.MatchString(p.Name) {
		return Peer{}, fmt.Errorf("peer %q: region name must match [a-z0-9-]{1,16}", s)
	}
	if p.Addr != "" {
		if _, _, err := net.SplitHostPort(p.Addr); err != nil {
			return Peer{}, fmt.Errorf("peer %q: address: %w", s, err)
		}
	}
	return p, nil
}

// SetDefaults fills unset fields of an enabled config.
func (c *Config) SetDefaults() {
	if c.Enabled() && c.Name == "" {
		c.Name = DefaultName
	}
	if c.ReconnectInterval == 0 {
		c.ReconnectInterval = time.Second
	}
	sort.Slice(c.Peers, func(i, j int) bool { return c.Peers[i].Name < c.Peers[j].Name })
	if c.Enabled() && c.MilestonesHome == "" {
		c.MilestonesHome = topology.DefaultMilestonesHome(c.Name, c.PeerNames())
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	if !nameRE.MatchString(c.Name) {
		errs = append(errs, fmt.Errorf("region %q: name must match [a-z0-9-]{1,16}", c.Name))
	}
	if len(c.Peers) > 1 {
		// Leafnode links among three regions form a triangle, which NATS detects as a
		// loop and refuses; more than two regions need a hub, which is not built yet.
		errs = append(errs, fmt.Errorf("%d peers: orderflow joins two regions for now (one leafnode link); see README \"Regions\"", len(c.Peers)))
	}
	seen := map[string]bool{}
	for _, p := range c.Peers {
		if p.Name == c.Name {
			errs = append(errs, fmt.Errorf("peer %q is this region", p.Name))
		}
		if seen[p.Name] {
			errs = append(errs, fmt.Errorf("peer %q given twice", p.Name))
		}
		seen[p.Name] = true
	}
	if c.MilestonesHome != "" && c.MilestonesHome != c.Name && !seen[c.MilestonesHome] {
		errs = append(errs, fmt.Errorf("milestones region %q is neither this region (%s) nor a peer", c.MilestonesHome, c.Name))
	}
	for name := range c.PeerCreds {
		if !seen[name] {
			errs = append(errs, fmt.Errorf("peer creds for %q, which is not a peer (--peer %s=HOST:PORT)", name, name))
		}
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			errs = append(errs, fmt.Errorf("region listen %q: %w", c.Listen, err))
		}
	}
	return errors.Join(errs...)
}

// PeerNames are the peers' names, sorted.
func (c Config) PeerNames() []string {
	var names []string
	for _, p := range c.Peers {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return names
}

// Solicits reports whether this region opens the link to peer (the one whose name
// sorts first does; the other only accepts).
func (c Config) Solicits(peer string) bool { return c.Name < peer }

// ServerName is the embedded server's name in this region. Servers joined by
// leafnodes must have distinct names, even across JetStream domains.
func (c Config) ServerName() string { return "orderflow-" + c.Name }

// Configure sets the embedded server's JetStream domain, its leafnode listener and
// the links it opens. It runs on the options before the server starts.
func (c Config) Configure(o *server.Options) error {
	if !c.Enabled() {
		return nil
	}
	o.JetStreamDomain = c.Name
	o.ServerName = c.ServerName()
	if c.Listen != "" {
		host, port, err := splitPort(c.Listen)
		if err != nil {
			return fmt.Errorf("region listen %q: %w", c.Listen, err)
		}
		o.LeafNode.Host, o.LeafNode.Port = host, port
	}
	o.LeafNode.ReconnectInterval = c.ReconnectInterval
	for _, p := range c.Peers {
		if !c.Solicits(p.Name) {
			continue
		}
		if p.Addr == "" {
			return fmt.Errorf("peer %s: an address is needed (this region opens the link to it)", p.Name)
		}
		remote, err := Remote(p.Addr)
		if err != nil {
			return fmt.Errorf("peer %s: %w", p.Name, err)
		}
		o.LeafNode.Remotes = append(o.LeafNode.Remotes, remote)
	}
	return nil
}

// Remote is the leafnode remote that joins this region to a peer region whose
// servers listen for leafnodes at addrs (host:port each; several when the peer is a
// cluster, so the link survives the loss of one of them). Configure sets it on the
// embedded server; with --nats-url, each server of the soliciting region's cluster
// needs the same remote (README "Regions").
func Remote(addrs ...string) (*server.RemoteLeafOpts, error) {
	if len(addrs) == 0 {
		return nil, errors.New("a leafnode remote needs an address")
	}
	var urls []*url.URL
	for _, a := range addrs {
		u, err := url.Parse("nats-leaf://" + a)
		if err != nil {
			return nil, err
		}
		urls = append(urls, u)
	}
	return &server.RemoteLeafOpts{
		URLs: urls,
		// Both regions' streams and buckets live in the same account, so without
		// these a stream's subject interest would cross the link: an event
		// published in one region would be stored by both regions' ingest logs,
		// and a snapshot write by both regions' KV buckets. Only JetStream's own
		// traffic crosses ($JS.<domain>.API requests, source deliveries, flow
		// control, replies); denying both ways on the soliciting side covers the
		// link in both directions.
		DenyImports: LocalSubjects,
		DenyExports: LocalSubjects,
		// Faster than the default backoff: replication resumes within about a
		// second of the link coming back.
		FirstInfoTimeout: 2 * time.Second,
	}, nil
}

// LinkSecurity is how the links of a region whose server runs with auth (and TLS)
// are secured; see SecureLinks.
type LinkSecurity struct {
	// Account is the public key of this region's ORDERFLOW account: the links bind
	// it to the peer's ORDERFLOW account.
	Account string
	// ListenTLS, when set, is the certificate peers connecting to Listen must
	// handshake with.
	ListenTLS *tls.Config
	// DialTLS, when set, is how the links this region opens verify the peer's
	// certificate: they then require TLS.
	DialTLS *tls.Config
}

// SecureLinks authenticates the links Configure set up, once the server trusts
// only its own authority (package auth): each region has its own operator and
// ORDERFLOW account, so a peer's server connects to this region's Listen as a user
// of this region's account, in the region role, whose permissions are the link's
// allow list (auth.RoleRegion); the link it opens presents the creds the peer
// issued for it (PeerCreds) and binds the local ORDERFLOW account to the peer's.
// Without creds for a peer it opens a link to, it refuses to start.
func (c Config) SecureLinks(o *server.Options, sec LinkSecurity) error {
	if !c.Enabled() {
		return nil
	}
	if sec.ListenTLS != nil && c.Listen != "" {
		o.LeafNode.TLSConfig = sec.ListenTLS.Clone()
		o.LeafNode.TLSTimeout = 2
	}
	for _, r := range o.LeafNode.Remotes {
		peer := c.remotePeer(r)
		creds := c.PeerCreds[peer]
		if creds == "" {
			return fmt.Errorf("peer %s: this region runs with auth and opens the link to %s, so it needs a credential %s issued for it: "+
				"on %s, orderflow creds issue --role region --out %s-link.creds; here, --peer-creds %s=FILE", peer, peer, peer, peer, c.Name, peer)
		}
		if _, err := os.Stat(creds); err != nil {
			return fmt.Errorf("peer %s: creds: %w", peer, err)
		}
		r.Credentials = creds
		r.LocalAccount = sec.Account
		if sec.DialTLS != nil {
			r.TLS = true
			r.TLSConfig = sec.DialTLS.Clone()
			r.TLSTimeout = 2
		}
	}
	return nil
}

// remotePeer is the peer a remote Configure added leads to.
func (c Config) remotePeer(r *server.RemoteLeafOpts) string {
	for _, p := range c.Peers {
		for _, u := range r.URLs {
			if u.Host == p.Addr {
				return p.Name
			}
		}
	}
	return ""
}

// splitPort parses host:port; port 0 picks a free one (nats-server spells it -1).
func splitPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	var port int
	if _, err := fmt.Sscanf(p, "%d", &port); err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}
