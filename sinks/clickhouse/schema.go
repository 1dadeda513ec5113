package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Table names (public contract: analysts query them).
const (
	TableEvents       = "order_events"
	TableOrders       = "orders"
	TableByCustomer   = "orders_by_customer"
	TableByRestaurant = "orders_by_restaurant"
	TableByDasher     = "orders_by_dasher"
	// TableMigrations records the applied schema migrations.
	TableMigrations = "orderflow_schema_migrations"
)

// ClickHouse error codes the sink reacts to.
const (
	codeUnknownDatabase = 81
)

// eventColumns is order_events in insert order: one row per WAL message.
var eventColumns = []column{
	{"wal_seq", "UInt64", "JetStream sequence of the event in ORDER_EVENTS: unique, the dedup key"},
	{"stored_at", "DateTime", "when JetStream stored the event (UTC, seconds)"},
	{"order_id", "String", "order id token of the subject (as sent, even when the event was rejected)"},
	{"source", "String", "source token of the subject"},
	{"event_id", "String", "empty when rejected before decoding"},
	{"source_seq", "UInt64", ""},
	{"status", "String", "status the event claims, empty for none"},
	{"eta", "DateTime", "eta the event carries, 1970-01-01 00:00:00 for none"},
	{"occurred_at", "DateTime", "producer clock, informative; 1970-01-01 00:00:00 when rejected"},
	{"actor_id", "String", ""},
	{"customer_id", "String", "as the event carries it"},
	{"restaurant_id", "String", "as the event carries it"},
	{"dasher_id", "String", "as the event carries it"},
	{"event_reason", "String", "free-text reason the event carries (agent overrides)"},
	{"decision", "String", "applied, duplicate, stale, ignored, rejected (as the HTTP timeline)"},
	{"reason", "String", "decision reason code, or the DLQ reason of a rejected event"},
	{"detail", "String", "DLQ detail of an event rejected before resolution"},
	{"changed", "UInt8", "1 when the event changed the answer of its order"},
	{"order_status", "String", "status of the order after the event"},
	{"predicted", "UInt8", "1 when that status is an estimator prediction"},
	{"transition", "String", "authoritative status the order entered with this event, empty for none"},
	{"milestones", "Array(String)", "milestones (picked_up, delivered, cancelled) first reached with this event"},
}

// orderColumns is orders in insert order: one row per order per batch that touched it,
// versioned by the order's wal_seq. The index tables have the same columns plus active.
var orderColumns = []column{
	{"order_id", "String", ""},
	{"version", "UInt64", "wal_seq of the last event folded in: the newest row wins"},
	{"created_at", "DateTime", "when JetStream stored the first event of the order (UTC, seconds); never changes"},
	{"updated_at", "DateTime", "occurred_at of the event that last changed the answer (producer clock)"},
	{"last_event_at", "DateTime", "when JetStream stored the newest event of the order"},
	{"events", "UInt32", "events folded in (rejected-before-resolution ones excluded)"},
	{"status", "String", ""},
	{"status_source", "String", ""},
	{"predicted", "UInt8", ""},
	{"eta", "DateTime", "1970-01-01 00:00:00 for none"},
	{"customer_id", "String", ""},
	{"restaurant_id", "String", ""},
	{"dasher_id", "String", ""},
	{"picked_up_at", "DateTime", "occurred_at of the event that first reached the milestone; 1970-01-01 00:00:00 until then"},
	{"delivered_at", "DateTime", "as picked_up_at"},
	{"cancelled_at", "DateTime", "as picked_up_at"},
}

// activeColumn ends the index tables' columns: 0 marks an entry whose order moved to
// another entity id (a tombstone that replaces the earlier, active row).
var activeColumn = column{"active", "UInt8", "0: the order no longer belongs to this entity"}

type column struct {
	name, typ, comment string
}

func columnNames(cols []column) string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}

// entityTables maps an entity kind to its index table and key column.
var entityTables = map[string]struct{ table, key string }{
	"customer":   {TableByCustomer, "customer_id"},
	"restaurant": {TableByRestaurant, "restaurant_id"},
	"dasher":     {TableByDasher, "dasher_id"},
}

