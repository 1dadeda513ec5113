package bench

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/collectors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// link is the regions' leafnode link through a real TCP proxy (Shopify's toxiproxy,
// in this process), so the bench can add latency to it the way a WAN does.
type link struct {
	proxy *toxiproxy.Proxy
}

// startLink starts a proxy on a free loopback port in front of upstream (host:port).
func startLink(name, upstream string) (*link, error) {
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	srv.Metrics.ProxyMetrics = collectors.NewProxyMetricCollectors()
	p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("start proxy %s: %w", name, err)
	}
	return &link{proxy: p}, nil
}

// addr is where the soliciting region connects.
func (l *link) addr() string { return l.proxy.Listen }

func (l *link) stop() { l.proxy.Stop() }

// latency adds ms milliseconds to every byte, each way, until clear; connections
// already open are slowed too.
func (l *link) latency(ms int) error {
	for _, dir := range []string{"downstream", "upstream"} {
		body := fmt.Sprintf(`{"name":"latency_%s","type":"latency","stream":%q,"toxicity":1,"attributes":{"latency":%d}}`, dir, dir, ms)
		if _, err := l.proxy.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
			return fmt.Errorf("add latency to %s: %w", l.proxy.Name, err)
		}
	}
	return nil
}

// clear removes the latency.
func (l *link) clear() { l.proxy.Toxics.ResetToxics(context.Background()) }

// freeAddrs returns n free loopback addresses for servers started later.
func freeAddrs(n int) ([]string, error) {
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		out = append(out, l.Addr().String())
	}
	return out, nil
}
