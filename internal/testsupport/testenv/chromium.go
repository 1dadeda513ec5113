package testenv

import (
	"errors"
	"os/exec"
	"testing"
)

// errNoChromium is what a missing browser fails tests with: the fix, not a skip.
const errNoChromium = "chromium not found: run `apt-get install -y chromium` (Debian's package) or `go tool task test`, which installs it"

// Chromium returns the path of Debian's chromium, for browser tests that drive it
// headless. The test fails (never skips) when it is not installed.
func Chromium(t testing.TB) string {
	t.Helper()
	p, err := findChromium(exec.LookPath)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return p
}

func findChromium(lookPath func(string) (string, error)) (string, error) {
	for _, name := range []string{"chromium", "/usr/bin/chromium", "chromium-browser"} {
		if p, err := lookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New(errNoChromium)
}
