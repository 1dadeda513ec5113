package testenv

import (
	"os/exec"
	"testing"
)

func TestMissingChromiumSaysHowToInstall(t *testing.T) {
	_, err := findChromium(func(string) (string, error) { return "", exec.ErrNotFound })
	if err == nil || err.Error() != errNoChromium {
		t.Fatalf("err = %v, want %q", err, errNoChromium)
	}
}
