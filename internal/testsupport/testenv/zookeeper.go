package testenv

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// zookeeperReadyTimeout bounds a start: the JVM and an empty data dir take a
// few seconds.
const zookeeperReadyTimeout = 60 * time.Second

// zookeeperJar is Debian's zookeeper package's server jar; its manifest lists the
// jars it needs, so it is the whole class path.
const zookeeperJar = "/usr/share/java/zookeeper.jar"

// errNoZooKeeper is the message a missing ZooKeeper fails tests with.
const errNoZooKeeper = "zookeeper not found (%s): run `apt-get install -y zookeeper` or `go tool task soak`"

// ZooKeeperEnv is a private standalone ZooKeeper server process owned by the test.
type ZooKeeperEnv struct {
	// Addr is host:port of the client port.
	Addr string
	dir  string
}

// ZooKeeper starts a standalone ZooKeeper (Debian's package, run with java
// directly, not as the system service) on a free loopback port with its data in
// t.TempDir(), and kills it when the test ends. The test fails if java or the
// package is missing.
func ZooKeeper(t testing.TB) *ZooKeeperEnv {
	t.Helper()
	java, err := exec.LookPath("java")
	if err != nil {
		t.Fatalf("testenv: "+errNoZooKeeper, "no java")
	}
	if _, err := os.Stat(zookeeperJar); err != nil {
		t.Fatalf("testenv: "+errNoZooKeeper, err)
	}
	ports, err := freePorts(1)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	z := &ZooKeeperEnv{Addr: fmt.Sprintf("127.0.0.1:%d", ports[0]), dir: t.TempDir()}
	cfg := filepath.Join(z.dir, "zoo.cfg")
	conf := fmt.Sprintf("tickTime=500\ndataDir=%s/data\nclientPort=%d\nclientPortAddress=127.0.0.1\n"+
		"maxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\n", z.dir, ports[0])
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	out, err := os.Create(filepath.Join(z.dir, "zookeeper.log"))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer out.Close()
	cmd := exec.Command(java, "-Xmx256m", "-cp", zookeeperJar, "org.apache.zookeeper.server.ZooKeeperServerMain", cfg)
	cmd.Dir, cmd.Stdout, cmd.Stderr = z.dir, out, out
	cmd.SysProcAttr = childProcAttr()
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start zookeeper: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	for {
		err := z.serving()
		if err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("testenv: zookeeper exited during start (%s): %v\n%s", cmd.ProcessState, err, z.logTail())
		default:
		}
		if time.Since(began) > zookeeperReadyTimeout {
			t.Fatalf("testenv: zookeeper not ready after %s: %v\n%s", zookeeperReadyTimeout, err, z.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("testenv: zookeeper ready at %s in %s", z.Addr, time.Since(began).Round(time.Millisecond))
	return z
}

// serving asks the server whether it serves sessions. ruok is not enough: the
// port answers it while the server still loads, and closes session handshakes
// then, which 18.16 does not survive (a later ON CLUSTER query crashes it).
func (z *ZooKeeperEnv) serving() error {
	c, err := net.DialTimeout("tcp", z.Addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("srvr")); err != nil {
		return err
	}
	out, _ := io.ReadAll(c)
	if !strings.Contains(string(out), "Mode: standalone") {
		return errors.New("zookeeper answered " + fmt.Sprintf("%q", out) + " to srvr")
	}
	return nil
}

func (z *ZooKeeperEnv) logTail() string {
	data, _ := os.ReadFile(filepath.Join(z.dir, "zookeeper.log"))
	const max = 4 << 10
	if len(data) > max {
		data = data[len(data)-max:]
	}
	return "--- zookeeper.log (end) ---\n" + string(data)
}
