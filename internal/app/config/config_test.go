package config_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"

	"github.com/orderflow/orderflow/internal/app/config"
)

func flags() (*pflag.FlagSet, *string, *int, *string) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	dir := fs.String("data-dir", "default", "")
	parts := fs.Int("partitions", 8, "")
	listen := fs.String("http-listen", "127.0.0.1:8080", "")
	return fs, dir, parts, listen
}

func TestPrecedenceFlagThenEnvThenFileThenDefault(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("data-dir: from-file\npartitions: 3\nhttp-listen: file:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, dir, parts, listen := flags()
	if err := fs.Parse([]string{"--data-dir", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ORDERFLOW_DATA_DIR": "from-env", "ORDERFLOW_PARTITIONS": "5"}
	if err := config.Apply(fs, file, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if *dir != "from-flag" || *parts != 5 || *listen != "file:1" {
		t.Fatalf("got data-dir=%s partitions=%d http-listen=%s", *dir, *parts, *listen)
	}
}

func TestUnknownFileKeyAndBadEnvAreErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("partitons: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs, _, _, _ := flags()
	if err := config.Apply(fs, file, func(string) string { return "" }); err == nil {
		t.Fatal("a misspelt key was accepted")
	}
	fs, _, _, _ = flags()
	if err := config.Apply(fs, "", func(k string) string {
		if k == "ORDERFLOW_PARTITIONS" {
			return "many"
		}
		return ""
	}); err == nil {
		t.Fatal("a non-numeric ORDERFLOW_PARTITIONS was accepted")
	}
}

func TestEnvName(t *testing.T) {
	if got := config.EnvName("nats-listen"); got != "ORDERFLOW_NATS_LISTEN" {
		t.Fatalf("got %s", got)
	}
}
