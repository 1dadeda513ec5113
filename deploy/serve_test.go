package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// instance is an `orderflow serve` process of the binary under test.
type instance struct {
	HTTP    string // host:port
	NATSURL string
	DataDir string
	log     string
	cmd     *exec.Cmd
	done    chan error
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServe runs `orderflow serve` with an embedded server in a temp data dir plus
// args, and waits until /readyz answers 200. The process gets SIGTERM at cleanup.
func startServe(t *testing.T, args ...string) *instance {
	t.Helper()
	in := &instance{HTTP: freeAddr(t), DataDir: t.TempDir(), done: make(chan error, 1)}
	natsAddr := freeAddr(t)
	in.NATSURL = "nats://" + natsAddr
	in.log = filepath.Join(t.TempDir(), "serve.log")
	logf, err := os.Create(in.log)
	if err != nil {
		t.Fatal(err)
	}
	in.cmd = exec.Command(orderflowBinary(t), append([]string{"serve", "--data-dir", in.DataDir,
		"--nats-listen", natsAddr, "--http-listen", in.HTTP, "--log-level", "warn"}, args...)...)
	in.cmd.Stdout, in.cmd.Stderr = logf, logf
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { in.done <- in.cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		_ = in.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-in.done:
		case <-time.After(30 * time.Second):
			_ = in.cmd.Process.Kill()
			<-in.done
		}
		if t.Failed() {
			t.Logf("serve log tail:\n%s", in.logTail())
		}
	})
	deadline := time.Now().Add(3 * time.Minute)
	for {
		code, _ := in.get(t, "/readyz")
		if code == http.StatusOK {
			return in
		}
		select {
		case err := <-in.done:
			t.Fatalf("serve exited before it was ready: %v\n%s", err, in.logTail())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not ready within 3m:\n%s", in.logTail())
		}
	}
}

func (in *instance) logTail() string {
	b, _ := os.ReadFile(in.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// get does GET path on the instance and returns the status and body (0 on a
// connection error).
func (in *instance) get(t testing.TB, path string) (int, []byte) {
	return in.do(t, http.MethodGet, path, "", nil)
}

func (in *instance) do(t testing.TB, method, path, token string, body []byte) (int, []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+in.HTTP+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// metrics scrapes /metrics and returns each sample's value by its full series text
// (name{labels}).
func (in *instance) metrics(t testing.TB) map[string]float64 {
	t.Helper()
	code, b := in.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d", code)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// sum adds the samples of every series of metric name.
func sum(m map[string]float64, name string) float64 {
	s := 0.0
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// run runs the binary with args and returns its standard output.
func run(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, orderflowBinary(t), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("orderflow %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func jsonBody(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}
