package clickhouse

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"
)

// BenchmarkSink runs Bench once against an in-process JetStream and the shared
// ClickHouse and reports the rates. Run it with
//
//	go test ./sinks/clickhouse -run '^$' -bench Sink -benchtime 1x
//
// ORDERFLOW_BENCH_EVENTS (default 100000) sizes the backlog and
// ORDERFLOW_BENCH_LIVE_RATE (default 5000) the live-lag phase (0 skips it).
func BenchmarkSink(b *testing.B) {
	events, live := 100_000, 5000.0
	if v, err := strconv.Atoi(os.Getenv("ORDERFLOW_BENCH_EVENTS")); err == nil {
		events = v
	}
	if v, err := strconv.ParseFloat(os.Getenv("ORDERFLOW_BENCH_LIVE_RATE"), 64); err == nil {
		live = v
	}
	env := natsWAL(b)
	conn, _ := sharedDB(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for range b.N {
		res, err := Bench(ctx, env.JS, conn, BenchConfig{Events: events, Seed: 1, LiveRate: live, LiveDuration: 10 * time.Second, Logger: testLogger(b)})
		if err != nil {
			b.Fatal(err)
		}
		b.Log(res)
		b.ReportMetric(res.JetStream, "js-msgs/s")
		b.ReportMetric(res.ClickHouse, "ch-rows/s")
		b.ReportMetric(res.Sink, "sink-events/s")
		b.ReportMetric(res.SinkRows, "sink-rows/s")
		b.ReportMetric(res.Ratio, "ratio")
		if res.LiveRate > 0 {
			b.ReportMetric(res.LagP99.Seconds(), "lag-p99-s")
		}
	}
}
