package testenv

import (
	"os/exec"
	"testing"
)

// errNoChromium is what a missing browser fails tests with: the fix, not a skip.
const errNoChromium = "chromium not found: run `apt-get install -y chromium` (Debian's package) or `go tool task test`, which installs it"

// Chromium returns the path of Debian's chromium, for browser tests that drive it
// headless. The test fails (never skips) when it is not installed.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "/usr/bin/chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("testenv: %s", errNoChromium)
	return ""
}
