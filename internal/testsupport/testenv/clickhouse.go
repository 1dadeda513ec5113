package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

const (
	// clickhouseReadyTimeout bounds a start. 18.16 is ready in about a second on
	// an empty data dir; a restart replays its parts, still well under this.
	clickhouseReadyTimeout = 60 * time.Second
	// clickhouseStopTimeout bounds a graceful stop before SIGKILL.
	clickhouseStopTimeout = 30 * time.Second
)

// errNoClickHouse is the message a missing binary fails tests with: the fix, not a skip.
const errNoClickHouse = "clickhouse-server not found: run `apt-get install clickhouse-server` or `go tool task test`"

// ClickHouseEnv is a private clickhouse-server process owned by the test
// (or, from SharedClickHouse, by the test binary).
type ClickHouseEnv struct {
	// Addr is host:port of the native protocol, the one orderflow uses.
	// (clickhouse-go's HTTP protocol does not work against 18.16.)
	Addr string
	// HTTPAddr is host:port of the HTTP interface, for curl while debugging.
	HTTPAddr string
	// Conn is a native-protocol connection pool to database "default". After a
	// Stop/Start it serves new queries again once the server is back.
	Conn driver.Conn
	// StartupTime is how long the last start took until the server answered a ping.
	StartupTime time.Duration

	dir    string   // config, logs and data; survives Stop/Start
	argv   []string // command that runs the server
	proc   *exec.Cmd
	exited chan struct{} // closed when proc has exited
	shared bool
}

// ClickHouse starts a private clickhouse-server on free loopback ports with its
// data in t.TempDir(), and stops it when the test ends. The test fails (never
// skips) if the binary is not installed. Prefer SharedClickHouse unless the test
// stops the server.
func ClickHouse(t testing.TB) *ClickHouseEnv {
	t.Helper()
	e, err := newClickHouse(t.TempDir())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(e.close)
	t.Logf("testenv: clickhouse-server ready at %s in %s", e.Addr, e.StartupTime.Round(time.Millisecond))
	return e
}

func newClickHouse(dir string) (*ClickHouseEnv, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	return newClickHouseOn(dir, ports[0], ports[1], "")
}

