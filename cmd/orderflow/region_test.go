package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"

	"github.com/orderflow/orderflow/internal/adapters/regions"
	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/app/config"
)

// TestRegionFlagsFromConfig: the region maps of --config (peer, peer-creds) reach
// the region settings as their flags would.
func TestRegionFlagsFromConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	yaml := "region: a\npeer: {b: \"10.0.0.2:7422\"}\npeer-creds: {b: /etc/orderflow/a-to-b.creds}\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var cfg app.ServeConfig
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	registerRegionFlags(fs, &cfg)
	if err := config.Apply(fs, file, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	r := cfg.Region
	if r.Name != "a" || len(r.Peers) != 1 || r.Peers[0].Addr != "10.0.0.2:7422" || r.PeerCreds["b"] != "/etc/orderflow/a-to-b.creds" {
		t.Fatalf("region settings %+v", r)
	}
	if err := fs.Set("peer-creds", "b"); err == nil {
		t.Error("--peer-creds b (no file) was accepted")
	}
}

// TestRegionPromotionTextGolden: promote-milestones' text line names the old home
// and the copy lag each in its place (they were swapped: "%!d(string=a)").
func TestRegionPromotionTextGolden(t *testing.T) {
	got := promotionText(regions.Promotion{Region: "b", OldHome: "a", Milestones: 1234, CopyLag: 7, Epoch: 1})
	golden(t, "region-promote.golden", got+"\n")
}
