package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// command is how a deployment runs orderflow: arguments after the binary, and the
// environment it sets.
type command struct {
	args []string
	env  map[string]string
}

// subcommand is the command path of args (the words before the first flag).
func (c command) subcommand() []string {
	var sub []string
	for _, a := range c.args {
		if strings.HasPrefix(a, "-") {
			break
		}
		sub = append(sub, a)
	}
	return sub
}

// flagsIn returns the long flags args names (--name or --name=value).
func flagsIn(args []string) []string {
	var out []string
	for _, a := range args {
		if name, ok := strings.CutPrefix(a, "--"); ok {
			name, _, _ = strings.Cut(name, "=")
			out = append(out, name)
		}
	}
	return out
}

// envFlag maps ORDERFLOW_WAL_MAX_BYTES to wal-max-bytes (config.EnvName's inverse:
// flag names have no underscores).
func envFlag(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "ORDERFLOW_")
	if !ok {
		return "", false
	}
	return strings.ToLower(strings.ReplaceAll(rest, "_", "-")), true
}

// Variables orderflow reads that are not flags.
var nonFlagEnv = map[string]bool{
	"ORDERFLOW_FAILPOINT": true, // fault injection in tests (handlers.FailpointsFromEnv)
}

// checkCommand fails t for every flag or ORDERFLOW_* variable of c that the
// subcommand's --help (known: flag names) does not list.
func checkCommand(t *testing.T, where string, c command, known map[string]bool) {
	t.Helper()
	for _, f := range flagsIn(c.args) {
		if !known[f] {
			t.Errorf("%s: orderflow %s has no flag --%s", where, strings.Join(c.subcommand(), " "), f)
		}
	}
	for name := range c.env {
		f, ok := envFlag(name)
		if !ok || nonFlagEnv[name] {
			continue
		}
		if !known[f] {
			t.Errorf("%s: %s sets --%s, which orderflow %s does not have", where, name, f, strings.Join(c.subcommand(), " "))
		}
	}
}

// composeCommands returns each orderflow service of the compose file.
func composeCommands(t testing.TB) map[string]command {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir(t), "compose", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	out := map[string]command{}
	for name, s := range f.Services {
		if strings.HasPrefix(s.Image, "orderflow:") {
			out["compose "+name] = command{args: s.Command, env: s.Environment}
		}
	}
	if len(out) < 3 {
		t.Fatalf("compose.yaml runs %d orderflow services, want the two instances and the helpers", len(out))
	}
	return out
}

// dockerfileCommands returns the image's default command (entrypoint + CMD), its
// health check and its ENV.
func dockerfileCommands(t testing.TB) map[string]command {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	env := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^ENV (\S+)=(\S+)`).FindAllStringSubmatch(text, -1) {
		env[m[1]] = m[2]
	}
	jsonArgs := func(re string) []string {
		m := regexp.MustCompile(re).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("Dockerfile has no %s", re)
		}
		var args []string
		if err := json.Unmarshal([]byte(m[1]), &args); err != nil {
			t.Fatalf("Dockerfile %s is not an exec-form JSON array: %v", re, err)
		}
		return args
	}
	entry := jsonArgs(`(?m)^ENTRYPOINT (\[.*\])`)
	if fmt.Sprint(entry) != "[/orderflow]" {
		t.Errorf("ENTRYPOINT %v, want [/orderflow]", entry)
	}
	health := jsonArgs(`(?m)^HEALTHCHECK .*CMD (\[.*\])`)
	if len(health) == 0 || health[0] != "/orderflow" {
		t.Errorf("HEALTHCHECK must run the binary (the image has no shell): %v", health)
	}
	return map[string]command{
		"Dockerfile CMD":         {args: jsonArgs(`(?m)^CMD (\[.*\])`), env: env},
		"Dockerfile HEALTHCHECK": {args: health[1:]},
	}
}

// The client commands the compose file's cli service is for (deploy/compose/README.md).
var cliCommands = [][]string{{"publish"}, {"status"}, {"query", "orders"}, {"token", "issue"}, {"simulate"}}

func TestDeploymentsUseOnlyFlagsTheBinaryKnows(t *testing.T) {
	helps := map[string]map[string]bool{}
	help := func(sub []string) map[string]bool {
		k := strings.Join(sub, " ")
		if helps[k] == nil {
			helps[k] = helpFlags(t, sub...)
		}
		return helps[k]
	}
	all := map[string]command{}
	for _, src := range []map[string]command{helmCommands(t), composeCommands(t), dockerfileCommands(t)} {
		for k, v := range src {
			all[k] = v
		}
	}
	for _, where := range sortedKeys(all) {
		c := all[where]
		sub := c.subcommand()
		if len(sub) == 0 {
			// A service that names no command (compose's cli) runs the client
			// commands: each variable must be a flag of at least one of them.
			known := map[string]bool{}
			for _, cc := range cliCommands {
				for f := range help(cc) {
					known[f] = true
				}
			}
			checkCommand(t, where, c, known)
			continue
		}
		checkCommand(t, where, c, help(sub))
		if sub[0] == "serve" && c.env["ORDERFLOW_HTTP_LISTEN"] == "" && !contains(flagsIn(c.args), "http-listen") {
			t.Errorf("%s: serve without --http-listen listens on 127.0.0.1 only, unreachable in a container", where)
		}
	}
	// The Dockerfile's instance and the orchestrated ones listen beyond loopback,
	// which serve allows only with auth.
	for _, where := range []string{"Dockerfile CMD", "compose orderflow-1", "compose orderflow-2", "helm default", "helm production"} {
		c := all[where]
		if !contains(flagsIn(c.args), "auth") && c.env["ORDERFLOW_AUTH"] != "true" {
			t.Errorf("%s listens beyond loopback without --auth: serve would refuse to start", where)
		}
		tls := contains(flagsIn(c.args), "tls-cert") || c.env["ORDERFLOW_TLS_CERT"] != ""
		plain := contains(flagsIn(c.args), "http-plaintext") || c.env["ORDERFLOW_HTTP_PLAINTEXT"] == "true"
		if !tls && !plain {
			t.Errorf("%s serves HTTP beyond loopback with neither TLS nor --http-plaintext: serve would refuse to start", where)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
