package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/adapters/regions"
	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// RegionsConfig configures the regions bench: two regions joined by their leafnode
// link through a TCP proxy, each running serve's whole pipeline (README "Regions").
type RegionsConfig struct {
	// Binary is an orderflow executable. Region a runs as its own `serve --region a`
	// process so that the failover phase can end it with SIGKILL; region b runs
	// app.Serve in this process.
	Binary string
	// Rate is the steady live rate published in region a, events per second.
	// Default 1000.
	Rate float64
	// Seconds is how long each lag run publishes. Default 10.
	Seconds int
	// LatencyMs is the latency the second lag run adds to the link, each way.
	// Default 50; negative skips that run.
	LatencyMs int
	// Partitions of each region's WAL. Default 8, serve's.
	Partitions int
	Seed       int64
	// Progress, if set, receives one line per phase.
	Progress io.Writer
}

func (c *RegionsConfig) setDefaults() {
	if c.Rate == 0 {
		c.Rate = 1000
	}
	if c.Seconds == 0 {
		c.Seconds = 10
	}
	if c.LatencyMs == 0 {
		c.LatencyMs = 50
	}
	if c.Partitions == 0 {
		c.Partitions = 8
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// RegionsResult is what one run of the regions bench measured.
type RegionsResult struct {
	Rate float64 `json:"rate_per_s"`
	// FirstEventMs is how long after both regions were up and linked an event
	// published in a reached b's WAL; FirstRawMs the same for the plain stream.
	// The lag runs start after both.
	FirstEventMs float64 `json:"first_event_ms"`
	FirstRawMs   float64 `json:"first_raw_ms"`
	// FirstSourceRestarts is how often b's region watcher restarted its source of
	// a meanwhile.
	FirstSourceRestarts float64     `json:"first_source_restarts"`
	Lag                 []RegionLag `json:"lag"`
	Failover            Failover    `json:"failover"`
}

// Lag is a distribution of per-event delays.
type Lag struct {
	Events int     `json:"events"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
}

func (l Lag) String() string {
	return fmt.Sprintf("%6d events  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms", l.Events, l.P50Ms, l.P99Ms, l.MaxMs)
}

// Cores is how many cores each process kept busy over a phase.
type Cores struct {
	A    float64 `json:"a"`
	B    float64 `json:"b_and_bench"`
	Wall float64 `json:"seconds"`
}

func (c Cores) String() string { return fmt.Sprintf("cores busy: a %.2f, b + bench %.2f", c.A, c.B) }

// coreMeter measures Cores from its start.
type coreMeter struct {
	a          *regionProcess
	cpuA, cpuB time.Duration
	start      time.Time
}

func (e *regionsEnv) startCores() coreMeter {
	return coreMeter{a: e.a, cpuA: e.a.cpu(), cpuB: processCPU(), start: time.Now()}
}

func (m coreMeter) cores() Cores {
	wall := time.Since(m.start).Seconds()
	return Cores{A: (m.a.cpu() - m.cpuA).Seconds() / wall, B: (processCPU() - m.cpuB).Seconds() / wall, Wall: wall}
}

// RegionLag is one lag run: events published in region a at the steady rate, each
// timed from its acknowledgement in a to where region b shows it.
type RegionLag struct {
	// AddedLatencyMs is the latency the proxy added to the link, each way.
	AddedLatencyMs int `json:"added_latency_ms"`
	// LinkRTTP50Ms is a JetStream API request from a client of a to b's domain and
	// its answer, across the link.
	LinkRTTP50Ms float64 `json:"link_rtt_p50_ms"`
	// Raw is the baseline: a plain stream in a sourced by a stream in b across the
	// same link, at the same rate, from its ack in a to its arrival in b.
	Raw Lag `json:"raw"`
	// WAL is an event of the workload from its ack in a (ORDER_INGEST) to its arrival
	// in b's WAL (ORDER_EVENTS).
	WAL Lag `json:"wal"`
	// RawCores and WALCores are the cores a's process and this one (b, the
	// publisher, the proxy) kept busy during the raw and the workload's publishing.
	RawCores Cores `json:"raw_cores"`
	WALCores Cores `json:"wal_cores"`
	// WALToRaw is WAL's p99 over Raw's.
	WALToRaw float64 `json:"wal_p99_to_raw"`
	// Snapshot is an event that changes its order's snapshot, from its ack in a to
	// b's order_status including it (a sample of the orders).
	Snapshot Lag `json:"snapshot"`
	// MetricLagEvents and MetricLagSeconds are the largest values b's
	// orderflow_region_replication_lag_events/_seconds{peer="a"} showed in
	// MetricScrapes scrapes of its /metrics during the run.
	MetricLagEvents  float64 `json:"metric_lag_events_max"`
	MetricLagSeconds float64 `json:"metric_lag_seconds_max"`
	MetricScrapes    int     `json:"metric_scrapes"`
	// SourceRestarts is how often b's region watcher restarted its source of a
	// during the run (orderflow_region_source_restarts_total).
	SourceRestarts float64 `json:"source_restarts"`
}

// Failover is what the failover phase measured: region a's process is killed with
// SIGKILL while producers that have both regions' URLs publish at the steady rate.
// Nothing was published in b before, so a's WAL holds no event from b when it dies:
// the case where its restart rescans the whole WAL (README "Regions").
type Failover struct {
	// RPOEvents is how many events a had acknowledged that b's WAL did not hold
	// when a died.
	RPOEvents uint64 `json:"rpo_events"`
	// DisconnectedMs and ReconnectedMs are the times from the kill to the
	// producers' connection losing a and being connected to b.
	DisconnectedMs float64 `json:"disconnected_ms"`
	ReconnectedMs  float64 `json:"reconnected_ms"`
	// FirstAckMs is the time from the kill to the producer's first ack from b.
	FirstAckMs float64 `json:"first_ack_ms"`
	// SnapshotMs is the time from the kill to b's snapshot reflecting an event
	// published after the failover.
	SnapshotMs float64 `json:"snapshot_ms"`
	// Retries are publishes the producer sent again after no answer within
	// failoverAttempt.
	Retries int `json:"retries"`
	// RestartReadyMs is the time from starting a again on its data directory to its
	// /readyz answering 200.
	RestartReadyMs float64 `json:"restart_ready_ms"`
	// RestartJetStreamMs is the time from starting a again to its JetStream
	// answering (the stores recovered); /readyz waits for the pipeline too.
	RestartJetStreamMs float64 `json:"restart_jetstream_ms"`
	// CatchUpMs is the time from starting a again to both WALs holding every event
	// published in either region.
	CatchUpMs float64 `json:"catch_up_ms"`
	// WALEvents is how many events each WAL held at the end.
	WALEvents uint64 `json:"wal_events"`
	// CleanRestartJetStreamMs and CleanRestartReadyMs are the same as
	// RestartJetStreamMs and RestartReadyMs after a clean stop (SIGTERM) of a.
	CleanRestartJetStreamMs float64 `json:"clean_restart_jetstream_ms"`
	CleanRestartReadyMs     float64 `json:"clean_restart_ready_ms"`
	// CatchUpSourceRestarts is how often the regions' watchers restarted a stream
	// source meanwhile.
	CatchUpSourceRestarts float64 `json:"catch_up_source_restarts"`
}

// Print writes the figures.
func (r RegionsResult) Print(w io.Writer) {
	fmt.Fprintf(w, "regions a and b: R1, each serve's whole pipeline (a its own process, b in this one), joined by the leafnode link through a TCP proxy; %.0f events/s published in a\n", r.Rate)
	fmt.Fprintf(w, "after start (both regions ready, link up): a's first event in b's WAL after %.0f ms (source restarts by b's watcher: %.0f); the plain stream's first message in b after %.0f ms\n", r.FirstEventMs, r.FirstSourceRestarts, r.FirstRawMs)
	for _, l := range r.Lag {
		fmt.Fprintf(w, "link +%d ms each way (JetStream API round trip a -> b p50 %.2f ms):\n", l.AddedLatencyMs, l.LinkRTTP50Ms)
		fmt.Fprintf(w, "  raw: plain stream sourced a -> b, ack in a to b     %s   %s\n", l.Raw, l.RawCores)
		fmt.Fprintf(w, "  ack in a to b's WAL (ORDER_EVENTS)                  %s   %s   p99 %.2f x raw\n", l.WAL, l.WALCores, l.WALToRaw)
		fmt.Fprintf(w, "  ack in a to b's snapshot (sampled orders)           %s\n", l.Snapshot)
		fmt.Fprintf(w, "  b's orderflow_region_replication_lag_events{peer=\"a\"} max %.0f, _seconds max %.3f (%d scrapes of /metrics); source restarts %.0f\n",
			l.MetricLagEvents, l.MetricLagSeconds, l.MetricScrapes, l.SourceRestarts)
	}
	f := r.Failover
	fmt.Fprintf(w, "failover: SIGKILL of region a's process; %d producers share a connection with both URLs (a first), each sends a publish again after %s without an answer:\n", failoverProducers, failoverAttempt)
	fmt.Fprintf(w, "  acknowledged by a, not in b's WAL when a died (RPO): %d events\n", f.RPOEvents)
	fmt.Fprintf(w, "  the connection saw a gone %.0f ms after the kill and was connected to b %.0f ms after it\n", f.DisconnectedMs, f.ReconnectedMs)
	fmt.Fprintf(w, "  first ack from b %.0f ms after the kill; b's snapshot reflects an event published after the failover %.0f ms after it (%d publishes sent again)\n",
		f.FirstAckMs, f.SnapshotMs, f.Retries)
	fmt.Fprintf(w, "  (a's WAL held no event published in b: its server rescans the WAL for that source's state after SIGKILL, see README \"Regions\")\n")
	fmt.Fprintf(w, "  a restarted from its disk: JetStream answers after %.0f ms, ready after %.0f ms; both WALs hold every event (%d) after %.0f ms (source restarts by the watchers: %.0f)\n",
		f.RestartJetStreamMs, f.RestartReadyMs, f.WALEvents, f.CatchUpMs, f.CatchUpSourceRestarts)
	fmt.Fprintf(w, "  a stopped cleanly (SIGTERM) and started again: JetStream answers after %.0f ms, ready after %.0f ms\n", f.CleanRestartJetStreamMs, f.CleanRestartReadyMs)
}

// rawStream is the baseline's plain stream: subjects in a, sourced by b.
const (
	rawStream  = "BENCH_RAW"
	rawSubject = "bench.raw"
)

// failoverAttempt is how long the failover phase's producer waits for an ack
// before sending the publish again (to whichever region its connection reaches).
const failoverAttempt = 500 * time.Millisecond

// failoverProducers is how many producers publish in the failover phase, each one
// event at a time, waiting for its ack.
const failoverProducers = 64

// regionsEnv is the two regions of one run.
type regionsEnv struct {
	cfg      RegionsConfig
	link     *link
	a        *regionProcess
	aURL     string
	ncA, ncB *nats.Conn
	jsA, jsB jetstream.JetStream
	httpB    string
	// wal records arrivals in b's WAL for the whole run.
	wal *arrivals
	// distinct is every event id published in either region so far.
	distinct map[string]bool
}

// RunRegions starts regions a and b in a temp directory and measures the link's raw
// baseline, replication lag at the steady rate with and without added latency, and
// a failover of a with its restart.
func RunRegions(ctx context.Context, cfg RegionsConfig) (RegionsResult, error) {
	cfg.setDefaults()
	res := RegionsResult{Rate: cfg.Rate}
	if cfg.Binary == "" {
		return res, errors.New("regions bench: the orderflow binary to run region a is not set")
	}
	dir, err := os.MkdirTemp("", "orderflow-bench-regions")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	addrs, err := freeAddrs(3)
	if err != nil {
		return res, err
	}
	leafB, natsA, httpA := addrs[0], addrs[1], addrs[2]
	e := &regionsEnv{cfg: cfg, aURL: "nats://" + natsA, distinct: map[string]bool{}}
	if e.link, err = startLink("a-b", leafB); err != nil {
		return res, err
	}
	defer e.link.stop()

	fmt.Fprintf(cfg.Progress, "regions: starting b in this process and a as %s serve...\n", cfg.Binary)
	topo := topology.Topology{Partitions: cfg.Partitions}
	b, stopB, err := startServe(ctx, app.ServeConfig{
		DataDir: filepath.Join(dir, "b"), NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", Topology: topo,
		Region: regions.Config{Name: "b", Listen: leafB, Peers: []regions.Peer{{Name: "a"}}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return res, err
	}
	defer stopB()
	e.httpB = b.HTTP
	e.a = &regionProcess{binary: cfg.Binary, http: httpA, nats: e.aURL, log: filepath.Join(dir, "a.log"), args: []string{
		"serve", "--region", "a", "--peer", "b=" + e.link.addr(), "--data-dir", filepath.Join(dir, "a"),
		"--nats-listen", natsA, "--http-listen", httpA, "--partitions", strconv.Itoa(cfg.Partitions), "--no-archive",
	}}
	if err := e.a.start(ctx); err != nil {
		return res, err
	}
	defer e.a.kill()
	if e.ncB, err = nats.Connect(b.NATS); err != nil {
		return res, err
	}
	defer e.ncB.Close()
	if e.ncA, err = nats.Connect(e.aURL); err != nil {
		return res, err
	}
	defer func() { e.ncA.Close() }()
	if e.jsA, err = jetstream.New(e.ncA); err != nil {
		return res, err
	}
	if e.jsB, err = jetstream.New(e.ncB); err != nil {
		return res, err
	}
	if err := waitUntil(ctx, time.Minute, "regions linked", e.linked); err != nil {
		return res, err
	}
	if e.wal, err = watchArrivals(ctx, e.jsB, topology.EventsStream); err != nil {
		return res, err
	}
	defer e.wal.stop()
	if err := e.rawStreams(ctx); err != nil {
		return res, err
	}
	fmt.Fprintf(cfg.Progress, "regions: first events a -> b...\n")
	scrapeB := startScrape(ctx, e.httpB, "a")
	res.FirstRawMs, res.FirstEventMs, err = e.firstReplication(ctx)
	res.FirstSourceRestarts = scrapeB().restarts
	if err != nil {
		return res, err
	}

	latencies := []int{0}
	if cfg.LatencyMs > 0 {
		latencies = append(latencies, cfg.LatencyMs)
	}
	for i, ms := range latencies {
		fmt.Fprintf(cfg.Progress, "regions: lag at %.0f events/s, link +%d ms...\n", cfg.Rate, ms)
		l, err := e.lagRun(ctx, ms, cfg.Seed+int64(i)*100)
		if err != nil {
			return res, fmt.Errorf("lag run +%d ms: %w", ms, err)
		}
		res.Lag = append(res.Lag, l)
	}
	fmt.Fprintf(cfg.Progress, "regions: failover: SIGKILL of a, its restart, then a clean stop and restart...\n")
	if res.Failover, err = e.failover(ctx, cfg.Seed+1000); err != nil {
		return res, fmt.Errorf("failover: %w", err)
	}
	return res, nil
}

// linked reports nil once each region's JetStream answers the other's through the link.
func (e *regionsEnv) linked(ctx context.Context) error {
	for _, nc := range []*nats.Conn{e.ncA, e.ncB} {
		st, err := regions.Read(ctx, nc)
		if err != nil {
			return err
		}
		if len(st.Peers) != 1 || st.Peers[0].Link != "up" {
			return fmt.Errorf("region %s sees %+v", st.Region, st.Peers)
		}
	}
	return nil
}

// rawStreams sets up the baseline: a plain stream in a, sourced into b through a's
// domain exactly as b's WAL sources a's ORDER_INGEST.
func (e *regionsEnv) rawStreams(ctx context.Context) error {
	if _, err := e.jsA.CreateStream(ctx, jetstream.StreamConfig{
		Name: rawStream, Subjects: []string{rawSubject + ".>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		return fmt.Errorf("raw stream in a: %w", err)
	}
	_, err := e.jsB.CreateStream(ctx, jetstream.StreamConfig{
		Name: rawStream, Storage: jetstream.FileStorage,
		Sources: []*jetstream.StreamSource{{Name: rawStream, Domain: "a"}},
	})
	if err != nil {
		return fmt.Errorf("raw stream in b: %w", err)
	}
	return nil
}

// firstReplication publishes one message on the plain stream and one order's
// events in a, and returns how long each took to reach b: the sources' start.
func (e *regionsEnv) firstReplication(ctx context.Context) (rawMs, eventMs float64, err error) {
	start := time.Now()
	raw := nats.NewMsg(rawSubject + ".first")
	raw.Header.Set(nats.MsgIdHdr, "raw-first")
	rawArr, err := watchArrivals(ctx, e.jsB, rawStream)
	if err != nil {
		return 0, 0, err
	}
	defer rawArr.stop()
	msgs, _, err := simulate.Generate(simulate.Config{Seed: e.cfg.Seed + 999, Orders: 1})
	if err != nil {
		return 0, 0, err
	}
	pubs := []*nats.Msg{raw}
	var ids []string
	for _, m := range msgs {
		pubs = append(pubs, m.NatsMsg())
		ids = append(ids, m.MsgID)
		e.distinct[m.MsgID] = true
	}
	if _, err := publishTimed(ctx, e.ncA, pubs, 0); err != nil {
		return 0, 0, err
	}
	if err := rawArr.waitFor(ctx, []string{"raw-first"}); err != nil {
		return 0, 0, err
	}
	if err := e.wal.waitFor(ctx, ids); err != nil {
		return 0, 0, err
	}
	r, _ := rawArr.get("raw-first")
	w, _ := e.wal.get(ids[0])
	return ms(r.at.Sub(start)), ms(w.at.Sub(start)), nil
}

// lagRun publishes the raw baseline and then a fresh workload in a at the steady
// rate, with ms added to the link each way.
func (e *regionsEnv) lagRun(ctx context.Context, ms int, seed int64) (RegionLag, error) {
	out := RegionLag{AddedLatencyMs: ms}
	if ms > 0 {
		if err := e.link.latency(ms); err != nil {
			return out, err
		}
		defer e.link.clear()
	}
	var err error
	if out.LinkRTTP50Ms, err = e.linkRTT(ctx); err != nil {
		return out, err
	}
	w, err := e.workload(ctx, seed, float64(e.cfg.Seconds), 2000)
	if err != nil {
		return out, err
	}
	defer w.snaps.stop()
	msgs := w.msgs

	// The baseline: the workload's bodies as plain messages.
	raw := make([]*nats.Msg, len(msgs))
	rawIDs := make([]string, len(msgs))
	for i, m := range msgs {
		raw[i] = nats.NewMsg(fmt.Sprintf("%s.%d", rawSubject, i%8))
		raw[i].Data = m.Body
		rawIDs[i] = fmt.Sprintf("raw-%d-%d", seed, i)
		raw[i].Header.Set(nats.MsgIdHdr, rawIDs[i])
	}
	rawArr, err := watchArrivals(ctx, e.jsB, rawStream)
	if err != nil {
		return out, err
	}
	cores := e.startCores()
	acks, err := publishTimed(ctx, e.ncA, raw, e.cfg.Rate)
	out.RawCores = cores.cores()
	if err == nil {
		err = rawArr.waitFor(ctx, rawIDs)
	}
	rawArr.stop()
	if err != nil {
		return out, fmt.Errorf("raw: %w", err)
	}
	out.Raw = lagOf(rawIDs, acks, rawArr)

	// The workload, into the pipelines.
	ids := make([]string, len(msgs))
	pubs := make([]*nats.Msg, len(msgs))
	for i, m := range msgs {
		ids[i], pubs[i] = m.MsgID, m.NatsMsg()
	}
	scrapeB := startScrape(ctx, e.httpB, "a")
	cores = e.startCores()
	acks, err = publishTimed(ctx, e.ncA, pubs, e.cfg.Rate)
	out.WALCores = cores.cores()
	if err == nil {
		err = e.wal.waitFor(ctx, ids)
	}
	if err == nil {
		err = pipelines.WaitDrained(ctx, e.jsB, time.Minute)
	}
	m := scrapeB()
	if err != nil {
		return out, err
	}
	time.Sleep(200 * time.Millisecond) // let the watcher deliver the last updates
	out.WAL = lagOf(ids, acks, e.wal)
	if out.Raw.P99Ms > 0 {
		out.WALToRaw = out.WAL.P99Ms / out.Raw.P99Ms
	}
	out.MetricLagEvents, out.MetricLagSeconds, out.MetricScrapes, out.SourceRestarts = m.events, m.seconds, m.scrapes, m.restarts

	var lat []time.Duration
	seen := map[string]bool{}
	for i, m := range msgs {
		if seen[m.MsgID] || acks[i].IsZero() {
			continue
		}
		seen[m.MsgID] = true
		if at, ok := w.visibleInB(e.wal, i); ok {
			lat = append(lat, at.Sub(acks[i]))
		}
	}
	out.Snapshot = lagFrom(lat)
	return out, nil
}

// regionWorkload is a fresh workload for the steady rate, with b's snapshots of a
// sample of its orders watched.
type regionWorkload struct {
	msgs    []simulate.Message
	persist []bool
	sampled map[string]bool
	snaps   *snapshotWatch
}

// workload generates about seconds' worth of events at the steady rate, counts them
// as published, and starts watching b's snapshots of a sample of its orders.
func (e *regionsEnv) workload(ctx context.Context, seed int64, seconds float64, interleave int) (*regionWorkload, error) {
	orders := int(e.cfg.Rate*seconds/9.5) + 1
	msgs, _, err := simulate.Generate(simulate.Config{Seed: seed, Orders: orders, Interleave: interleave})
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		e.distinct[m.MsgID] = true
	}
	w := &regionWorkload{msgs: msgs, persist: persistFlags(msgs)}
	var keys []string
	w.sampled, keys = sampleOrders(orderIDs(msgs), watchedOrders)
	if w.snaps, err = watchSnapshots(ctx, e.jsB, keys); err != nil {
		return nil, err
	}
	return w, nil
}

// visibleInB is when b's snapshot of message i's order first included it, for an
// event that changes the snapshot, of a watched order, that reached b's WAL.
func (w *regionWorkload) visibleInB(wal *arrivals, i int) (time.Time, bool) {
	m := w.msgs[i]
	if !w.persist[i] || !w.sampled[m.Event.OrderID] {
		return time.Time{}, false
	}
	arr, ok := wal.get(m.MsgID)
	if !ok {
		return time.Time{}, false
	}
	return w.snaps.visible(m.Event.OrderID, arr.seq)
}

// linkRTT is the median of JetStream API requests from a client of a to b's domain.
func (e *regionsEnv) linkRTT(ctx context.Context) (float64, error) {
	js, err := jetstream.NewWithDomain(e.ncA, "b")
	if err != nil {
		return 0, err
	}
	var lat []time.Duration
	for range 20 {
		t0 := time.Now()
		if _, err := js.AccountInfo(ctx); err != nil {
			return 0, fmt.Errorf("JetStream API of b through the link: %w", err)
		}
		lat = append(lat, time.Since(t0))
	}
	return quantileMs(lat, .5), nil
}

// failover publishes a fresh workload at the steady rate through producers that have
// both regions' URLs (a first), kills a's process with SIGKILL a third of the way
// in, and afterwards starts a again on its data directory (restart).
func (e *regionsEnv) failover(ctx context.Context, seed int64) (Failover, error) {
	var out Failover
	w, err := e.workload(ctx, seed, 6, 200)
	if err != nil {
		return out, err
	}
	defer w.snaps.stop()
	msgs := w.msgs
	var disconnected, reconnected atomic.Pointer[time.Time]
	pc, err := nats.Connect(e.aURL+","+e.ncB.ConnectedUrl(), nats.DontRandomize(), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.ReconnectJitter(0, 0),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { now := time.Now(); disconnected.CompareAndSwap(nil, &now) }),
		nats.ReconnectHandler(func(*nats.Conn) { now := time.Now(); reconnected.CompareAndSwap(nil, &now) }))
	if err != nil {
		return out, err
	}
	defer pc.Close()
	pjs, err := jetstream.New(pc)
	if err != nil {
		return out, err
	}

	type acked struct {
		at     time.Time
		domain string
		seq    uint64
	}
	acks := make([]acked, len(msgs))
	var retries atomic.Int64
	next := make(chan int)
	var wg sync.WaitGroup
	// Enough producers that the publishes lost with a (each waits failoverAttempt
	// before it is sent again) do not hold back the ones after the kill.
	for range failoverProducers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				for ctx.Err() == nil {
					actx, cancel := context.WithTimeout(ctx, failoverAttempt)
					ack, err := pjs.PublishMsg(actx, msgs[i].NatsMsg())
					cancel()
					if err == nil {
						acks[i] = acked{time.Now(), ack.Domain, ack.Sequence}
						break
					}
					retries.Add(1)
					if !errors.Is(err, context.DeadlineExceeded) {
						time.Sleep(10 * time.Millisecond) // no responders while reconnecting
					}
				}
			}
		}()
	}
	var killedAt time.Time
	killAt := len(msgs) / 3
	start := time.Now()
	for i := range msgs {
		if d := simulate.PaceDelay(i, e.cfg.Rate, time.Since(start)); d > 0 {
			time.Sleep(d)
		}
		if i == killAt {
			killedAt = time.Now()
			e.a.kill()
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return out, err
	}
	out.Retries = int(retries.Load())

	// What b lacks of a's acknowledged events: a is dead, so b's source of it no
	// longer moves.
	st, err := regions.Read(ctx, e.ncB)
	if err != nil {
		return out, err
	}
	var lastA uint64
	var firstB time.Time
	for _, a := range acks {
		switch a.domain {
		case "a":
			lastA = max(lastA, a.seq)
		case "b":
			if firstB.IsZero() || a.at.Before(firstB) {
				firstB = a.at
			}
		}
	}
	if firstB.IsZero() {
		return out, errors.New("no publish was acknowledged by b after a was killed")
	}
	if rep := st.Peers[0].ReplicatedSeq; lastA > rep {
		out.RPOEvents = lastA - rep
	}
	out.FirstAckMs = ms(firstB.Sub(killedAt))
	if d, r := disconnected.Load(), reconnected.Load(); d != nil && r != nil {
		out.DisconnectedMs, out.ReconnectedMs = ms(d.Sub(killedAt)), ms(r.Sub(killedAt))
	}

	if err := pipelines.WaitDrained(ctx, e.jsB, time.Minute); err != nil {
		return out, err
	}
	time.Sleep(200 * time.Millisecond) // let the watcher deliver the last updates
	var visible time.Time
	for i := range msgs {
		if acks[i].domain != "b" {
			continue
		}
		if at, ok := w.visibleInB(e.wal, i); ok && (visible.IsZero() || at.Before(visible)) {
			visible = at
		}
	}
	if visible.IsZero() {
		return out, errors.New("b's snapshots reflect no event acknowledged by b")
	}
	out.SnapshotMs = ms(visible.Sub(killedAt))
	return out, e.restart(ctx, &out)
}

// restart starts the killed region a again on its data directory and waits until
// both WALs hold every event published in either region; then it stops a cleanly
// and starts it again.
func (e *regionsEnv) restart(ctx context.Context, out *Failover) error {
	restart := time.Now()
	if err := e.a.start(ctx); err != nil {
		return err
	}
	out.RestartReadyMs = ms(time.Since(restart))
	out.RestartJetStreamMs = ms(e.a.jetStreamAfter)
	e.ncA.Close()
	var err error
	if e.ncA, err = nats.Connect(e.aURL); err != nil {
		return err
	}
	jsA, err := jetstream.New(e.ncA)
	if err != nil {
		return err
	}
	scrapeA, scrapeB := startScrape(ctx, e.a.http, "b"), startScrape(ctx, e.httpB, "a")
	want := uint64(len(e.distinct))
	err = waitUntil(ctx, 2*time.Minute, "both WALs hold every event", func(ctx context.Context) error {
		for name, js := range map[string]jetstream.JetStream{"a": jsA, "b": e.jsB} {
			info, err := stream(ctx, js)
			if err != nil {
				return err
			}
			if info.State.Msgs != want {
				return fmt.Errorf("region %s: WAL holds %d of %d events", name, info.State.Msgs, want)
			}
		}
		return nil
	})
	out.CatchUpMs = ms(time.Since(restart))
	out.CatchUpSourceRestarts = scrapeA().restarts + scrapeB().restarts
	if err != nil {
		return err
	}
	out.WALEvents = want

	// The same restart after a clean stop, on the same data.
	if err := e.a.stop(); err != nil {
		return err
	}
	restart = time.Now()
	if err := e.a.start(ctx); err != nil {
		return err
	}
	out.CleanRestartReadyMs, out.CleanRestartJetStreamMs = ms(time.Since(restart)), ms(e.a.jetStreamAfter)
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// lagOf is each id's arrival less its ack, counting each id once (its first publish).
func lagOf(ids []string, acks []time.Time, arr *arrivals) Lag {
	var lat []time.Duration
	seen := map[string]bool{}
	for i, id := range ids {
		if seen[id] || acks[i].IsZero() {
			continue
		}
		seen[id] = true
		if a, ok := arr.get(id); ok {
			lat = append(lat, a.at.Sub(acks[i]))
		}
	}
	return lagFrom(lat)
}

func lagFrom(lat []time.Duration) Lag {
	return Lag{Events: len(lat), P50Ms: quantileMs(lat, .5), P99Ms: quantileMs(lat, .99), MaxMs: quantileMs(lat, 1)}
}

// publishTimed publishes msgs at rate, each with a reply subject of its own, and
// returns when each one's JetStream ack arrived (the zero time for a duplicate
// the stream answered as such, or none).
func publishTimed(ctx context.Context, nc *nats.Conn, msgs []*nats.Msg, rate float64) ([]time.Time, error) {
	prefix := nats.NewInbox()
	acks := make([]time.Time, len(msgs))
	var mu sync.Mutex
	var failed error
	got := 0
	done := make(chan struct{})
	if len(msgs) == 0 {
		close(done)
	}
	sub, err := nc.Subscribe(prefix+".*", func(m *nats.Msg) {
		now := time.Now()
		i, err := strconv.Atoi(m.Subject[len(prefix)+1:])
		if err != nil || i >= len(acks) {
			return
		}
		var ack struct {
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		_ = json.Unmarshal(m.Data, &ack)
		mu.Lock()
		defer mu.Unlock()
		if ack.Error != nil && failed == nil {
			failed = fmt.Errorf("publish %s: %s", msgs[i].Subject, ack.Error.Description)
		} else if ack.Error == nil {
			acks[i] = now
		}
		if got++; got == len(msgs) {
			close(done)
		}
	})
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)
	start := time.Now()
	for i, m := range msgs {
		if d := simulate.PaceDelay(i, rate, time.Since(start)); d > 0 {
			time.Sleep(d)
		}
		m.Reply = prefix + "." + strconv.Itoa(i)
		if err := nc.PublishMsg(m); err != nil {
			return nil, err
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Minute):
		mu.Lock()
		defer mu.Unlock()
		return nil, fmt.Errorf("%d of %d publishes answered within a minute", got, len(msgs))
	}
	mu.Lock()
	defer mu.Unlock()
	return acks, failed
}

// arrivals records when each message id first arrived in a stream, read by an
// ordered consumer from the moment it starts.
type arrivals struct {
	cc jetstream.ConsumeContext
	mu sync.Mutex
	at map[string]arrival
}

type arrival struct {
	seq uint64
	at  time.Time
}

func watchArrivals(ctx context.Context, js jetstream.JetStream, streamName string) (*arrivals, error) {
	c, err := js.OrderedConsumer(ctx, streamName, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return nil, err
	}
	a := &arrivals{at: map[string]arrival{}}
	a.cc, err = c.Consume(func(m jetstream.Msg) {
		now := time.Now()
		md, err := m.Metadata()
		if err != nil {
			return
		}
		id := m.Headers().Get(nats.MsgIdHdr)
		a.mu.Lock()
		if _, ok := a.at[id]; !ok {
			a.at[id] = arrival{md.Sequence.Stream, now}
		}
		a.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

func (a *arrivals) stop() { a.cc.Stop() }

func (a *arrivals) get(id string) (arrival, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.at[id]
	return r, ok
}

// waitFor returns once every id has arrived.
func (a *arrivals) waitFor(ctx context.Context, ids []string) error {
	return waitUntil(ctx, time.Minute, "events arrive in b", func(context.Context) error {
		a.mu.Lock()
		defer a.mu.Unlock()
		missing := 0
		for _, id := range ids {
			if _, ok := a.at[id]; !ok {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d not arrived", missing, len(ids))
		}
		return nil
	})
}

// waitUntil polls cond until it returns nil, within.
func waitUntil(ctx context.Context, within time.Duration, what string, cond func(context.Context) error) error {
	deadline := time.Now().Add(within)
	for {
		err := cond(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s: %w", what, within, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// metricLag is the largest replication lag a region's /metrics showed for a peer.
type metricLag struct {
	events, seconds float64
	scrapes         int
	// restarts is how much orderflow_region_source_restarts_total grew.
	restarts float64
}

// startScrape runs scrapeRegionLag until the returned function is called, which
// returns what it saw.
func startScrape(ctx context.Context, addr, peer string) func() metricLag {
	ctx, stop := context.WithCancel(ctx)
	done := make(chan metricLag, 1)
	go func() { done <- scrapeRegionLag(ctx, addr, peer) }()
	return func() metricLag {
		stop()
		return <-done
	}
}

// scrapeRegionLag scrapes http://addr/metrics every 250 ms until ctx ends and keeps
// the largest orderflow_region_replication_lag_events and _seconds for peer.
func scrapeRegionLag(ctx context.Context, addr, peer string) metricLag {
	var out metricLag
	client := &http.Client{Timeout: time.Second}
	names := map[string]*float64{
		`orderflow_region_replication_lag_events{peer="` + peer + `"}`:  &out.events,
		`orderflow_region_replication_lag_seconds{peer="` + peer + `"}`: &out.seconds,
	}
	restarts := `orderflow_region_source_restarts_total{peer="` + peer + `"}`
	first := -1.0
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		if resp, err := client.Get("http://" + addr + "/metrics"); err == nil {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				name, value, ok := strings.Cut(sc.Text(), " ")
				v, err := strconv.ParseFloat(value, 64)
				if !ok || err != nil {
					continue
				}
				if dst := names[name]; dst != nil {
					*dst = max(*dst, v)
				}
				if name == restarts {
					if first < 0 {
						first = v
					}
					out.restarts = v - first
				}
			}
			resp.Body.Close()
			out.scrapes++
		}
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
	}
}