// newClickHouseOn starts a server on the given native and HTTP ports. extra, when
// not empty, is the body of a config.d file (elements of <yandex>) merged into
// the config: what a cluster member adds.
func newClickHouseOn(dir string, tcpPort, httpPort int, extra string) (*ClickHouseEnv, error) {
	argv, err := findClickHouse(exec.LookPath)
	if err != nil {
		return nil, err
	}
	e := &ClickHouseEnv{
		Addr:     fmt.Sprintf("127.0.0.1:%d", tcpPort),
		HTTPAddr: fmt.Sprintf("127.0.0.1:%d", httpPort),
		dir:      dir,
	}
	cfg := filepath.Join(dir, "config.xml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, configXML, dir, tcpPort, httpPort), 0o644); err != nil {
		return nil, err
	}
	if extra != "" {
		if err := os.MkdirAll(filepath.Join(dir, "config.d"), 0o755); err != nil {
			return nil, err
		}
		doc := "<?xml version=\"1.0\"?>\n<yandex>\n" + extra + "</yandex>\n"
		if err := os.WriteFile(filepath.Join(dir, "config.d", "cluster.xml"), []byte(doc), 0o644); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "users.xml"), []byte(usersXML), 0o644); err != nil {
		return nil, err
	}
	e.argv = append(argv, "--config-file="+cfg)
	e.Conn, err = clickhouse.Open(&clickhouse.Options{
		Protocol:    clickhouse.Native,
		Addr:        []string{e.Addr},
		Auth:        clickhouse.Auth{Database: "default", Username: "default"},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	if err := e.start(); err != nil {
		e.Conn.Close()
		return nil, err
	}
	return e, nil
}

// findClickHouse returns the command that runs the server: Debian's
// clickhouse-server (in /usr/sbin, often not in a non-root PATH), or the
// single `clickhouse` binary of modern releases with its "server" subcommand.
func findClickHouse(lookPath func(string) (string, error)) ([]string, error) {
	for _, name := range []string{"clickhouse-server", "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"} {
		if p, err := lookPath(name); err == nil {
			return []string{p}, nil
		}
	}
	for _, name := range []string{"clickhouse", "/usr/bin/clickhouse", "/usr/local/bin/clickhouse"} {
		if p, err := lookPath(name); err == nil {
			return []string{p, "server"}, nil
		}
	}
	return nil, errors.New(errNoClickHouse)
}

// start runs the server process and waits until it answers a native ping.
func (e *ClickHouseEnv) start() error {
	began := time.Now()
	out, err := os.OpenFile(filepath.Join(e.dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close() // the child keeps its own descriptor
	cmd := exec.Command(e.argv[0], e.argv[1:]...)
	cmd.Dir = e.dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", e.argv[0], err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	e.proc, e.exited = cmd, exited
	fail := func(format string, args ...any) error {
		e.kill()
		e.proc = nil
		return fmt.Errorf(format+"\n%s", append(args, e.logTail())...)
	}

	deadline := time.Now().Add(clickhouseReadyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = e.Conn.Ping(ctx)
		cancel()
		if err == nil {
			e.StartupTime = time.Since(began)
			return nil
		}
		select {
		case <-exited:
			return fail("clickhouse-server exited during start (%s): %w", cmd.ProcessState, err)
		default:
		}
		if time.Now().After(deadline) {
			return fail("clickhouse-server not ready after %s: %w", clickhouseReadyTimeout, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Stop shuts the server down gracefully (SIGTERM, SIGKILL after 30s) and keeps
// its data and ports for Start: an outage as clients see it.
func (e *ClickHouseEnv) Stop(t testing.TB) {
	t.Helper()
	e.mustOwn(t, "Stop")
	if e.proc == nil {
		t.Fatal("testenv: clickhouse-server is not running")
	}
	_ = e.proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(clickhouseStopTimeout):
		e.kill()
	}
	e.proc = nil
}

// Start starts a stopped server again on the same data dir and ports.
func (e *ClickHouseEnv) Start(t testing.TB) {
	t.Helper()
	e.mustOwn(t, "Start")
	if e.proc != nil {
		t.Fatal("testenv: clickhouse-server is already running")
	}
	if err := e.start(); err != nil {
		t.Fatalf("testenv: restart: %v", err)
	}
}

func (e *ClickHouseEnv) mustOwn(t testing.TB, op string) {
	t.Helper()
	if e.shared {
		t.Fatalf("testenv: %s on the shared ClickHouse would break the other tests: start a private one with testenv.ClickHouse(t)", op)
	}
}

// DSN is the clickhouse-go DSN (native protocol) for database db.
func (e *ClickHouseEnv) DSN(db string) string {
	return fmt.Sprintf("clickhouse://default@%s/%s?dial_timeout=5s", e.Addr, db)
}

// CreateDatabase creates a database only this test uses and drops it when the
// test ends, so tests sharing a server stay independent and can run in parallel.
// Tables are named db.table, or connect with DSN(db).
func (e *ClickHouseEnv) CreateDatabase(t testing.TB) string {
	t.Helper()
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	name := "t_" + identifier(t.Name(), 40) + "_" + hex.EncodeToString(suffix[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.Conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
		}
	})
	return name
}

// identifier turns s into a ClickHouse identifier fragment of at most n bytes.
func identifier(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, s)
	return s[:min(len(s), n)]
}

// close kills the server (its data is thrown away, so a graceful stop would
// only cost time) and closes Conn.
func (e *ClickHouseEnv) close() {
	e.Conn.Close()
	if e.proc != nil {
		e.kill()
		e.proc = nil
	}
}

func (e *ClickHouseEnv) kill() {
	_ = e.proc.Process.Kill()
	<-e.exited
}

// logTail is the end of the server's stdout and error log, for start failures.
func (e *ClickHouseEnv) logTail() string {
	var b strings.Builder
	for _, name := range []string{"stdout.log", "server.err.log"} {
		data, err := os.ReadFile(filepath.Join(e.dir, name))
		if err != nil || len(data) == 0 {
			continue
		}
		const max = 4 << 10
		if len(data) > max {
			data = data[len(data)-max:]
		}
		fmt.Fprintf(&b, "--- %s (end) ---\n%s\n", filepath.Join(e.dir, name), data)
	}
	if b.Len() == 0 {
		return "(the server wrote no log)"
	}
	return b.String()
}

// configXML is the smallest server config that 18.16 (Debian's package, what CI
// installs) and modern releases both accept. %[1]s is the server's directory,
// %[2]d the native port, %[3]d the HTTP port.
//
//   - Root element <yandex>: 18.16 knows no other; modern releases accept it too.
//   - Only the ports listed here are opened: no interserver, MySQL or PostgreSQL
//     port is configured, so none is listened on.
//   - path and tmp_path are what 18.16 needs; user_files_path and
//     format_schema_path keep the rest out of /var/lib/clickhouse.
//   - Caches are small (defaults are 5 GiB mark cache, 8 GiB uncompressed cache);
//     max_server_memory_usage caps modern servers and is ignored by 18.16,
//     which does not have it (the per-query limit is in users.xml).
//   - No query_log or other system log tables: they only cost CPU and disk here.
//   - timezone UTC: DateTime values read back the same on any machine.
const configXML = `<?xml version="1.0"?>
<yandex>
  <logger>
    <level>information</level>
    <log>%[1]s/server.log</log>
    <errorlog>%[1]s/server.err.log</errorlog>
    <size>100M</size>
    <count>1</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>%[2]d</tcp_port>
  <http_port>%[3]d</http_port>
  <path>%[1]s/data/</path>
  <tmp_path>%[1]s/data/tmp/</tmp_path>
  <user_files_path>%[1]s/data/user_files/</user_files_path>
  <format_schema_path>%[1]s/data/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_server_memory_usage>2147483648</max_server_memory_usage>
  <max_concurrent_queries>64</max_concurrent_queries>
</yandex>
`

// usersXML: user "default" without password, loopback only. Profile settings,
// unlike server keys, are checked by every release: keep to ones all know.
// poll_interval is how often an idle native connection checks for shutdown
// (default 10s): with clickhouse-go's pool holding idle connections, a graceful
// stop of 18.16 otherwise takes 10s instead of under one.
const usersXML = `<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>1073741824</max_memory_usage>
      <poll_interval>1</poll_interval>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default></default></quotas>
</yandex>
`
