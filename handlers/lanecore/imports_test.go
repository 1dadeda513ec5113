package lanecore

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoIO: the core depends on nothing that does I/O, directly or through its
// imports: no NATS, no Watermill, nothing of internal/.
func TestNoIO(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "nats-io") || strings.Contains(dep, "watermill") || strings.Contains(dep, "/internal/") && strings.HasPrefix(dep, "github.com/orderflow/") {
			t.Errorf("lanecore depends on %s", dep)
		}
	}
}
