//go:build clickhouse_cluster

package main

import (
	"context"
	"strings"
	"testing"

	"github.com/orderflow/orderflow/internal/testsupport/testenv"
)

// TestMigrateOnCluster runs `orderflow migrate --clickhouse-cluster` against one
// shard of two ClickHouse replicas: the second replica gets the replicated local
// tables and the Distributed ones under the public names, and a second run
// through the other replica applies nothing. (The sink's run on a cluster is
// sinks/clickhouse's TestClusterMatchesSingleServer.) go tool task soak runs it.
func TestMigrateOnCluster(t *testing.T) {
	cluster := testenv.ClickHouseCluster(t, 2)
	out, err := orderflow(t, "migrate", "--clickhouse-dsn", cluster.Replicas[0].DSN("analytics"), "--clickhouse-cluster", cluster.Name)
	if err != nil || !strings.Contains(out, "applied 0001_create_tables") {
		t.Fatalf("migrate: %v\n%s\n%s", err, out, cluster.Logs())
	}
	rows, err := cluster.Replicas[1].Conn.Query(context.Background(),
		"SELECT name, engine FROM system.tables WHERE database = 'analytics' ORDER BY name")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var name, engine string
		if err := rows.Scan(&name, &engine); err != nil {
			t.Fatal(err)
		}
		got = append(got, name+" "+engine)
	}
	rows.Close()
	want := "order_events Distributed,order_events_local ReplicatedReplacingMergeTree," +
		"orderflow_schema_migrations ReplicatedReplacingMergeTree," +
		"orders Distributed,orders_by_customer Distributed,orders_by_customer_local ReplicatedReplacingMergeTree," +
		"orders_by_dasher Distributed,orders_by_dasher_local ReplicatedReplacingMergeTree," +
		"orders_by_restaurant Distributed,orders_by_restaurant_local ReplicatedReplacingMergeTree," +
		"orders_local ReplicatedReplacingMergeTree"
	if strings.Join(got, ",") != want {
		t.Errorf("tables on replica r2:\n got %s\nwant %s", strings.Join(got, ","), want)
	}
	if err := cluster.Replicas[1].Conn.Exec(context.Background(), "SYSTEM SYNC REPLICA analytics.orderflow_schema_migrations"); err != nil {
		t.Fatal(err)
	}
	// Through the other replica, with the cluster from the environment as serve takes it.
	cmd := orderflowCmd(t, "migrate", "--clickhouse-dsn", cluster.Replicas[1].DSN("analytics"))
	cmd.Env = append(cmd.Environ(), "ORDERFLOW_CLICKHOUSE_CLUSTER="+cluster.Name)
	b, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(b), "schema is up to date") {
		t.Fatalf("second migrate: %v\n%s", err, b)
	}
}
