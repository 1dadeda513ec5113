package bench

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// DispatchConfig configures the dispatch phase.
type DispatchConfig struct {
	// Updates is the number of position messages each ingest run sends; default 300k.
	Updates int
	// Dashers is how many dashers the index holds for the search run; default 100k.
	Dashers int
	// Searches and Assigns are how many of each the latency runs time; default 2000, 500.
	Searches, Assigns int
	Progress          io.Writer
	// Phase, if set, is called at the start and end of each phase ("raw",
	// "ingest", "index-only", "nearby", "assign"), e.g. to profile just one.
	Phase func(name string, start bool)
}

// DispatchResult is what the dispatch phase measured, in one run on one server.
type DispatchResult struct {
	RawPerSec    float64 `json:"raw_core_pubsub_per_sec"`
	IngestPerSec float64 `json:"ingest_per_sec"`
	Ratio        float64 `json:"ingest_ratio"`
	// The CPU figures are process CPU seconds (publisher, server and subscriber)
	// per million updates, in each run.
	RawCPUPerMillion       float64 `json:"raw_cpu_s_per_million"`
	IngestCPUPerMillion    float64 `json:"ingest_cpu_s_per_million"`
	IndexOnlyCPUPerMillion float64 `json:"index_only_cpu_s_per_million"`
	// IndexOnly is the same ingest with the store writes off: parse, validate and
	// index alone, to show what the KV dasher_locations writes cost.
	IndexOnlyPerSec float64 `json:"index_only_per_sec"`
	IndexOnlyRatio  float64 `json:"index_only_ratio"`
	// NearbyP50Ms and NearbyP99Ms time searches back to back: one goroutine that
	// never waits, which the scheduler preempts for other goroutines' turns (10 ms
	// slices) in the middle of a search when the cores are busy.
	NearbyP50Ms float64 `json:"nearby_p50_ms"`
	NearbyP99Ms float64 `json:"nearby_p99_ms"`
	// NearbyPacedP50Ms and NearbyPacedP99Ms time the same searches arriving one
	// per millisecond, as requests do.
	NearbyPacedP50Ms float64 `json:"nearby_paced_p50_ms"`
	NearbyPacedP99Ms float64 `json:"nearby_paced_p99_ms"`
	NearbyUnderRate  float64 `json:"nearby_background_updates_per_sec"`
	NearbyDashers    int     `json:"nearby_dashers"`
	AssignP50Ms      float64 `json:"assign_p50_ms"`
	AssignP99Ms      float64 `json:"assign_p99_ms"`
}

// Print writes the figures and the targets of DESIGN §8.4.
func (r DispatchResult) Print(w io.Writer) {
	fmt.Fprintf(w, "location ingest into the index: %.0f updates/s; raw core NATS pub+sub of the same messages: %.0f/s; ratio %.2f %s\n",
		r.IngestPerSec, r.RawPerSec, r.Ratio, target(r.Ratio >= 0.5, "goal >= 0.5"))
	fmt.Fprintf(w, "  the same without the store writes (every dasher's first position goes to KV dasher_locations): %.0f updates/s, ratio %.2f\n",
		r.IndexOnlyPerSec, r.IndexOnlyRatio)
	fmt.Fprintf(w, "  process CPU per million updates: raw %.2f s, without the store writes %.2f s, ingest %.2f s\n",
		r.RawCPUPerMillion, r.IndexOnlyCPUPerMillion, r.IngestCPUPerMillion)
	fmt.Fprintf(w, "nearby (2 km, 10 nearest) over %d dashers while ingesting %.0f updates/s:\n", r.NearbyDashers, r.NearbyUnderRate)
	fmt.Fprintf(w, "  searches back to back: p50 %.3f ms, p99 %.3f ms %s\n", r.NearbyP50Ms, r.NearbyP99Ms, target(r.NearbyP99Ms <= 5, "goal <= 5 ms"))
	fmt.Fprintf(w, "  one search per ms, as requests arrive: p50 %.3f ms, p99 %.3f ms %s\n",
		r.NearbyPacedP50Ms, r.NearbyPacedP99Ms, target(r.NearbyPacedP99Ms <= 5, "goal <= 5 ms"))
	fmt.Fprintf(w, "assign (KV lease + dispatch record + WAL event): p50 %.2f ms, p99 %.2f ms\n", r.AssignP50Ms, r.AssignP99Ms)
}