// Features is what the server supports beyond ClickHouse 18.16, the oldest release
// orderflow runs on (Debian's package, used in CI).
type Features struct {
	// Version is the server's version as it reports it, e.g. "18.16.1".
	Version string
	Major   int
	Minor   int
	// DedupToken: insert_deduplication_token and the non-replicated deduplication
	// window exist (22.2+). Inserts then carry a token per batch and table, so a
	// retried batch is dropped by the server instead of waiting for a merge.
	DedupToken bool
}

// FeaturesOf parses a version string such as "18.16.1" or "24.8.4.13".
func FeaturesOf(version string) (Features, error) {
	f := Features{Version: version}
	parts := strings.Split(version, ".")
	if len(parts) < 2 {
		return f, fmt.Errorf("unrecognised ClickHouse version %q", version)
	}
	var err1, err2 error
	f.Major, err1 = strconv.Atoi(parts[0])
	f.Minor, err2 = strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return f, fmt.Errorf("unrecognised ClickHouse version %q", version)
	}
	f.DedupToken = f.atLeast(22, 2)
	return f, nil
}

func (f Features) atLeast(major, minor int) bool {
	return f.Major > major || f.Major == major && f.Minor >= minor
}

// DetectFeatures asks the server for its version.
func DetectFeatures(ctx context.Context, conn driver.Conn) (Features, error) {
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return Features{}, fmt.Errorf("ClickHouse version: %w", err)
	}
	return FeaturesOf(v)
}

// Layout says where the tables live. The zero Layout is one server: the tables of
// Migrations under their public names. With Cluster set, every table is created ON
// CLUSTER as a Replicated engine named <name>_local, with a Distributed table under
// the public name over it, so analysts and the query path read the public names on
// any node and the sink inserts into the local tables of the node it writes to.
type Layout struct {
	// Cluster is a cluster of the servers' remote_servers, empty for one server.
	Cluster string
	// Database holds the tables. Migrate sets it to the connection's database; the
	// cluster DDL names it explicitly, as ON CLUSTER DDL on 18.16 resolves an
	// unqualified table on the other nodes in their default database.
	Database string
}

// LocalSuffix ends the name of a cluster's replicated table under its Distributed one.
const LocalSuffix = "_local"

// clusterName is what a cluster name may be: it is spliced into DDL unquoted.
var clusterName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate reports a cluster name that cannot be used.
func (l Layout) Validate() error {
	if l.Cluster != "" && !clusterName.MatchString(l.Cluster) {
		return fmt.Errorf("ClickHouse cluster %q: use letters, digits and underscores", l.Cluster)
	}
	return nil
}

// InsertTable is the table the sink writes name's rows to: name itself on one
// server, the replicated local table on a cluster. Inserting there rather than
// into the Distributed table keeps "acked only once ClickHouse confirmed": an
// insert into a Distributed table is queued on the node and sent to the shard
// later, while a replicated insert is confirmed once the node stored it (its
// replicas fetch it through ZooKeeper). It works for one shard of any number of
// replicas, which is what the migrations create the layout for.
func (l Layout) InsertTable(name string) string {
	if l.Cluster == "" {
		return name
	}
	return name + LocalSuffix
}

// onCluster is the ON CLUSTER clause, empty on one server.
func (l Layout) onCluster() string {
	if l.Cluster == "" {
		return ""
	}
	return " ON CLUSTER " + l.Cluster
}

// qualified is db.name on a cluster and name alone on one server (unchanged DDL).
func (l Layout) qualified(name string) string {
	if l.Cluster == "" {
		return name
	}
	return quoteIdent(l.Database) + "." + name
}

// engine renders a MergeTree-family engine: family(args) on one server, the
// Replicated variant with its ZooKeeper path per shard, database and table on a
// cluster. The old-style leading parameters are what 18.16 and current releases
// both take.
func (l Layout) engine(table, family, args string) string {
	if l.Cluster == "" {
		if args == "" {
			return family
		}
		return family + "(" + args + ")"
	}
	params := quoteString("/clickhouse/tables/{shard}/"+l.Database+"."+table) + ", '{replica}'"
	if args != "" {
		params += ", " + args
	}
	return "Replicated" + family + "(" + params + ")"
}

// Migration is one versioned schema change. Statements must be idempotent (IF NOT
// EXISTS, settings that can be set twice): instances may race to apply one.
type Migration struct {
	Version int
	Name    string
	// Applies reports whether the server can take it; one it cannot is left
	// unapplied and retried by every later Migrate (e.g. after a server upgrade).
	Applies func(Features) bool
	// Statements renders the DDL for the server and layout.
	Statements func(Features, Layout) []string
}

