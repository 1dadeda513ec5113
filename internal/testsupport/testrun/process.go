package testrun

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Build compiles the orderflow command (pkg: its directory, e.g. "." from
// cmd/orderflow or "../../cmd/orderflow") into dir and returns the binary's path.
func Build(dir, pkg string) (string, error) {
	bin := filepath.Join(dir, "orderflow")
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("build orderflow: %v\n%s", err, out)
	}
	return bin, nil
}

// Process is one orderflow process.
type Process struct {
	Cmd *exec.Cmd
	// HTTP is the address serve reported (Serve only).
	HTTP string
	// Log is the file holding its output, printed if the test fails.
	Log string
	// Done is closed when the process has exited.
	Done chan struct{}
	addr chan string
	// killed says the test ended it; an exit without it was the process's own.
	killed bool
}

// Launch starts `bin args...` with extra environment variables, logging its output
// to a file whose last lines (without the NATS server's) are printed if the test
// fails. The process dies with the test (SIGKILL at cleanup, and if the test
// process dies).
func Launch(t testing.TB, bin string, env []string, args ...string) *Process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "orderflow.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = t.TempDir() // defaults such as ./orderflow-data land there, not in the source tree
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logFile
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Process{Cmd: cmd, Log: logPath, Done: make(chan struct{}), addr: make(chan string, 1)}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			var own []string
			for _, l := range strings.Split(string(b), "\n") {
				if !strings.Contains(l, "component=nats-server") {
					own = append(own, l)
				}
			}
			t.Logf("log of %v (pid %d, last lines):\n%s", args[:min(len(args), 6)], cmd.Process.Pid, strings.Join(own[max(0, len(own)-25):], "\n"))
		}
	})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			if strings.Contains(line, "orderflow serving") {
				for _, f := range strings.Fields(line) {
					if v, ok := strings.CutPrefix(f, "http="); ok {
						p.addr <- v
					}
				}
			}
		}
		_ = cmd.Wait()
		logFile.Close()
		close(p.Done)
	}()
	return p
}

// Serve runs `bin serve args...` (HTTP on a free loopback port, info logs) and waits
// until it serves, or exits (a failpoint can fire that early: callers that arm
// failpoints check Exited), or 60 s pass (a failure).
func Serve(t testing.TB, bin string, env []string, args ...string) *Process {
	t.Helper()
	p := Launch(t, bin, env, append([]string{"serve", "--http-listen", "127.0.0.1:0", "--log-level", "info"}, args...)...)
	select {
	case p.HTTP = <-p.addr:
	case <-p.Done:
	case <-time.After(60 * time.Second):
		b, _ := os.ReadFile(p.Log)
		t.Fatalf("orderflow serve did not start:\n%s", b)
	}
	return p
}

// Exited reports whether the process ended on its own.
func (p *Process) Exited() bool {
	select {
	case <-p.Done:
		return !p.killed
	default:
		return false
	}
}

// Stop ends the process with SIGTERM, as an orchestrator would, and fails the test
// unless it exits 0 within 30 s.
func (p *Process) Stop(t testing.TB) {
	t.Helper()
	p.killed = true
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done:
		if code := p.Cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("serve exited with %v after SIGTERM", p.Cmd.ProcessState)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not exit within 30s of SIGTERM")
	}
}

// Kill ends the process with SIGKILL: no shutdown code runs.
func (p *Process) Kill() {
	select {
	case <-p.Done:
		return
	default:
	}
	p.killed = true
	_ = p.Cmd.Process.Kill()
	<-p.Done
}
