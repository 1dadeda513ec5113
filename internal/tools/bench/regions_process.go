package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// regionProcess is a region run as its own `orderflow serve` process, so that it can
// die the way a host does: SIGKILL, nothing flushed or closed.
type regionProcess struct {
	binary string
	args   []string
	http   string // its --http-listen
	nats   string // its client URL
	// jetStreamAfter is how long after the last start its JetStream first answered.
	jetStreamAfter time.Duration
	log            string // its output, appended to across restarts
	cmd            *exec.Cmd
	done           chan struct{}
}

// start runs the process and returns once its /readyz answers 200.
func (p *regionProcess) start(ctx context.Context) error {
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(p.binary, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A bench that dies must not leave a region running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.binary, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	done := p.done
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	client := &http.Client{Timeout: time.Second}
	started := time.Now()
	p.jetStreamAfter = 0
	err = waitUntil(ctx, time.Minute, "region process ready", func(ctx context.Context) error {
		select {
		case <-done:
			return fmt.Errorf("exited (%s)", cmd.ProcessState)
		default:
		}
		if p.jetStreamAfter == 0 && jetStreamAnswers(ctx, p.nats) {
			p.jetStreamAfter = time.Since(started)
		}
		resp, err := client.Get("http://" + p.http + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		p.kill()
		return fmt.Errorf("%s %s: %w; its log ends:\n%s", p.binary, strings.Join(p.args, " "), err, tail(p.log, 20))
	}
	return nil
}

// jetStreamAnswers reports whether the JetStream of the server at url answers.
func jetStreamAnswers(ctx context.Context, url string) bool {
	nc, err := nats.Connect(url, nats.Timeout(200*time.Millisecond), nats.NoReconnect())
	if err != nil {
		return false
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err == nil
}

// cpu is the CPU time the process has used (Linux: /proc/PID/stat).
func (p *regionProcess) cpu() time.Duration {
	if p.cmd == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces, so skip to its ")"):
	// utime and stime are the 12th and 13th, in clock ticks of 1/100 s.
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// stop asks the process to shut down (SIGTERM, as a service manager does) and waits
// for it, killing it after a minute.
func (p *regionProcess) stop() error {
	if p.cmd == nil {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		p.kill()
		return errors.New("region process did not stop within a minute of SIGTERM")
	}
	state := p.cmd.ProcessState
	p.cmd = nil
	if !state.Success() {
		return fmt.Errorf("region process stopped with %s; its log ends:\n%s", state, tail(p.log, 20))
	}
	return nil
}

// kill ends the process with SIGKILL and waits for it to be gone.
func (p *regionProcess) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// tail is the last n lines of the file at path.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
