package deploy_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"text/template"

	"github.com/Masterminds/sprig/v3"
	"github.com/goccy/go-yaml"
)

// The chart is rendered here with text/template, sprig and the few functions Helm
// adds (include, required, toYaml, fromYaml, .Files.Get), the way Helm's engine
// does, rather than with Helm's Go SDK: its engine package pulls in client-go and
// the Kubernetes API machinery for `lookup`, several times this module's build, for
// templates that use none of it. The official NATS sub-chart cannot be fetched in
// a test (no network), so only orderflow's own templates render; the dependency
// itself is checked in Chart.yaml.

const releaseName = "of"

// chartFiles is .Files: reads relative to the chart directory.
type chartFiles struct{ dir string }

// Get returns a file of the chart, "" when missing, as Helm's does.
func (f chartFiles) Get(name string) string {
	b, err := os.ReadFile(filepath.Join(f.dir, filepath.FromSlash(name)))
	if err != nil {
		return ""
	}
	return string(b)
}

// renderChart renders every template of the chart at dir with its values.yaml
// merged with overlays (files or inline YAML documents), returning the manifests
// by template file name.
func renderChart(t testing.TB, dir string, overlays ...string) map[string]string {
	t.Helper()
	values := readYAMLMap(t, filepath.Join(dir, "values.yaml"))
	for _, o := range overlays {
		var ov map[string]any
		if strings.Contains(o, "\n") {
			if err := yaml.Unmarshal([]byte(o), &ov); err != nil {
				t.Fatalf("overlay: %v", err)
			}
		} else {
			ov = readYAMLMap(t, o)
		}
		values = mergeValues(values, ov)
	}
	meta := readYAMLMap(t, filepath.Join(dir, "Chart.yaml"))
	top := map[string]any{
		"Values": values,
		"Chart": map[string]any{
			"Name": meta["name"], "Version": meta["version"], "AppVersion": meta["appVersion"],
		},
		"Release":      map[string]any{"Name": releaseName, "Namespace": "orderflow", "Service": "Helm", "IsInstall": true},
		"Files":        chartFiles{dir: dir},
		"Capabilities": map[string]any{"KubeVersion": map[string]any{"Version": "v1.30.0"}},
	}

	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	tpl := template.New("chart")
	funcs["include"] = func(name string, data any) (string, error) {
		var b strings.Builder
		err := tpl.ExecuteTemplate(&b, name, data)
		return b.String(), err
	}
	funcs["required"] = func(msg string, v any) (any, error) {
		if v == nil || reflect.ValueOf(v).IsZero() {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["toYaml"] = func(v any) string {
		b, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(b), "\n")
	}
	funcs["fromYaml"] = func(s string) map[string]any {
		m := map[string]any{}
		if err := yaml.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	tpl.Funcs(funcs).Option("missingkey=zero")

	entries, err := os.ReadDir(filepath.Join(dir, "templates"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, "templates", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tpl.New(e.Name()).Parse(string(b)); err != nil {
			t.Fatalf("parse %s: %v", e.Name(), err)
		}
		if !strings.HasPrefix(e.Name(), "_") {
			names = append(names, e.Name())
		}
	}
	out := map[string]string{}
	for _, n := range names {
		var b strings.Builder
		if err := tpl.ExecuteTemplate(&b, n, top); err != nil {
			t.Fatalf("render %s: %v", n, err)
		}
		out[n] = strings.ReplaceAll(b.String(), "<no value>", "")
	}
	return out
}

func readYAMLMap(t testing.TB, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// mergeValues overlays b on a as Helm does: maps merge key by key, anything else replaces.
func mergeValues(a, b map[string]any) map[string]any {
	out := maps.Clone(a)
	for k, bv := range b {
		am, aok := out[k].(map[string]any)
		bm, bok := bv.(map[string]any)
		if aok && bok {
			out[k] = mergeValues(am, bm)
			continue
		}
		out[k] = bv
	}
	return out
}

// manifests parses rendered templates into Kubernetes objects.
func manifests(t testing.TB, rendered map[string]string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, name := range sortedKeys(rendered) {
		if strings.HasSuffix(name, ".txt") {
			continue
		}
		for _, doc := range strings.Split(rendered[name], "\n---") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var o map[string]any
			if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
				t.Fatalf("%s does not render to YAML: %v\n%s", name, err, doc)
			}
			if len(o) == 0 {
				continue
			}
			if o["apiVersion"] == nil || o["kind"] == nil {
				t.Fatalf("%s: object without apiVersion or kind:\n%s", name, doc)
			}
			objs = append(objs, o)
		}
	}
	return objs
}

func byKind(objs []map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, o := range objs {
		out[o["kind"].(string)] = o
	}
	return out
}

// dig walks nested maps and lists: dig(o, "spec", "template", "spec", "containers", 0).
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func chartDir(t testing.TB) string { return filepath.Join(deployDir(t), "helm", "orderflow") }

// The values cases the chart must render: defaults, the production overlay, and
// inline secrets (the chart creates the Secret).
func chartCases(t testing.TB) map[string][]string {
	dir := chartDir(t)
	return map[string][]string{
		"default":    nil,
		"production": {filepath.Join(dir, "values-production.yaml")},
		"secrets": {"secrets:\n  clickhouseDSN: clickhouse://u:p@ch:9000/orderflow\n  natsCreds: creds\n" +
			"  archiveAccessKeyID: id\n  archiveSecretAccessKey: key\nauth:\n  tokenKeySecret: of-token-key\n"},
	}
}

func TestHelmChartRenders(t *testing.T) {
	dir := chartDir(t)
	meta := readYAMLMap(t, filepath.Join(dir, "Chart.yaml"))
	deps, _ := meta["dependencies"].([]any)
	if len(deps) != 1 || dig(deps, 0, "name") != "nats" || !strings.Contains(fmt.Sprint(dig(deps, 0, "repository")), "nats-io") ||
		dig(deps, 0, "condition") != "nats.enabled" {
		t.Errorf("Chart.yaml must depend on the official NATS chart (condition nats.enabled), has %v", deps)
	}
	alerts, err := os.ReadFile(filepath.Join(deployDir(t), "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if copied, _ := os.ReadFile(filepath.Join(dir, "files", "alerts.yml")); string(copied) != string(alerts) {
		t.Errorf("deploy/helm/orderflow/files/alerts.yml differs from deploy/prometheus/alerts.yml: cp deploy/prometheus/alerts.yml deploy/helm/orderflow/files/")
	}

	for name, overlays := range chartCases(t) {
		t.Run(name, func(t *testing.T) {
			objs := manifests(t, renderChart(t, dir, overlays...))
			kinds := byKind(objs)
			for _, k := range []string{"Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"} {
				if kinds[k] == nil {
					t.Errorf("no %s rendered", k)
				}
			}
			dep := kinds["Deployment"]
			c := dig(dep, "spec", "template", "spec", "containers", 0)
			for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"} {
				if got := dig(c, probe, "httpGet", "path"); got != path {
					t.Errorf("%s path %v, want %s", probe, got, path)
				}
			}
			if dig(c, "resources", "requests", "cpu") == nil || dig(c, "resources", "limits", "memory") == nil {
				t.Errorf("container has no resource requests/limits: %v", dig(c, "resources"))
			}
			if dig(dep, "spec", "template", "spec", "securityContext", "runAsNonRoot") != true ||
				dig(c, "securityContext", "readOnlyRootFilesystem") != true {
				t.Error("pod must run as non-root with a read-only root filesystem")
			}
			if got := dig(kinds["ServiceMonitor"], "spec", "endpoints", 0, "path"); got != "/metrics" {
				t.Errorf("ServiceMonitor path %v", got)
			}
			var rules map[string]any
			if err := yaml.Unmarshal(alerts, &rules); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(dig(kinds["PrometheusRule"], "spec", "groups"), rules["groups"]) {
				t.Error("PrometheusRule groups differ from deploy/prometheus/alerts.yml")
			}
			env := containerEnv(c)
			switch name {
			case "default":
				if env["ORDERFLOW_NATS_URL"] != "nats://"+releaseName+"-nats:4222" {
					t.Errorf("default NATS URL %q is not the bundled chart's service", env["ORDERFLOW_NATS_URL"])
				}
				if kinds["Secret"] != nil {
					t.Error("a Secret rendered without secrets in the values")
				}
			case "production":
				if _, ok := env["ORDERFLOW_WAL_MAX_AGE"]; ok {
					t.Error("an empty config value must not become an environment variable")
				}
				if env["ORDERFLOW_ARCHIVE"] == "" || env["ORDERFLOW_CLICKHOUSE_DSN"] != "<secret>" {
					t.Errorf("production env: %v", env)
				}
			case "secrets":
				data := dig(kinds["Secret"], "data")
				for _, k := range []string{"clickhouse-dsn", "nats-creds", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
					if dig(data, k) == nil {
						t.Errorf("Secret lacks %s: %v", k, data)
					}
				}
				if env["ORDERFLOW_NATS_CREDS"] == "" {
					t.Error("nats creds not passed")
				}
			}
		})
	}
}

// containerEnv is a container's environment, "<secret>" for values from secrets.
func containerEnv(c any) map[string]string {
	env := map[string]string{}
	list, _ := dig(c, "env").([]any)
	for _, e := range list {
		name := fmt.Sprint(dig(e, "name"))
		if v := dig(e, "value"); v != nil {
			env[name] = fmt.Sprint(v)
		} else {
			env[name] = "<secret>"
		}
	}
	return env
}

// helmCommands returns, per values case, the container's args and environment.
func helmCommands(t testing.TB) map[string]command {
	out := map[string]command{}
	for name, overlays := range chartCases(t) {
		kinds := byKind(manifests(t, renderChart(t, chartDir(t), overlays...)))
		c := dig(kinds["Deployment"], "spec", "template", "spec", "containers", 0)
		var args []string
		for _, a := range dig(c, "args").([]any) {
			args = append(args, fmt.Sprint(a))
		}
		out["helm "+name] = command{args: args, env: containerEnv(c)}
	}
	return out
}