// ID is the migration's name as Migrate reports it, e.g. "0001_create_tables".
func (m Migration) ID() string { return fmt.Sprintf("%04d_%s", m.Version, m.Name) }

// dedupWindow is how many recent insert tokens a table remembers (22.2+).
const dedupWindow = 1000

// tableSpec is one data table of migration 0001.
type tableSpec struct {
	name         string
	cols         []column
	family, args string
	partition    string
	orderBy      string
}

// Migrations lists every schema migration in order.
func Migrations() []Migration {
	return []Migration{
		{
			Version: 1, Name: "create_tables",
			Applies: func(Features) bool { return true },
			Statements: func(_ Features, l Layout) []string {
				var out []string
				for _, t := range []tableSpec{
					{TableEvents, eventColumns, "ReplacingMergeTree", "", "toYYYYMM(stored_at)", "stored_at, wal_seq"},
					{TableOrders, orderColumns, "ReplacingMergeTree", "version", "toYYYYMM(created_at)", "order_id"},
					{TableByCustomer, indexColumns(), "ReplacingMergeTree", "version", "toYYYYMM(created_at)", "customer_id, created_at, order_id"},
					{TableByRestaurant, indexColumns(), "ReplacingMergeTree", "version", "toYYYYMM(created_at)", "restaurant_id, created_at, order_id"},
					{TableByDasher, indexColumns(), "ReplacingMergeTree", "version", "toYYYYMM(created_at)", "dasher_id, created_at, order_id"},
				} {
					out = append(out, l.createTable(t)...)
				}
				return out
			},
		},
		{
			Version: 2, Name: "insert_dedup_window",
			Applies: func(f Features) bool { return f.DedupToken },
			Statements: func(_ Features, l Layout) []string {
				// Replicated tables keep their own window of block hashes and tokens.
				setting := "non_replicated_deduplication_window"
				if l.Cluster != "" {
					setting = "replicated_deduplication_window"
				}
				var out []string
				for _, t := range dataTables {
					out = append(out, fmt.Sprintf("ALTER TABLE %s%s MODIFY SETTING %s = %d",
						l.qualified(l.InsertTable(t)), l.onCluster(), setting, dedupWindow))
				}
				return out
			},
		},
	}
}

var dataTables = []string{TableEvents, TableOrders, TableByCustomer, TableByRestaurant, TableByDasher}

func indexColumns() []column {
	return append(append([]column(nil), orderColumns...), activeColumn)
}

// createTable renders DDL that both 18.16 and current releases accept: no
// DateTime64, no LowCardinality, no Nullable (argMax over it is patchy on 18.16).
// On a cluster it is two statements: the replicated local table, then the
// Distributed table under the public name.
func (l Layout) createTable(t tableSpec) []string {
	local := l.InsertTable(t.name)
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE IF NOT EXISTS %s%s\n(\n", l.qualified(local), l.onCluster())
	for i, c := range t.cols {
		sep := ","
		if i == len(t.cols)-1 {
			sep = ""
		}
		// 18.16 rejects a replicated table with column comments ("Table structure
		// in ZooKeeper is too different from local table structure", even on the
		// first replica), so a cluster's tables go without them.
		if c.comment != "" && l.Cluster == "" {
			fmt.Fprintf(&b, "    %s %s COMMENT %s%s\n", c.name, c.typ, quoteString(c.comment), sep)
		} else {
			fmt.Fprintf(&b, "    %s %s%s\n", c.name, c.typ, sep)
		}
	}
	fmt.Fprintf(&b, ")\nENGINE = %s\nPARTITION BY %s\nORDER BY (%s)", l.engine(local, t.family, t.args), t.partition, t.orderBy)
	if l.Cluster == "" {
		return []string{b.String()}
	}
	return []string{b.String(), l.distributed(t.name)}
}

// distributed renders the Distributed table name over name's local table. The
// database is a literal: currentDatabase() there is evaluated in the reading
// session, which need not be the tables' database.
func (l Layout) distributed(name string) string {
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s%s AS %s\nENGINE = Distributed(%s, %s, %s)",
		l.qualified(name), l.onCluster(), l.qualified(l.InsertTable(name)),
		l.Cluster, quoteString(l.Database), quoteString(l.InsertTable(name)))
}

