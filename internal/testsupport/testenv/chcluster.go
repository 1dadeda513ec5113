package testenv

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// ClickHouseClusterName is the remote_servers cluster ClickHouseCluster defines.
const ClickHouseClusterName = "orderflow"

// ClickHouseClusterEnv is one shard of n replicas: private clickhouse-server
// processes sharing a private ZooKeeper, each with the cluster in its
// remote_servers, {shard}/{replica} macros and distributed_ddl on, so ON CLUSTER
// DDL and replicated tables work as in production.
type ClickHouseClusterEnv struct {
	// Name is the cluster's name in remote_servers.
	Name string
	// Replicas are the servers, in replica order (macro replica r1, r2, ...).
	Replicas []*ClickHouseEnv
	// ZooKeeper is the coordination server.
	ZooKeeper *ZooKeeperEnv
}

// ClickHouseCluster starts ZooKeeper and n ClickHouse replicas of one shard, and
// stops them when the test ends. It fails the test when a server cannot start.
func ClickHouseCluster(t testing.TB, n int) *ClickHouseClusterEnv {
	t.Helper()
	if n < 1 {
		t.Fatalf("testenv: ClickHouseCluster needs at least one replica, got %d", n)
	}
	c := &ClickHouseClusterEnv{Name: ClickHouseClusterName, ZooKeeper: ZooKeeper(t)}
	ports, err := freePorts(3 * n) // native, HTTP and interserver (replication fetches) per replica
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	zkHost, zkPort, _ := strings.Cut(c.ZooKeeper.Addr, ":")
	var shard strings.Builder
	for i := range n {
		fmt.Fprintf(&shard, "        <replica><host>127.0.0.1</host><port>%d</port></replica>\n", ports[3*i])
	}
	for i := range n {
		// internal_replication: a Distributed insert goes to one replica and the
		// replicated table copies it (orderflow inserts into the local tables).
		extra := fmt.Sprintf(`  <interserver_http_port>%d</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <remote_servers>
    <%[2]s>
      <shard>
        <internal_replication>true</internal_replication>
%[3]s      </shard>
    </%[2]s>
  </remote_servers>
  <zookeeper><node><host>%[4]s</host><port>%[5]s</port></node></zookeeper>
  <macros><shard>01</shard><replica>r%[6]d</replica></macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
`, ports[3*i+2], c.Name, shard.String(), zkHost, zkPort, i+1)
		e, err := newClickHouseOn(t.TempDir(), ports[3*i], ports[3*i+1], extra)
		if err != nil {
			t.Fatalf("testenv: replica r%d: %v", i+1, err)
		}
		t.Cleanup(e.close)
		t.Logf("testenv: clickhouse-server replica r%d ready at %s in %s", i+1, e.Addr, e.StartupTime)
		c.Replicas = append(c.Replicas, e)
	}
	for i, e := range c.Replicas {
		// A replica that lost its first ZooKeeper session runs on without one.
		ctx, cancel := context.WithTimeout(context.Background(), clickhouseReadyTimeout)
		var n uint64
		err := e.Conn.QueryRow(ctx, "SELECT count() FROM system.zookeeper WHERE path = '/'").Scan(&n)
		cancel()
		if err != nil {
			t.Fatalf("testenv: replica r%d has no ZooKeeper session: %v\n%s", i+1, err, c.Logs())
		}
	}
	return c
}

// Logs is the end of every replica's logs, for a failure message.
func (c *ClickHouseClusterEnv) Logs() string {
	var b strings.Builder
	for i, r := range c.Replicas {
		fmt.Fprintf(&b, "=== replica r%d ===\n%s\n", i+1, r.logTail())
	}
	return b.String()
}
