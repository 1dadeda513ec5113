package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/orderflow/orderflow/internal/app"
)

// registerLimits adds serve's WAL limit flags (README, "Overload and limits").
func registerLimits(f *pflag.FlagSet, cfg *app.ServeConfig) {
	f.Var((*byteSize)(&cfg.Topology.WALMaxBytes), "wal-max-bytes", "largest size of the WAL (ORDER_EVENTS), e.g. 50GiB; at the limit producers are refused (nothing stored is dropped); 0 = no limit")
	f.DurationVar(&cfg.Topology.WALMaxAge, "wal-max-age", 0, "remove WAL events older than this; only with --no-archive (the archive purges what it archived); 0 = keep")
}

// checkLimits refuses a WAL age limit that would remove events the archive has
// not taken yet: the archive only takes orders terminal for --archive-after.
func checkLimits(cfg app.ServeConfig) error {
	if cfg.Topology.WALMaxAge > 0 && cfg.Archive.Location != "" {
		return fmt.Errorf("--wal-max-age %s with the archive on would delete WAL events before they are archived: "+
			"use --no-archive with --wal-max-age, or bound the WAL with --wal-max-bytes", cfg.Topology.WALMaxAge)
	}
	return nil
}

// byteSize is a flag of bytes written as 1048576, 512MiB, 50GiB or 2TB.
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Type() string { return "bytes" }

func (b *byteSize) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"TIB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

func parseBytes(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || (mult > 1 && n > (1<<62)/mult) {
		return 0, fmt.Errorf("%q is not a size in bytes (e.g. 1048576, 512MiB, 50GiB)", s)
	}
	return n * mult, nil
}
