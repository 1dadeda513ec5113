// Package bench measures the status pipeline against the raw JetStream baseline in
// the same run, on the same machine and the same backlog, so figures are ratios that
// survive a noisy machine: raw durable consume+ack of the backlog, the Watermill
// floor, a peer built the way the libraries' examples lead (see PeerResult), the
// pipeline draining the backlog into KV, the maximum live rate (publishing while the
// pipeline runs), end-to-end latency at several fractions of it, read latency for hot
// and cold orders, the HTTP ingest API against raw publish (see IngestResult), and
// replay. Two more benches have a command each: dispatch (RunDispatch) and two regions
// over a proxied link (RunRegions: replication lag against a plain sourced stream,
// failover and restart).
//
// The pipeline is reached through two functions only, startServe (startPipeline runs
// it on the bench's server) and newFloorRouter, so a change of its API is a change
// there.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/internal/app"
	"github.com/orderflow/orderflow/internal/services/replay"
	"github.com/orderflow/orderflow/internal/services/verify"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/pipelines"
	"github.com/orderflow/orderflow/pipelines/topology"
	chsink "github.com/orderflow/orderflow/sinks/clickhouse"
)

// Config sets the workload.
type Config struct {
	// Orders in the backlog; about 9.5 events each.
	Orders int
	// LiveSeconds is how long each live latency point publishes.
	LiveSeconds int
	// Partitions of the WAL.
	Partitions int
	// LiveFractions of the maximum live rate are the live points' rates, measured in
	// this order. Default DefaultLiveFractions.
	LiveFractions []float64
	// PeerSeconds is the peer phase's time budget: it stops there and reports the
	// rate over what it handled. Default 20; negative skips the phase.
	PeerSeconds int
	// IngestSeconds bounds each run of the ingest phase (raw publish, HTTP
	// throughput, single-POST latency). Default 3; negative skips the phase.
	IngestSeconds int
	// Reads per read-latency sample (hot and cold each).
	Reads int
	Seed  int64
	// ClickHouseDSN, when set, adds the ClickHouse sink phase.
	ClickHouseDSN string
	// SinkEvents is the sink phase's backlog (its own workload).
	SinkEvents int
	// Progress, if set, receives one line per phase.
	Progress io.Writer
	// Phase, if set, is called at the start and end of each phase ("raw", "floor",
	// "peer", "pipeline", "saturate", "live", "reads", "ingest", "replay"), e.g. to profile just
	// one. "live" covers every live point.
	Phase func(name string, start bool)
}

// DefaultLiveFractions are the live points: the latency curve up to half the maximum
// live rate.
var DefaultLiveFractions = []float64{0.05, 0.1, 0.25, 0.5}

// Targets, printed beside the figures they judge.
const (
	// TargetPipelineRatio is the backlog drain's target, as a ratio to raw.
	TargetPipelineRatio = 0.5
	// TargetPeerRatio is the pipeline's target over the peer.
	TargetPeerRatio = 10
)

// TargetLiveP99Ms is the live p99 target in ms at a fraction of the maximum live rate.
var TargetLiveP99Ms = map[float64]float64{0.1: 10, 0.25: 25}

