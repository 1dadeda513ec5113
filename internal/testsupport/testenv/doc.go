// Package testenv starts real servers for integration tests: an in-process NATS
// JetStream server or cluster (optionally with a JetStream domain and leafnode
// links, as two regions of clusters), a private clickhouse-server process, and a
// ClickHouse cluster (one shard of replicas over a private ZooKeeper, Debian's
// zookeeper package run with java) for the cluster tests go tool task soak runs.
//
// House rule (STYLE.md): tests use real servers and never pass by skipping, so a
// missing clickhouse-server binary fails the test with the command that installs it.
//
// Everything a helper starts is stopped through t.Cleanup; the ClickHouse child
// process is also killed by the kernel if the test binary dies (Pdeathsig).
//
// ClickHouse takes about a second to start, so a package with many ClickHouse
// tests shares one server:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
//
//	func TestSink(t *testing.T) {
//		ch := testenv.SharedClickHouse(t)
//		db := ch.CreateDatabase(t) // own database: tests stay independent
//		...
//	}
//
// Tests that stop the server (outage tests) start their own with ClickHouse(t).
package testenv