// RunDispatch measures location ingest against raw core NATS (with and without
// the KV store writes, which every dasher's first position makes), nearby latency
// while ingesting, and assign latency, on a private embedded server.
func RunDispatch(ctx context.Context, cfg DispatchConfig) (DispatchResult, error) {
	if cfg.Updates == 0 {
		cfg.Updates = 300_000
	}
	if cfg.Dashers == 0 {
		cfg.Dashers = 100_000
	}
	if cfg.Searches == 0 {
		cfg.Searches = 2000
	}
	if cfg.Assigns == 0 {
		cfg.Assigns = 500
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.Phase == nil {
		cfg.Phase = func(string, bool) {}
	}
	var res DispatchResult
	srv, err := startServer(ctx, "orderflow-bench-dispatch", topology.Topology{Partitions: 2})
	if err != nil {
		return res, err
	}
	defer srv.close()
	pub, js := srv.nc, srv.js

	// The messages: Dashers dashers in a 15 km city, each update a little later.
	city := dispatch.Point{Lat: 40.7484, Lng: -73.9857}
	start := time.Now().Add(-time.Hour)
	subjects := make([]string, cfg.Dashers)
	places := make([]dispatch.Point, cfg.Dashers)
	for i := range subjects {
		subjects[i] = dispatch.LocationsSubject(fmt.Sprintf("d%d", i))
		places[i] = dispatch.Destination(city, float64(i*7919%360), float64(i*104729%15000))
	}
	positions := func(from time.Time) [][]byte {
		out := make([][]byte, cfg.Updates)
		for i := range out {
			d := i % cfg.Dashers
			p := dispatch.Position{Point: dispatch.Destination(places[d], float64(i%360), float64(i/cfg.Dashers)*20), At: from.Add(time.Duration(i) * time.Microsecond), SpeedMPS: 7}
			out[i] = dispatch.EncodePosition(p)
		}
		return out
	}
	bodies := positions(start)
	// Later positions for the search run, so the background updates move dashers
	// instead of being ignored as stale.
	later := positions(start.Add(30 * time.Minute))
	send := func(rate float64, stop *atomic.Bool) error {
		msgs := bodies
		if stop != nil {
			msgs = later
		}
		begin := time.Now()
		for i, b := range msgs {
			if stop != nil && stop.Load() {
				return nil
			}
			if err := pub.Publish(subjects[i%cfg.Dashers], b); err != nil {
				return err
			}
			if rate > 0 && i%256 == 0 {
				if ahead := time.Duration(float64(i)/rate*float64(time.Second)) - time.Since(begin); ahead > 0 {
					time.Sleep(ahead)
				}
			}
		}
		return pub.Flush()
	}
	// Every run receives on a connection of its own, like serve's firehose, which
	// also carries the store writes: handler builds the run's handler on it.
	receive := func(handler func(sc *nats.Conn) (func(*nats.Msg), error)) (time.Duration, error) {
		sc, err := nats.Connect(srv.url())
		if err != nil {
			return 0, err
		}
		defer sc.Close()
		handle, err := handler(sc)
		if err != nil {
			return 0, err
		}
		var got atomic.Int64
		done := make(chan struct{})
		want := int64(len(bodies))
		sub, err := sc.Subscribe(dispatch.LocationsPrefix+"*", func(m *nats.Msg) {
			handle(m)
			if got.Add(1) == want {
				close(done)
			}
		})
		if err != nil {
			return 0, err
		}
		_ = sub.SetPendingLimits(-1, -1)
		if err := sc.Flush(); err != nil {
			return 0, err
		}
		begin := time.Now()
		if err := send(0, nil); err != nil {
			return 0, err
		}
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			return 0, fmt.Errorf("received %d of %d positions", got.Load(), want)
		}
		return time.Since(begin), nil
	}

	fmt.Fprintf(cfg.Progress, "dispatch: raw core NATS pub+sub of %d positions...\n", len(bodies))
	cpuPerMillion := func(since time.Duration) float64 {
		return (processCPU() - since).Seconds() / float64(len(bodies)) * 1e6
	}
	cpu0 := processCPU()
	cfg.Phase("raw", true)
	raw, err := receive(func(*nats.Conn) (func(*nats.Msg), error) { return func(*nats.Msg) {}, nil })
	cfg.Phase("raw", false)
	if err != nil {
		return res, err
	}
	res.RawPerSec = float64(len(bodies)) / raw.Seconds()
	res.RawCPUPerMillion = cpuPerMillion(cpu0)

	fmt.Fprintf(cfg.Progress, "dispatch: the same into an index without the store writes...\n")
	// locations feeds ix from the firehose on sc, writing the store on sc too.
	locations := func(ix *dispatch.Index, storeEvery time.Duration) func(sc *nats.Conn) (func(*nats.Msg), error) {
		return func(sc *nats.Conn) (func(*nats.Msg), error) {
			l, err := dispatch.NewLocations(sc, ix, dispatch.LocationsConfig{StoreEvery: storeEvery, Registerer: prometheus.NewRegistry()})
			if err != nil {
				return nil, err
			}
			return func(m *nats.Msg) { l.Handle(m.Subject, m.Data) }, nil
		}
	}
	cpu0 = processCPU()
	cfg.Phase("index-only", true)
	took, err := receive(locations(dispatch.NewIndex(0), -1))
	cfg.Phase("index-only", false)
	if err != nil {
		return res, err
	}
	res.IndexOnlyPerSec = float64(len(bodies)) / took.Seconds()
	res.IndexOnlyRatio = res.IndexOnlyPerSec / res.RawPerSec
	res.IndexOnlyCPUPerMillion = cpuPerMillion(cpu0)

	fmt.Fprintf(cfg.Progress, "dispatch: the same into the index...\n")
	ix := dispatch.NewIndex(0)
	cpu0 = processCPU()
	cfg.Phase("ingest", true)
	took, err = receive(locations(ix, 0))
	cfg.Phase("ingest", false)
	if err != nil {
		return res, err
	}
	res.IngestPerSec = float64(len(bodies)) / took.Seconds()
	res.Ratio = res.IngestPerSec / res.RawPerSec
	res.IngestCPUPerMillion = cpuPerMillion(cpu0)

	// Nearby while ingesting at half the measured rate, into the same index.
	fmt.Fprintf(cfg.Progress, "dispatch: nearby over %d dashers while ingesting...\n", ix.Len())
	res.NearbyUnderRate, res.NearbyDashers = res.IngestPerSec/2, ix.Len()
	sc, err := nats.Connect(srv.url())
	if err != nil {
		return res, err
	}
	defer sc.Close()
	handle, err := locations(ix, 0)(sc)
	if err != nil {
		return res, err
	}
	sub, err := sc.Subscribe(dispatch.LocationsPrefix+"*", handle)
	if err != nil {
		return res, err
	}
	_ = sub.SetPendingLimits(-1, -1)
	var stop atomic.Bool
	sendErr := make(chan error, 1)
	go func() {
		for !stop.Load() {
			if err := send(res.NearbyUnderRate, &stop); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	cfg.Phase("nearby", true)
	search := func(pause time.Duration) []time.Duration {
		lat := make([]time.Duration, 0, cfg.Searches)
		for i := range cfg.Searches {
			c := places[(i*31)%len(places)]
			t0 := time.Now()
			ix.Nearby(dispatch.Query{Center: c, RadiusM: 2000, Limit: 10})
			lat = append(lat, time.Since(t0))
			time.Sleep(pause)
		}
		return lat
	}
	lat := search(0)
	paced := search(time.Millisecond)
	stop.Store(true)
	err = <-sendErr
	cfg.Phase("nearby", false)
	if err != nil {
		return res, err
	}
	res.NearbyP50Ms, res.NearbyP99Ms = quantileMs(lat, .5), quantileMs(lat, .99)
	res.NearbyPacedP50Ms, res.NearbyPacedP99Ms = quantileMs(paced, .5), quantileMs(paced, .99)

	fmt.Fprintf(cfg.Progress, "dispatch: %d assigns...\n", cfg.Assigns)
	d, err := dispatch.NewDispatcher(ctx, js, ix, dispatch.AssignConfig{MaxPositionAge: 24 * time.Hour, Registerer: prometheus.NewRegistry()})
	if err != nil {
		return res, err
	}
	lat = lat[:0]
	cfg.Phase("assign", true)
	defer cfg.Phase("assign", false)
	for i := range cfg.Assigns {
		t0 := time.Now()
		if _, err := d.Assign(ctx, fmt.Sprintf("bench-%d", i), dispatch.AssignRequest{Pickup: places[(i*97)%len(places)], RadiusM: 3000}); err != nil {
			return res, fmt.Errorf("assign: %w", err)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	res.AssignP50Ms, res.AssignP99Ms = quantileMs(lat, .5), quantileMs(lat, .99)
	return res, nil
}
