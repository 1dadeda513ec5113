// Package config resolves every command-line flag from, in order of precedence:
// the command line, the environment (ORDERFLOW_<FLAG>), an optional YAML file, and
// the flag's default. One mechanism for all commands, so every flag is configurable
// the same three ways.
package config

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/spf13/pflag"
)

// EnvPrefix is prepended to a flag's name to form its environment variable.
const EnvPrefix = "ORDERFLOW_"

// EnvName is the environment variable that sets flag name: data-dir -> ORDERFLOW_DATA_DIR.
func EnvName(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Apply fills every flag of fs not given on the command line from the environment,
// then from the YAML file at path (when path is not empty). File keys are flag names;
// keys that match no flag are an error so typos do not pass silently.
func Apply(fs *pflag.FlagSet, path string, getenv func(string) string) error {
	var file map[string]any
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read config file: %w", err)
		}
		if err := yaml.Unmarshal(b, &file); err != nil {
			return fmt.Errorf("parse config file %s: %w", path, err)
		}
		var unknown []string
		for k := range file {
			if fs.Lookup(k) == nil {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			return fmt.Errorf("config file %s: unknown keys %v", path, unknown)
		}
	}
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		if v := getenv(EnvName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err))
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			for _, s := range fileValues(v) {
				if err := fs.Set(f.Name, s); err != nil {
					errs = append(errs, fmt.Errorf("config file key %s=%v: %w", f.Name, v, err))
				}
			}
		}
	})
	return errors.Join(errs...)
}

// fileValues turns a YAML value into what a repeatable flag is given once per
// occurrence: a list item by item, a map as sorted key=value pairs (a region map
// `peer: {eu: "10.0.0.7:7422"}`), anything else as one value.
func fileValues(v any) []string {
	switch v := v.(type) {
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			out = append(out, fmt.Sprint(x))
		}
		return out
	case map[string]any:
		out := make([]string, 0, len(v))
		for k, x := range v {
			out = append(out, k+"="+fmt.Sprint(x))
		}
		sort.Strings(out)
		return out
	}
	return []string{fmt.Sprint(v)}
}