// Migrate applies, in order, every migration the server can take and has not
// recorded, and returns the ids of those it applied. It is idempotent and safe to
// run from several instances at once. With layout.Cluster set it creates the
// connection's database and every table on each node of the cluster (ON CLUSTER,
// which needs the servers' zookeeper and distributed_ddl configuration); the
// migration records are replicated too, so a migration runs once per cluster.
func Migrate(ctx context.Context, conn driver.Conn, layout Layout) ([]string, error) {
	if err := layout.Validate(); err != nil {
		return nil, err
	}
	f, err := DetectFeatures(ctx, conn)
	if err != nil {
		return nil, err
	}
	if layout.Cluster != "" {
		if err := conn.QueryRow(ctx, "SELECT currentDatabase()").Scan(&layout.Database); err != nil {
			return nil, fmt.Errorf("ClickHouse database: %w", err)
		}
		if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(layout.Database)+layout.onCluster()); err != nil {
			return nil, fmt.Errorf("create database %s on cluster %s: %w", layout.Database, layout.Cluster, err)
		}
	}
	err = conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+layout.qualified(TableMigrations)+layout.onCluster()+
		" (version UInt32, name String, applied_at DateTime) ENGINE = "+layout.engine(TableMigrations, "ReplacingMergeTree", "")+" ORDER BY version")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", TableMigrations, err)
	}
	done, err := appliedMigrations(ctx, conn)
	if err != nil {
		return nil, err
	}
	var applied []string
	for _, m := range Migrations() {
		if done[m.Version] || !m.Applies(f) {
			continue
		}
		for _, stmt := range m.Statements(f, layout) {
			if err := conn.Exec(ctx, stmt); err != nil {
				return applied, fmt.Errorf("migration %s: %w", m.ID(), err)
			}
		}
		// INSERT ... SELECT: 18.16 waits for a data block after INSERT ... VALUES
		// sent through the native protocol's query path.
		err := conn.Exec(ctx, fmt.Sprintf("INSERT INTO %s (version, name, applied_at) SELECT %d, %s, now()",
			TableMigrations, m.Version, quoteString(m.Name)))
		if err != nil {
			return applied, fmt.Errorf("record migration %s: %w", m.ID(), err)
		}
		applied = append(applied, m.ID())
	}
	return applied, nil
}

func appliedMigrations(ctx context.Context, conn driver.Conn) (map[int]bool, error) {
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM "+TableMigrations)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", TableMigrations, err)
	}
	defer rows.Close()
	done := map[int]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		done[int(v)] = true
	}
	return done, rows.Err()
}

// Open returns a native-protocol connection pool for dsn
// (clickhouse://user:password@host:9000/database). Like sql.Open it does not need
// the server to be up: the sink retries until it is. When the server is up and
// says the DSN's database does not exist, Open creates it.
func Open(ctx context.Context, dsn string) (driver.Conn, error) {
	opts, err := parseDSN(dsn)
	if err != nil {
		return nil, err
	}
	conn, err := ch.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open ClickHouse: %w", err)
	}
	if err := conn.Ping(ctx); isCode(err, codeUnknownDatabase) {
		if err := ensureDatabase(ctx, opts); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

func parseDSN(dsn string) (*ch.Options, error) {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		return nil, fmt.Errorf("ClickHouse DSN %q: use the native protocol (clickhouse://host:9000/db): the HTTP protocol does not work against older servers", redact(dsn))
	}
	opts, err := ch.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("ClickHouse DSN %q: %w", redact(dsn), err)
	}
	if opts.Protocol != ch.Native {
		return nil, fmt.Errorf("ClickHouse DSN %q: use the native protocol (clickhouse://host:9000/db)", redact(dsn))
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	return opts, nil
}

// redact hides the password of a DSN in messages.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// ensureDatabase creates the DSN's database through a connection to "default".
func ensureDatabase(ctx context.Context, opts *ch.Options) error {
	db := opts.Auth.Database
	if db == "" || db == "default" {
		return nil
	}
	o := *opts
	o.Auth.Database = "default"
	conn, err := ch.Open(&o)
	if err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	defer conn.Close()
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(db)); err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	return nil
}

func quoteIdent(s string) string {
	return "`" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "`", "\\`") + "`"
}

func quoteString(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
}

func isCode(err error, code int32) bool {
	var ex *ch.Exception
	return errors.As(err, &ex) && ex.Code == code
}
