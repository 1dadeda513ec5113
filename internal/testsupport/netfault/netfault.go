// Package netfault puts a real TCP proxy (Shopify's toxiproxy, in-process) on a
// network link so tests can cut it, heal it and slow it down, the way a WAN between
// regions fails.
package netfault

import (
	"testing"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/collectors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Link is a proxied TCP link: clients dial Addr, the proxy forwards to the upstream.
type Link struct {
	t     testing.TB
	proxy *toxiproxy.Proxy
}

// NewLink starts a proxy on a free loopback port in front of upstream (host:port);
// it stops with the test.
func NewLink(t testing.TB, name, upstream string) *Link {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	srv.Metrics.ProxyMetrics = collectors.NewProxyMetricCollectors()
	p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("start proxy %s: %v", name, err)
	}
	t.Cleanup(p.Stop)
	return &Link{t: t, proxy: p}
}

// Addr is where clients connect.
func (l *Link) Addr() string { return l.proxy.Listen }

// Cut closes every connection through the link and refuses new ones until Heal.
func (l *Link) Cut() { l.proxy.Stop() }

// Heal accepts connections again, on the same address.
func (l *Link) Heal() {
	l.t.Helper()
	if err := l.proxy.Start(); err != nil {
		l.t.Fatalf("heal link %s: %v", l.proxy.Name, err)
	}
}