func (c *Config) setDefaults() {
	if c.Orders == 0 {
		c.Orders = 10_000
	}
	if c.LiveSeconds == 0 {
		c.LiveSeconds = 8
	}
	if c.Partitions == 0 {
		c.Partitions = 8
	}
	if len(c.LiveFractions) == 0 {
		c.LiveFractions = DefaultLiveFractions
	}
	if c.PeerSeconds == 0 {
		c.PeerSeconds = 20
	}
	if c.IngestSeconds == 0 {
		c.IngestSeconds = 3
	}
	if c.Reads == 0 {
		c.Reads = 2000
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Phase == nil {
		c.Phase = func(string, bool) {}
	}
}

// Result is what one run measured.
type Result struct {
	Events            int     `json:"events"`
	RawConsumeAckRate float64 `json:"raw_consume_ack_per_s"`
	PipelineRate      float64 `json:"pipeline_per_s"`
	Ratio             float64 `json:"pipeline_to_raw_ratio"`
	// FloorRate is the pipeline's own Watermill lanes (subscriber, router, pinned
	// consumers) with a handler that does nothing: the most the pipeline could reach
	// over that transport, as FloorRatio of raw.
	FloorRate  float64 `json:"watermill_floor_per_s"`
	FloorRatio float64 `json:"watermill_floor_to_raw_ratio"`
	// Peer is the peer phase (nil when skipped), PeerRatio its rate over raw and
	// PipelineToPeer the pipeline's rate over the peer's.
	Peer           *PeerResult `json:"peer,omitempty"`
	PeerRatio      float64     `json:"peer_to_raw_ratio,omitempty"`
	PipelineToPeer float64     `json:"pipeline_to_peer_ratio,omitempty"`
	// CPU time of this process (server, clients, pipeline: everything) per backlog
	// event in each phase, in µs: steadier than rates on a shared machine.
	RawCPUPerEvent      float64 `json:"raw_cpu_us_per_event"`
	FloorCPUPerEvent    float64 `json:"floor_cpu_us_per_event"`
	PipelineCPUPerEvent float64 `json:"pipeline_cpu_us_per_event"`
	// Writes the pipeline made while draining the backlog, per WAL event: snapshot
	// compare-and-sets (coalescing keeps this below 1) and milestone publishes.
	SnapshotWritesPerEvent float64 `json:"snapshot_writes_per_event"`
	MilestonesPerEvent     float64 `json:"milestones_per_event"`
	// MaxLiveRate is the highest rate the server and pipeline sustain together:
	// a fresh workload published as fast as the server takes it, divided by the
	// time until the pipeline has made all of it durable. Publishing shares the two
	// cores, so it is below PipelineRate, which drains a backlog already stored.
	// IdleCores is the process's CPU over wall time for a second with the pipeline
	// running and nothing published: the fixed work the live costs include.
	IdleCores   float64 `json:"idle_cores"`
	MaxLiveRate float64 `json:"max_live_rate_per_s"`
	// What each event cost while publishing and the pipeline ran together at the
	// maximum live rate (the pipeline falls behind and coalesces).
	SaturateCost Cost `json:"saturate_cost"`
	// Live is publish -> snapshot visible at each of Config.LiveFractions.
	Live          []LivePoint `json:"live"`
	HotReadP50Ms  float64     `json:"hot_read_p50_ms"`
	HotReadP99Ms  float64     `json:"hot_read_p99_ms"`
	ColdReadP50Ms float64     `json:"cold_read_p50_ms"`
	ColdReadP99Ms float64     `json:"cold_read_p99_ms"`
	// Ingest is the HTTP ingest phase (nil when skipped).
	Ingest *IngestResult `json:"ingest,omitempty"`
	// Replay: `orderflow replay --dry-run` over the whole WAL (fold every event,
	// compare every snapshot), events/s and as a ratio to raw consume+ack of the
	// same WAL (WALEvents: the backlog and the live phases' events).
	WALEvents       int     `json:"wal_events"`
	RawWholeWALRate float64 `json:"raw_whole_wal_per_s"`
	ReplayRate      float64 `json:"replay_per_s"`
	ReplayRatio     float64 `json:"replay_to_raw_ratio"`
	// Sink is the ClickHouse phase, when measured.
	Sink *chsink.BenchResult `json:"clickhouse_sink,omitempty"`
}

// LivePoint is end-to-end latency at one fraction of the maximum live rate.
type LivePoint struct {
	Fraction float64 `json:"fraction"`
	Rate     float64 `json:"rate_per_s"`
	// Samples is how many events that change a snapshot were timed.
	Samples int     `json:"samples"`
	P50Ms   float64 `json:"end_to_end_p50_ms"`
	P99Ms   float64 `json:"end_to_end_p99_ms"`
	// Stalls counts publishes the client held back because too many acks were
	// outstanding: the server, not the pacing, set the rate then.
	Stalls int `json:"publish_stalls"`
	// Cost: at these rates the pipeline keeps up, so nearly every change is its own
	// snapshot write.
	Cost Cost `json:"cost"`
}

// Cost is what the events of one phase cost, from its first publish until the
// pipeline has made them all durable. CPU is the whole process's: the embedded
// server, the publisher, the pipeline, the garbage collector and whatever runs
// when idle, so at low rates it includes a share of fixed work.
type Cost struct {
	Events         uint64  `json:"events"`
	CPUPerEvent    float64 `json:"cpu_us_per_event"`
	WritesPerEvent float64 `json:"snapshot_writes_per_event"`
	// Cores is the CPU over the phase's wall time: 2 is a saturated machine here.
	Cores float64 `json:"cores_busy"`
}

func (c Cost) String() string {
	return fmt.Sprintf("per event: CPU %.1f µs, %.2f snapshot writes; %.2f cores busy", c.CPUPerEvent, c.WritesPerEvent, c.Cores)
}

// meter measures a phase's Cost from its start.
type meter struct {
	js             jetstream.JetStream
	cpu            time.Duration
	start          time.Time
	events, writes uint64
}

func startMeter(ctx context.Context, js jetstream.JetStream) (meter, error) {
	events, writes, err := streamMsgs(ctx, js, topology.EventsStream, "KV_"+topology.StatusBucket)
	return meter{js: js, cpu: processCPU(), start: time.Now(), events: events, writes: writes}, err
}

func (m meter) cost(ctx context.Context) (Cost, error) {
	cpu, wall := processCPU()-m.cpu, time.Since(m.start)
	events, writes, err := streamMsgs(ctx, m.js, topology.EventsStream, "KV_"+topology.StatusBucket)
	if err != nil || events == m.events {
		return Cost{}, err
	}
	n := float64(events - m.events)
	return Cost{
		Events:         events - m.events,
		CPUPerEvent:    float64(cpu) / float64(time.Microsecond) / n,
		WritesPerEvent: float64(writes-m.writes) / n,
		Cores:          cpu.Seconds() / wall.Seconds(),
	}, nil
}

// Print writes the result as a table, with each target beside the figure it judges.
func (r Result) Print(w io.Writer) {
	fmt.Fprintf(w, "backlog: %d events\n", r.Events)
	fmt.Fprintf(w, "  raw JetStream durable consume+ack  %9.0f events/s\n", r.RawConsumeAckRate)
	fmt.Fprintf(w, "  Watermill lanes, handler does nothing %6.0f events/s   ratio %.2f x raw\n", r.FloorRate, r.FloorRatio)
	if p := r.Peer; p != nil {
		fmt.Fprintf(w, "  peer: handler per event, KV get+CAS, sync ack %5.0f events/s   ratio %.3f x raw", p.Rate, r.PeerRatio)
		if !p.Complete {
			fmt.Fprintf(w, "   (%d events within its time budget)", p.Events)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "    per event: %.2f snapshot writes, %.3f refused compare-and-sets\n", float64(p.Writes)/float64(max(p.Events, 1)), float64(p.Conflicts)/float64(max(p.Events, 1)))
	}
	fmt.Fprintf(w, "  pipeline WAL -> KV snapshots       %9.0f events/s   ratio %.2f x raw   %s\n", r.PipelineRate, r.Ratio, target(r.Ratio >= TargetPipelineRatio, "target >= %.1f x", TargetPipelineRatio))
	if r.Peer != nil {
		fmt.Fprintf(w, "    pipeline over the peer           %9.1f x                         %s\n", r.PipelineToPeer, target(r.PipelineToPeer >= TargetPeerRatio, "target >= %.0f x", float64(TargetPeerRatio)))
	}
	fmt.Fprintf(w, "    per event: %.2f snapshot writes, %.2f milestone publishes\n", r.SnapshotWritesPerEvent, r.MilestonesPerEvent)
	fmt.Fprintf(w, "    CPU per event (whole process): raw %.1f µs, Watermill floor %.1f µs, pipeline %.1f µs", r.RawCPUPerEvent, r.FloorCPUPerEvent, r.PipelineCPUPerEvent)
	if r.Peer != nil {
		fmt.Fprintf(w, ", peer %.1f µs", r.Peer.CPUPerEvent)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  idle, the pipeline running and nothing published: %.2f cores busy\n", r.IdleCores)
	fmt.Fprintf(w, "  maximum live rate (publish + pipeline) %7.0f events/s   (%.2f of the backlog rate)\n", r.MaxLiveRate, r.MaxLiveRate/r.PipelineRate)
	fmt.Fprintf(w, "    %s (the pipeline falls behind and coalesces)\n", r.SaturateCost)
	fmt.Fprintf(w, "live: publish -> snapshot visible, for events that change a snapshot\n")
	fmt.Fprintf(w, "  fraction  events/s  samples   p50 ms   p99 ms  target                 | CPU µs/event  writes/event  cores\n")
	for _, l := range r.Live {
		tgt := ""
		if ms, ok := TargetLiveP99Ms[l.Fraction]; ok {
			tgt = target(l.P99Ms <= ms, "p99 <= %.0f ms", ms)
		}
		fmt.Fprintf(w, "  %6.2f x  %8.0f  %7d  %7.2f  %7.2f  %-22s | %12.1f  %12.2f  %5.2f\n",
			l.Fraction, l.Rate, l.Samples, l.P50Ms, l.P99Ms, tgt, l.Cost.CPUPerEvent, l.Cost.WritesPerEvent, l.Cost.Cores)
		if l.Stalls > 0 {
			fmt.Fprintf(w, "            the publisher waited for the server %d times: it could not take this rate\n", l.Stalls)
		}
	}
	fmt.Fprintf(w, "reads GET /v1/orders/{id}:\n")
	fmt.Fprintf(w, "  hot (cached)                       p50 %6.3f ms   p99 %6.3f ms\n", r.HotReadP50Ms, r.HotReadP99Ms)
	fmt.Fprintf(w, "  cold (first read)                  p50 %6.3f ms   p99 %6.3f ms\n", r.ColdReadP50Ms, r.ColdReadP99Ms)
	if in := r.Ingest; in != nil {
		fmt.Fprintf(w, "ingest POST /v1/orders/{id}/events, bearer token, answered once stored (%d clients):\n", in.Clients)
		fmt.Fprintf(w, "  raw JetStream async publish        %9.0f events/s\n", in.RawRate)
		fmt.Fprintf(w, "  HTTP ingest API                    %9.0f events/s   ratio %.2f x raw\n", in.HTTPRate, in.Ratio)
		fmt.Fprintf(w, "  one POST at %.0f events/s (0.25 x)   p50 %6.3f ms   p99 %6.3f ms   (%d samples)\n", in.LatencyRate, in.P50Ms, in.P99Ms, in.Samples)
		if in.Late > 0 {
			fmt.Fprintf(w, "    %d requests were sent late, every one of the %d in flight still unanswered: the server fell behind the pacing\n", in.Late, in.Clients)
		}
		if in.Limited > 0 {
			fmt.Fprintf(w, "    %d requests were refused with 429 (rate limited)\n", in.Limited)
		}
	}
	fmt.Fprintf(w, "whole WAL, %d events:\n", r.WALEvents)
	fmt.Fprintf(w, "  raw JetStream durable consume+ack  %9.0f events/s\n", r.RawWholeWALRate)
	fmt.Fprintf(w, "  replay (dry run)                   %9.0f events/s   ratio %.2f x raw\n", r.ReplayRate, r.ReplayRatio)
	if r.Sink != nil {
		fmt.Fprintf(w, "clickhouse sink: %s\n", r.Sink)
	}
}

// target says whether a figure meets its target, e.g. "target >= 0.5 x: met".
func target(met bool, format string, args ...any) string {
	verdict := "met"
	if !met {
		verdict = "NOT met"
	}
	return fmt.Sprintf(format, args...) + ": " + verdict
}

// Run starts a private embedded server in a temp dir and measures every phase.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg.setDefaults()
	var res Result
	topo := topology.Topology{Partitions: cfg.Partitions}
	s, err := startServer(ctx, "orderflow-bench", topo)
	if err != nil {
		return res, err
	}
	defer s.close()
	dir, js, quiet := s.dir, s.js, s.quiet

	// The backlog.
	backlog, _, err := simulate.Generate(simulate.Config{Seed: cfg.Seed, Orders: cfg.Orders})
	if err != nil {
		return res, err
	}
	fmt.Fprintf(cfg.Progress, "publishing a backlog of %d messages...\n", len(backlog))
	if err := simulate.PublishAll(ctx, js, backlog, 0); err != nil {
		return res, err
	}
	// Keep only the order ids: the workload's messages would otherwise sit in this
	// process's heap, which the pipeline shares, and slow every garbage collection
	// the measurement pays for.
	ids := orderIDs(backlog)
	backlog = nil
	info, err := stream(ctx, js)
	if err != nil {
		return res, err
	}
	res.Events = int(info.State.Msgs)

	// (a) raw durable consume + ack of the same backlog.
	fmt.Fprintln(cfg.Progress, "measuring raw JetStream durable consume+ack...")
	cfg.Phase("raw", true)
	cpu := processCPU()
	rawDur, err := rawConsumeAck(ctx, js, res.Events)
	res.RawCPUPerEvent = cpuPerEvent(cpu, res.Events)
	cfg.Phase("raw", false)
	if err != nil {
		return res, err
	}
	res.RawConsumeAckRate = float64(res.Events) / rawDur.Seconds()

	// The floor: the pipeline's Watermill lanes with nothing to do.
	fmt.Fprintln(cfg.Progress, "measuring the Watermill lanes with an empty handler...")
	cfg.Phase("floor", true)
	cpu = processCPU()
	floorDur, err := watermillFloor(ctx, s.url(), topo, res.Events, quiet)
	res.FloorCPUPerEvent = cpuPerEvent(cpu, res.Events)
	cfg.Phase("floor", false)
	if err != nil {
		return res, err
	}
	res.FloorRate = float64(res.Events) / floorDur.Seconds()
	res.FloorRatio = res.FloorRate / res.RawConsumeAckRate

	// The peer, on the same backlog, before the pipeline runs so nothing competes.
	if cfg.PeerSeconds > 0 {
		fmt.Fprintf(cfg.Progress, "measuring the peer: a Watermill handler per event, KV read + compare-and-set, synchronous ack (at most %ds)...\n", cfg.PeerSeconds)
		cfg.Phase("peer", true)
		peer, err := peerPhase(ctx, s.url(), js, topo, res.Events, time.Duration(cfg.PeerSeconds)*time.Second)
		cfg.Phase("peer", false)
		if derr := js.DeleteKeyValue(ctx, peerBucket); err == nil && derr != nil {
			err = fmt.Errorf("remove the peer's bucket: %w", derr)
		}
		if err != nil {
			return res, err
		}
		res.Peer = &peer
		res.PeerRatio = peer.Rate / res.RawConsumeAckRate
	}

	// (b) the pipeline draining the backlog into KV.
	fmt.Fprintln(cfg.Progress, "measuring the pipeline draining the backlog...")
	cfg.Phase("pipeline", true)
	cpu = processCPU()
	start := time.Now()
	httpAddr, stop, err := startPipeline(ctx, s.url(), dir, topo, quiet)
	if err != nil {
		return res, err
	}
	defer stop()
	err = waitDrained(ctx, js)
	res.PipelineRate = float64(res.Events) / time.Since(start).Seconds()
	res.PipelineCPUPerEvent = cpuPerEvent(cpu, res.Events)
	cfg.Phase("pipeline", false)
	if err != nil {
		return res, err
	}
	writes, milestones, err := streamMsgs(ctx, js, "KV_"+topology.StatusBucket, topology.MilestonesStream)
	if err != nil {
		return res, err
	}
	res.SnapshotWritesPerEvent = float64(writes) / float64(res.Events)
	res.MilestonesPerEvent = float64(milestones) / float64(res.Events)
	res.Ratio = res.PipelineRate / res.RawConsumeAckRate
	if res.Peer != nil && res.Peer.Rate > 0 {
		res.PipelineToPeer = res.PipelineRate / res.Peer.Rate
	}

	idleCPU, idleStart := processCPU(), time.Now()
	time.Sleep(time.Second)
	res.IdleCores = (processCPU() - idleCPU).Seconds() / time.Since(idleStart).Seconds()

	// (c) The maximum live rate, then end-to-end latency at fractions of it.
	fmt.Fprintln(cfg.Progress, "measuring the maximum live rate (publishing while the pipeline runs)...")
	cfg.Phase("saturate", true)
	res.MaxLiveRate, res.SaturateCost, err = maxLiveRate(ctx, js, cfg)
	cfg.Phase("saturate", false)
	if err != nil {
		return res, err
	}
	cfg.Phase("live", true)
	for i, f := range cfg.LiveFractions {
		pt := LivePoint{Fraction: f, Rate: res.MaxLiveRate * f}
		fmt.Fprintf(cfg.Progress, "measuring end-to-end latency at %.2f x = %.0f events/s for %ds...\n", f, pt.Rate, cfg.LiveSeconds)
		// Each point publishes orders of its own seed, never seen before.
		pt, err := liveLatency(ctx, js, cfg, cfg.Seed+1000+int64(i), pt)
		if err != nil {
			cfg.Phase("live", false)
			return res, err
		}
		res.Live = append(res.Live, pt)
	}
	cfg.Phase("live", false)

	// Reads.
	fmt.Fprintln(cfg.Progress, "measuring reads...")
	cfg.Phase("reads", true)
	hot, cold, err := readLatency(ctx, httpAddr, ids, cfg.Reads)
	cfg.Phase("reads", false)
	if err != nil {
		return res, err
	}
	res.HotReadP50Ms, res.HotReadP99Ms = quantileMs(hot, 0.50), quantileMs(hot, 0.99)
	res.ColdReadP50Ms, res.ColdReadP99Ms = quantileMs(cold, 0.50), quantileMs(cold, 0.99)

	if cfg.IngestSeconds > 0 {
		fmt.Fprintf(cfg.Progress, "measuring the ingest API against raw publish, then single POSTs at 0.25 x (%ds each)...\n", cfg.IngestSeconds)
		cfg.Phase("ingest", true)
		in, err := ingestPhase(ctx, js, httpAddr, dir, cfg, time.Duration(cfg.IngestSeconds)*time.Second)
		cfg.Phase("ingest", false)
		if err != nil {
			return res, fmt.Errorf("ingest phase: %w", err)
		}
		res.Ingest = &in
	}
	// The remaining phases measure other consumers of the WAL: stop the pipeline
	// so it does not compete with them.
	stop()

	// The WAL now also holds the live phases' events: the replay's baseline is raw
	// consume+ack of the same, whole WAL.
	fmt.Fprintln(cfg.Progress, "measuring raw consume+ack of the whole WAL, then replay...")
	whole, err := stream(ctx, js)
	if err != nil {
		return res, err
	}
	res.WALEvents = int(whole.State.Msgs)
	rawWhole, err := rawConsumeAck(ctx, js, res.WALEvents)
	if err != nil {
		return res, err
	}
	res.RawWholeWALRate = float64(res.WALEvents) / rawWhole.Seconds()
	cfg.Phase("replay", true)
	rep, err := replay.Snapshots(ctx, js, replay.Options{FromSeq: 1, DryRun: true})
	cfg.Phase("replay", false)
	if err != nil {
		return res, err
	}
	res.ReplayRate = float64(rep.Events) / rep.Duration.Seconds()
	res.ReplayRatio = res.ReplayRate / res.RawWholeWALRate

	if cfg.ClickHouseDSN != "" {
		fmt.Fprintln(cfg.Progress, "measuring the ClickHouse sink...")
		conn, err := chsink.Open(ctx, cfg.ClickHouseDSN)
		if err != nil {
			return res, err
		}
		defer conn.Close()
		// The sink's live phase runs at the last live point's rate.
		liveRate := res.Live[len(res.Live)-1].Rate
		sink, err := chsink.Bench(ctx, js, conn, chsink.BenchConfig{
			Events: cfg.SinkEvents, Seed: cfg.Seed + 2000, LiveRate: liveRate, LiveDuration: time.Duration(cfg.LiveSeconds) * time.Second, Logger: quiet,
		})
		if err != nil {
			return res, err
		}
		res.Sink = &sink
	}
	return res, nil
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuPerEvent is the CPU used since start, in µs per event.
func cpuPerEvent(start time.Duration, events int) float64 {
	return float64(processCPU()-start) / float64(time.Microsecond) / float64(events)
}

// streamMsgs returns the last sequence of each stream: every message ever stored.
func streamMsgs(ctx context.Context, js jetstream.JetStream, names ...string) (a, b uint64, err error) {
	var last [2]uint64
	for i, name := range names {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return 0, 0, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0, 0, err
		}
		last[i] = info.State.LastSeq
	}
	return last[0], last[1], nil
}

func stream(ctx context.Context, js jetstream.JetStream) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, topology.EventsStream)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// rawConsumeAck is the baseline: a durable consumer over the whole WAL, acking each
// message without waiting, the cheapest correct way to read it.
func rawConsumeAck(ctx context.Context, js jetstream.JetStream, n int) (time.Duration, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, topology.EventsStream, jetstream.ConsumerConfig{
		Durable: "bench-raw", FilterSubject: topology.WALPrefix + ".>",
		AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20_000,
	})
	if err != nil {
		return 0, err
	}
	defer js.DeleteConsumer(context.Background(), topology.EventsStream, "bench-raw")
	var got atomic.Int64
	done := make(chan struct{})
	start := time.Now()
	cc, err := c.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if got.Add(1) == int64(n) {
			close(done)
		}
	}, jetstream.PullMaxMessages(2000))
	if err != nil {
		return 0, err
	}
	defer cc.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("raw consumer got %d of %d messages", got.Load(), n)
	}
	return time.Since(start), nil
}

