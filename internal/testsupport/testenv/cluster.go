package testenv

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/adapters/embedded"
)

// clusterReadyTimeout bounds the wait for a JetStream meta leader; an election
// normally takes a few seconds on loopback.
const clusterReadyTimeout = 30 * time.Second

// ClusterEnv is an n-node JetStream cluster running in the test process, for
// replication (R3) and failover tests.
type ClusterEnv struct {
	// URLs are the client URLs of all nodes, in node order.
	URLs []string
	// Conn is connected to the cluster (any node) and fails over between nodes.
	Conn *nats.Conn
	// JS is a JetStream context on Conn.
	JS jetstream.JetStream
	// LeafAddrs are the nodes' leafnode listeners (host:port), in node order, when
	// ClusterConfig.LeafListen asked for them.
	LeafAddrs []string

	nodes []*server.Server
	opts  []*server.Options
	log   *slog.Logger
}

// NATSCluster starts an n-node JetStream cluster on loopback and returns once
// it has a meta leader. Every node routes to every other one (ports chosen up
// front), so any node can be stopped and started again.
func NATSCluster(t testing.TB, n int) *ClusterEnv {
	t.Helper()
	return NATSClusterWith(t, ClusterConfig{Nodes: n})
}

// ClusterConfig shapes a cluster of NATSClusterWith.
type ClusterConfig struct {
	// Nodes is how many servers the cluster has.
	Nodes int
	// Name names the cluster and prefixes its servers' names (<name>-n0, ...),
	// which must differ between clusters joined by leafnodes. Default
	// "orderflow-test", servers n0, n1, ...
	Name string
	// Domain is the cluster's JetStream domain (none when empty).
	Domain string
	// LeafListen gives every node a leafnode listener on a free loopback port
	// (LeafAddrs), for another cluster to solicit.
	LeafListen bool
	// Configure, when set, adjusts node i's options last (leafnode remotes).
	Configure func(i int, o *server.Options) error
}

// NATSClusterWith starts the cluster cfg describes; see NATSCluster.
func NATSClusterWith(t testing.TB, cfg ClusterConfig) *ClusterEnv {
	t.Helper()
	n := cfg.Nodes
	if n < 1 {
		t.Fatalf("testenv: NATSCluster needs at least one node, got %d", n)
	}
	ports, err := freePorts(3 * n) // n client ports, n route ports, n leafnode ports
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	routes := make([]*url.URL, n)
	for i := range n {
		routes[i] = &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", ports[n+i])}
	}
	name, prefix := cfg.Name, cfg.Name+"-"
	if name == "" {
		name, prefix = "orderflow-test", ""
	}
	c := &ClusterEnv{
		nodes: make([]*server.Server, n),
		opts:  make([]*server.Options, n),
		log:   serverLog(t, "nats cluster "+name),
	}
	for i := range n {
		c.opts[i] = &server.Options{
			ServerName:      fmt.Sprintf("%sn%d", prefix, i),
			Host:            "127.0.0.1",
			Port:            ports[i],
			JetStream:       true,
			JetStreamDomain: cfg.Domain,
			StoreDir:        t.TempDir(),
			NoSigs:          true,
			Cluster: server.ClusterOpts{
				Name: name,
				Host: "127.0.0.1",
				Port: ports[n+i],
			},
			Routes: routes, // a node skips the route to itself
		}
		if cfg.LeafListen {
			c.opts[i].LeafNode.Host, c.opts[i].LeafNode.Port = "127.0.0.1", ports[2*n+i]
			c.LeafAddrs = append(c.LeafAddrs, fmt.Sprintf("127.0.0.1:%d", ports[2*n+i]))
		}
		if cfg.Configure != nil {
			if err := cfg.Configure(i, c.opts[i]); err != nil {
				t.Fatalf("testenv: node %d: %v", i, err)
			}
		}
		c.URLs = append(c.URLs, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	// After the t.TempDir calls: cleanups run last-in first-out, and the nodes
	// must be down before their store dirs are removed.
	t.Cleanup(c.shutdown)
	for i := range n {
		c.StartNode(t, i)
	}
	c.WaitMetaLeader(t)

	c.Conn, err = nats.Connect(strings.Join(c.URLs, ","),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("testenv: connect to nats cluster: %v", err)
	}
	c.JS, err = jetstream.New(c.Conn)
	if err != nil {
		t.Fatalf("testenv: jetstream: %v", err)
	}
	return c
}

// NodeIndex returns the index of the node named name (as in stream cluster info,
// e.g. StreamInfo.Cluster.Leader), or -1.
func (c *ClusterEnv) NodeIndex(name string) int {
	for i, o := range c.opts {
		if o.ServerName == name {
			return i
		}
	}
	return -1
}

// StopNode shuts node i down gracefully and waits until it is down. It does not
// wait for a new leader: failover tests measure or wait for that themselves.
func (c *ClusterEnv) StopNode(i int) {
	if s := c.nodes[i]; s != nil {
		s.Shutdown()
		s.WaitForShutdown()
		c.nodes[i] = nil
	}
}

// StartNode starts node i (again) with its store and ports, and waits until it
// accepts clients.
func (c *ClusterEnv) StartNode(t testing.TB, i int) {
	t.Helper()
	if c.nodes[i] != nil {
		t.Fatalf("testenv: node %d is already running", i)
	}
	// Options are copied: nats-server fills in defaults on the struct it gets.
	opts := *c.opts[i]
	s, err := server.NewServer(&opts)
	if err != nil {
		t.Fatalf("testenv: node %d: %v", i, err)
	}
	s.SetLoggerV2(embedded.NewLogger(c.log.With("node", c.opts[i].ServerName)), false, false, false)
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatalf("testenv: node %d not ready for connections after 10s (port taken? see the log below)", i)
	}
	c.nodes[i] = s
}

// WaitMetaLeader waits until the running nodes agree on a JetStream meta leader,
// which is when streams can be created or moved.
func (c *ClusterEnv) WaitMetaLeader(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(clusterReadyTimeout)
	for {
		leaders, current, running := 0, 0, 0
		for _, s := range c.nodes {
			if s == nil {
				continue
			}
			running++
			if s.JetStreamIsLeader() {
				leaders++
			}
			if s.JetStreamIsCurrent() {
				current++
			}
		}
		if leaders == 1 && current == running {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: no JetStream meta leader after %s (%d leaders, %d of %d nodes current)",
				clusterReadyTimeout, leaders, current, running)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *ClusterEnv) shutdown() {
	if c.Conn != nil {
		c.Conn.Close()
	}
	for i := range c.nodes {
		c.StopNode(i)
	}
}
