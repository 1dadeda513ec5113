// Package deploy_test checks what deploy/ ships against the binary it deploys: the
// image's build command produces the binary these tests run; the Helm chart, the
// compose file and the Dockerfile use only flags and variables that binary knows;
// every dashboard and alert expression queries series a running `serve` exports, in
// a real Prometheus; and serve's behaviour past its capacity and at its WAL limit.
package deploy_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderflow/orderflow/internal/testsupport/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// deployDir is this directory; repoRoot its parent.
func deployDir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Dir(file)
}

func repoRoot(t testing.TB) string { return filepath.Dir(deployDir(t)) }

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// buildLine is the Dockerfile's `RUN ... go build ... -o /out/orderflow ./cmd/orderflow`.
var buildLine = regexp.MustCompile(`(?m)^RUN (.*go build .*)-o /out/orderflow (\./cmd/orderflow)\s*$`)

// orderflowBinary builds the binary exactly as deploy/Dockerfile does (its RUN line,
// with only the output path changed), once per test binary.
func orderflowBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		df, err := os.ReadFile(filepath.Join(deployDir(t), "Dockerfile"))
		if err != nil {
			binErr = err
			return
		}
		m := buildLine.FindSubmatch(df)
		if m == nil {
			binErr = errNoBuildLine
			return
		}
		dir, err := os.MkdirTemp("", "orderflow-deploy-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "orderflow")
		cmd := exec.Command("sh", "-c", string(m[1])+"-o "+binPath+" "+string(m[2]))
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = &buildError{err: err, out: string(out)}
		}
	})
	if binErr != nil {
		t.Fatalf("build orderflow as deploy/Dockerfile does: %v", binErr)
	}
	return binPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

var errNoBuildLine = &buildError{err: os.ErrNotExist, out: "deploy/Dockerfile has no `RUN ... go build ... -o /out/orderflow ./cmd/orderflow` line"}

// helpFlags runs `orderflow <args> --help` and returns the long flag names it lists
// (the command's own and the global ones).
func helpFlags(t testing.TB, args ...string) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, orderflowBinary(t), append(args, "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("orderflow %s --help: %v\n%s", strings.Join(args, " "), err, out)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllSubmatch(out, -1) {
		flags[string(m[1])] = true
	}
	if len(flags) == 0 || !bytes.Contains(out, []byte("Usage:")) {
		t.Fatalf("orderflow %s --help lists no flags:\n%s", strings.Join(args, " "), out)
	}
	return flags
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