// watermillFloor drains the backlog through the pipeline's own lane router, on
// consumers configured as the lanes' are, with a handler that returns at once.
func watermillFloor(ctx context.Context, url string, topo topology.Topology, n int, log *slog.Logger) (time.Duration, error) {
	topo.SetDefaults()
	nc, err := nats.Connect(url)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	name := func(lane int) string { return fmt.Sprintf("bench-floor-%d", lane) }
	for i := 0; i < topo.Partitions; i++ {
		cc := topo.LaneConsumerConfig(i)
		cc.Durable, cc.Description = name(i), "orderflow bench: Watermill floor"
		if _, err := js.CreateOrUpdateConsumer(ctx, topology.EventsStream, cc); err != nil {
			return 0, err
		}
		defer js.DeleteConsumer(context.Background(), topology.EventsStream, name(i))
	}
	// The router drains its connection on stop, so it gets one of its own.
	rc, err := nats.Connect(url)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	var got atomic.Int64
	done := make(chan struct{})
	r, err := newFloorRouter(rc, topo, log, name, func(deliveries int) {
		if now := got.Add(int64(deliveries)); now >= int64(n) && now-int64(deliveries) < int64(n) {
			close(done)
		}
	})
	if err != nil {
		return 0, err
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	start := time.Now()
	go func() { ran <- r.Run(runCtx) }()
	select {
	case <-done:
	case err := <-ran:
		stop()
		return 0, fmt.Errorf("floor router stopped: %v", err)
	case <-time.After(5 * time.Minute):
		stop()
		<-ran
		return 0, fmt.Errorf("floor router got %d of %d messages", got.Load(), n)
	}
	elapsed := time.Since(start)
	stop()
	<-ran
	return elapsed, nil
}

// newFloorRouter is the pipeline's own lane router over consumer(i), with a handler
// that only counts the deliveries it is given. It and startPipeline are the bench's
// only uses of the pipeline's API.
func newFloorRouter(nc *nats.Conn, topo topology.Topology, log *slog.Logger, consumer func(lane int) string, count func(deliveries int)) (interface{ Run(context.Context) error }, error) {
	r, err := pipelines.NewLaneRouter(nc, topo, log, consumer, func(_ context.Context, _ int, batch []handlers.Delivery) error {
		count(len(batch))
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// startPipeline runs serve's pipeline and API until the returned stop is called.
// The ingest API verifies tokens signed by the local key in dataDir (see
// ingestPhase) and its rate limits are out of the bench's reach.
func startPipeline(ctx context.Context, url, dataDir string, topo topology.Topology, log *slog.Logger) (string, func(), error) {
	a, stop, err := startServe(ctx, app.ServeConfig{
		NATSURL: url, DataDir: dataDir, HTTPListen: "127.0.0.1:0", Topology: topo, Logger: log,
		Security: app.SecurityConfig{Limits: benchIngestLimits()},
	})
	return a.HTTP, stop, err
}

// startServe runs app.Serve with cfg until the returned stop is called, and returns
// once it serves, with the addresses it bound.
func startServe(ctx context.Context, cfg app.ServeConfig) (app.Addrs, func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	addrs := make(chan app.Addrs, 1)
	done := make(chan error, 1)
	cfg.Started = func(a app.Addrs) { addrs <- a }
	go func() { done <- app.Serve(ctx, cfg) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	select {
	case a := <-addrs:
		return a, stop, nil
	case err := <-done:
		cancel()
		return app.Addrs{}, func() {}, fmt.Errorf("pipeline did not start: %w", err)
	}
}

// waitDrained returns when the last lane checkpoint is written: the end of every
// throughput measurement.
func waitDrained(ctx context.Context, js jetstream.JetStream) error {
	return pipelines.WaitDrained(ctx, js, 5*time.Minute)
}

// maxLiveRate publishes a fresh workload of half the backlog's size as fast as the
// server acknowledges it, with the pipeline running, and returns stored events per
// second from the first publish until the pipeline has made them all durable.
func maxLiveRate(ctx context.Context, js jetstream.JetStream, cfg Config) (float64, Cost, error) {
	msgs, _, err := simulate.Generate(simulate.Config{Seed: cfg.Seed + 500, Orders: cfg.Orders / 2})
	if err != nil {
		return 0, Cost{}, err
	}
	m, err := startMeter(ctx, js)
	if err != nil {
		return 0, Cost{}, err
	}
	start := time.Now()
	if err := simulate.PublishAll(ctx, js, msgs, 0); err != nil {
		return 0, Cost{}, err
	}
	if err := waitDrained(ctx, js); err != nil {
		return 0, Cost{}, err
	}
	elapsed := time.Since(start)
	cost, err := m.cost(ctx)
	if err != nil {
		return 0, Cost{}, err
	}
	return float64(cost.Events) / elapsed.Seconds(), cost, nil
}

// watchedOrders is about how many orders each live point times.
const watchedOrders = 400

// liveLatency publishes a fresh workload of seed at pt.Rate and measures, for every
// event that changes a snapshot (known from the pure resolver), the time from its
// publish to the first KV update of its order that includes it.
func liveLatency(ctx context.Context, js jetstream.JetStream, cfg Config, seed int64, pt LivePoint) (LivePoint, error) {
	rate := pt.Rate
	orders := int(rate*float64(cfg.LiveSeconds)/9.5) + 1
	msgs, _, err := simulate.Generate(simulate.Config{Seed: seed, Orders: orders, Interleave: 2000})
	if err != nil {
		return pt, err
	}
	sampled, keys := sampleOrders(orderIDs(msgs), watchedOrders)
	snaps, err := watchSnapshots(ctx, js, keys)
	if err != nil {
		return pt, err
	}
	defer snaps.stop()

	type sent struct {
		order  string
		at     time.Time
		future jetstream.PubAckFuture
	}
	var pubs []sent
	stalls := 0
	persist := persistFlags(msgs)
	m, err := startMeter(ctx, js)
	if err != nil {
		return pt, err
	}
	start := time.Now()
	for i, m := range msgs {
		if d := simulate.PaceDelay(i, rate, time.Since(start)); d > 0 {
			time.Sleep(d)
		}
		at := time.Now()
		f, err := js.PublishMsgAsync(m.NatsMsg())
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			// The server holds too many acks back: wait for it, as a producer would.
			// The event's latency counts from its first attempt.
			stalls++
			for errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				select {
				case <-js.PublishAsyncComplete():
				case <-time.After(50 * time.Millisecond):
				case <-ctx.Done():
					return pt, ctx.Err()
				}
				f, err = js.PublishMsgAsync(m.NatsMsg())
			}
		}
		if err != nil {
			return pt, err
		}
		if persist[i] && sampled[m.Event.OrderID] {
			pubs = append(pubs, sent{m.Event.OrderID, at, f})
		}
	}
	<-js.PublishAsyncComplete()
	if err := waitDrained(ctx, js); err != nil {
		return pt, err
	}
	if pt.Cost, err = m.cost(ctx); err != nil {
		return pt, err
	}
	pt.Stalls = stalls
	time.Sleep(200 * time.Millisecond) // let the watcher deliver the last updates
	var lat []time.Duration
	for _, p := range pubs {
		var seq uint64
		select {
		case ack := <-p.future.Ok():
			seq = ack.Sequence
		default:
			continue
		}
		if at, ok := snaps.visible(p.order, seq); ok {
			lat = append(lat, at.Sub(p.at))
		}
	}
	pt.Samples = len(lat)
	pt.P50Ms, pt.P99Ms = quantileMs(lat, 0.50), quantileMs(lat, 0.99)
	return pt, nil
}

// persistFlags marks the messages whose event changes what a snapshot stores, by
// folding the workload with the resolver in publish order.
func persistFlags(msgs []simulate.Message) []bool {
	out := make([]bool, len(msgs))
	verify.EachApplied(msgs, func(i int, _ *resolver.State, d resolver.Decision) { out[i] = d.Persist })
	return out
}

// sampleOrders picks about n of ids, evenly spread: a watcher decoding every
// snapshot would load the machine it measures, and a fixed number gives low rates as
// many samples as high ones.
func sampleOrders(ids []string, n int) (map[string]bool, []string) {
	sampled := map[string]bool{}
	var keys []string
	every := max(1, (len(ids)+n-1)/n)
	for i, id := range ids {
		if i%every == 0 {
			sampled[id] = true
			keys = append(keys, id)
		}
	}
	return sampled, keys
}

// snapshotWatch records when each snapshot write of a set of orders was seen, and
// the WAL sequence it includes.
type snapshotWatch struct {
	w       jetstream.KeyWatcher
	mu      sync.Mutex
	updates map[string][]snapshotSeen
}

type snapshotSeen struct {
	walSeq uint64
	at     time.Time
}

// watchSnapshots watches the status bucket behind js for the orders keys, from now on.
func watchSnapshots(ctx context.Context, js jetstream.JetStream, keys []string) (*snapshotWatch, error) {
	kv, err := js.KeyValue(ctx, topology.StatusBucket)
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchFiltered(ctx, keys, jetstream.UpdatesOnly())
	if err != nil {
		return nil, err
	}
	s := &snapshotWatch{w: w, updates: map[string][]snapshotSeen{}}
	go func() {
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			var v struct {
				WalSeq uint64 `json:"wal_seq"`
			}
			if json.Unmarshal(e.Value(), &v) == nil {
				s.mu.Lock()
				s.updates[e.Key()] = append(s.updates[e.Key()], snapshotSeen{v.WalSeq, time.Now()})
				s.mu.Unlock()
			}
		}
	}()
	return s, nil
}

func (s *snapshotWatch) stop() { _ = s.w.Stop() }

// visible is when order's snapshot was first seen including WAL sequence seq.
func (s *snapshotWatch) visible(order string, seq uint64) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.updates[order] {
		if u.walSeq >= seq {
			return u.at, true
		}
	}
	return time.Time{}, false
}

func orderIDs(msgs []simulate.Message) []string {
	seen := map[string]bool{}
	var ids []string
	for _, m := range msgs {
		if m.Invalid == "" && !seen[m.Event.OrderID] {
			seen[m.Event.OrderID] = true
			ids = append(ids, m.Event.OrderID)
		}
	}
	return ids
}

// readLatency times GET /v1/orders/{id}: hot reads repeat a few cached orders (up to
// 50, at most half the backlog's), cold reads touch each other order for the first time.
func readLatency(ctx context.Context, addr string, ids []string, n int) (hot, cold []time.Duration, err error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	get := func(id string) (time.Duration, error) {
		start := time.Now()
		resp, err := client.Get("http://" + addr + "/v1/orders/" + id)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("GET order %s: %s", id, resp.Status)
		}
		return time.Since(start), nil
	}
	if len(ids) < 2 {
		return nil, nil, fmt.Errorf("reads need at least 2 orders, the backlog has %d", len(ids))
	}
	// The last hotN orders are the hot set; cold reads take the others, each once.
	hotN := min(50, len(ids)/2)
	coldN := min(n, len(ids)-hotN)
	for _, id := range ids[:coldN] {
		d, err := get(id)
		if err != nil {
			return nil, nil, err
		}
		cold = append(cold, d)
	}
	hotIDs := ids[len(ids)-hotN:]
	for _, id := range hotIDs { // warm them
		if _, err := get(id); err != nil {
			return nil, nil, err
		}
	}
	for i := 0; i < n; i++ {
		d, err := get(hotIDs[i%len(hotIDs)])
		if err != nil {
			return nil, nil, err
		}
		hot = append(hot, d)
	}
	return hot, cold, ctx.Err()
}

func quantileMs(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[int(q*float64(len(s)-1))].Microseconds()) / 1000
}
