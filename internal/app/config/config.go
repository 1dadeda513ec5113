// Package config resolves every command-line flag from, in order of precedence:
// the command line, the environment (ORDERFLOW_<FLAG>), an optional YAML file, and
// the flag's default. One mechanism for all commands, so every flag is configurable
// the same three ways.
package config

import (
	"errors"
	"fmt"
	"os"
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
			if err := fs.Set(f.Name, fmt.Sprint(v)); err != nil {
				errs = append(errs, fmt.Errorf("config file key %s=%v: %w", f.Name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}
