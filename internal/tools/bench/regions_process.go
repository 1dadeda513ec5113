package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// regionProcess is a region run as its own `orderflow serve` process, so that it can
// die the way a host does: SIGKILL, nothing flushed or closed.
type regionProcess struct {
	binary string
	args   []string
	http   string // its --http-listen
	log    string // its output, appended to across restarts
	cmd    *exec.Cmd
	done   chan struct{}
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
	err = waitUntil(ctx, time.Minute, "region process ready", func(context.Context) error {
		select {
		case <-done:
			return fmt.Errorf("exited (%s)", cmd.ProcessState)
		default:
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
