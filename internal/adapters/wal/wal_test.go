package wal_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

const partitions = 3

// stored is a provisioned WAL and the sequences of each order's events.
type stored struct {
	env  *testenv.NATSEnv
	log  *wal.Log
	seqs map[string][]uint64
	all  []uint64
	at   []time.Time // store time of each event, by position in all
}

// newWAL publishes events round-robin over orders o-0..o-(n-1), each event its own
// (order, source_seq), with a pause before event gap so SeqAtTime has a boundary.
func newWAL(t testing.TB, orders, events int) *stored {
	t.Helper()
	env := testenv.NATS(t)
	ctx := context.Background()
	if _, err := topology.Provision(ctx, env.JS, topology.Topology{Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	s := &stored{env: env, seqs: map[string][]uint64{}}
	for i := range events {
		id := fmt.Sprintf("o-%d", i%orders)
		body := fmt.Sprintf(`{"schema_version":1,"event_id":"e-%d","order_id":"%s","source":"estimator","source_seq":%d,"occurred_at":"2026-11-28T12:00:00Z","eta":"2026-11-28T12:30:00Z"}`, i, id, i+1)
		ack, err := env.JS.Publish(ctx, schemas.Subject(schemas.SourceEstimator, id), []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		s.seqs[id] = append(s.seqs[id], ack.Sequence)
		s.all = append(s.all, ack.Sequence)
	}
	var err error
	if s.log, err = wal.Open(ctx, env.JS); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPartitionIsTheServers: every stored subject's partition token is what
// Partition computes, and Open learns the partition count from the stream.
func TestPartitionIsTheServers(t *testing.T) {
	s := newWAL(t, 20, 20)
	if s.log.Partitions() != partitions {
		t.Fatalf("Partitions() = %d, want %d", s.log.Partitions(), partitions)
	}
	err := wal.ReadRange(context.Background(), s.env.JS, topology.WALPrefix+".>", 1, s.all[len(s.all)-1], func(r wal.Record) error {
		_, id, err := schemas.ParseSubject(schemas.ProducerSubject(r.Subject))
		if err != nil {
			return err
		}
		if want := fmt.Sprintf("%s.%d.", topology.WALPrefix, wal.Partition(id, partitions)); !strings.HasPrefix(r.Subject, want) {
			return fmt.Errorf("%s stored as %s, Partition says %s*", id, r.Subject, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestReadOrder(t *testing.T) {
	s := newWAL(t, 3, 12)
	ctx := context.Background()
	read := func(id string, after, upto uint64) []uint64 {
		t.Helper()
		var got []uint64
		err := s.log.ReadOrder(ctx, id, after, upto, func(r wal.Record) error {
			if r.Data == nil || r.Time.IsZero() || !strings.HasSuffix(r.Subject, "."+id) {
				return fmt.Errorf("record %+v is not one of %s's events", r, id)
			}
			got = append(got, r.Seq)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	want := s.seqs["o-1"] // 2, 5, 8, 11
	for _, tc := range []struct {
		after, upto uint64
		want        []uint64
	}{
		{0, 0, want},
		{want[0], 0, want[1:]},
		{0, want[2], want[:3]},
		{want[0], want[2] - 1, want[1:2]},
		{want[3], 0, nil},
	} {
		if got := read("o-1", tc.after, tc.upto); !reflect.DeepEqual(got, tc.want) {
			t.Fatalf("ReadOrder(o-1, %d, %d) = %v, want %v", tc.after, tc.upto, got, tc.want)
		}
	}
	if got := read("o-none", 0, 0); got != nil {
		t.Fatalf("ReadOrder of an order with no events = %v", got)
	}
	stop := errors.New("stop")
	calls := 0
	err := s.log.ReadOrder(ctx, "o-1", 0, 0, func(wal.Record) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("ReadOrder with fn failing = %v after %d calls, want fn's error after 1", err, calls)
	}
}

func TestFirstAndLastSeq(t *testing.T) {
	s := newWAL(t, 3, 9)
	ctx := context.Background()
	for id, seqs := range s.seqs {
		first, err := s.log.FirstSeq(ctx, id)
		if err != nil || first != seqs[0] {
			t.Fatalf("FirstSeq(%s) = %d, %v; want %d", id, first, err, seqs[0])
		}
		last, err := s.log.LastSeq(ctx, id)
		if err != nil || last != seqs[len(seqs)-1] {
			t.Fatalf("LastSeq(%s) = %d, %v; want %d", id, last, err, seqs[len(seqs)-1])
		}
	}
	for _, f := range []func(context.Context, string) (uint64, error){s.log.FirstSeq, s.log.LastSeq} {
		if seq, err := f(ctx, "o-none"); seq != 0 || err != nil {
			t.Fatalf("an order with no events: %d, %v; want 0", seq, err)
		}
	}
}

func TestReadRange(t *testing.T) {
	s := newWAL(t, 4, 40)
	ctx := context.Background()
	read := func(filter string, from, upto uint64) []uint64 {
		t.Helper()
		var got []uint64
		if err := wal.ReadRange(ctx, s.env.JS, filter, from, upto, func(r wal.Record) error {
			got = append(got, r.Seq)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	all := topology.WALPrefix + ".>"
	if got := read(all, 1, 40); !reflect.DeepEqual(got, s.all) {
		t.Fatalf("the whole WAL: %v, want %v", got, s.all)
	}
	if got := read(all, 11, 20); !reflect.DeepEqual(got, s.all[10:20]) {
		t.Fatalf("11..20: %v", got)
	}
	if got := read(all, 20, 19); got != nil {
		t.Fatalf("an empty range read %v", got)
	}
	if got := read(all, 41, 100); got != nil {
		t.Fatalf("past the end read %v", got)
	}
	// One lane: exactly the events of the orders in its partition.
	p := wal.Partition("o-2", partitions)
	var want []uint64
	for _, seq := range s.all {
		id := fmt.Sprintf("o-%d", (seq-1)%4)
		if wal.Partition(id, partitions) == p {
			want = append(want, seq)
		}
	}
	if got := read(topology.LaneSubject(p), 1, 40); !reflect.DeepEqual(got, want) {
		t.Fatalf("lane %d: %v, want %v", p, got, want)
	}
	// Purged events in the range (the archive does that) end the read instead of
	// leaving it waiting for them.
	stream, err := s.env.JS.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(s.log.OrderFilter("o-3"))); err != nil {
		t.Fatal(err)
	}
	got := read(all, 1, 40)
	if len(got) != 30 {
		t.Fatalf("after purging o-3's 10 events the WAL reads %d, want 30", len(got))
	}
	stop := errors.New("stop")
	if err := wal.ReadRange(ctx, s.env.JS, all, 1, 40, func(wal.Record) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("ReadRange with fn failing = %v, want fn's error", err)
	}
}

func TestSeqAtTime(t *testing.T) {
	s := newWAL(t, 2, 4)
	ctx := context.Background()
	time.Sleep(20 * time.Millisecond) // WAL times come from the server's clock
	between := time.Now()
	time.Sleep(20 * time.Millisecond)
	ack, err := s.env.JS.Publish(ctx, schemas.Subject(schemas.SourcePlatform, "o-late"), []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at   time.Time
		want uint64
	}{
		{time.Now().Add(-time.Hour), 1},
		{between, ack.Sequence},
		{time.Now().Add(time.Hour), ack.Sequence + 1},
	} {
		got, err := wal.SeqAtTime(ctx, s.env.JS, tc.at)
		if err != nil || got != tc.want {
			t.Fatalf("SeqAtTime(%s) = %d, %v; want %d", tc.at, got, err, tc.want)
		}
	}
}

// TestStoredHeaders: what a pinned lane consumer delivers, less the pin id it
// adds, is what the WAL stored, a producer's own headers included.
func TestStoredHeaders(t *testing.T) {
	s := newWAL(t, 1, 0)
	ctx := context.Background()
	m := nats.NewMsg(schemas.Subject(schemas.SourcePlatform, "o-1"))
	m.Data = []byte(`{}`)
	m.Header.Set("Nats-Msg-Id", "e-1")
	m.Header.Set("X-Trace", "abc")
	m.Header["Nats-Pin-Id"] = []string{"forged"}
	ack, err := s.env.JS.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := s.env.JS.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := stream.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	c, err := stream.Consumer(ctx, topology.LaneConsumer(wal.Partition("o-1", partitions)))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(topology.LaneGroup))
	if err != nil {
		t.Fatal(err)
	}
	var got nats.Header
	for msg := range batch.Messages() {
		got = msg.Headers()
		if pins := got["Nats-Pin-Id"]; len(pins) != 2 || pins[0] != "forged" {
			t.Fatalf("delivered Nats-Pin-Id %v, want the producer's then the consumer's", pins)
		}
		got = wal.StoredHeaders(got)
	}
	if err := batch.Error(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, raw.Header) {
		t.Fatalf("StoredHeaders gave %v, the WAL stored %v", got, raw.Header)
	}
	// Without a pin (an unpinned reader), headers are left as they are.
	h := nats.Header{"X-Trace": {"abc"}}
	if got := wal.StoredHeaders(h); !reflect.DeepEqual(got, nats.Header{"X-Trace": {"abc"}}) {
		t.Fatalf("StoredHeaders of unpinned headers: %v", got)
	}
}

// TestFollow: Follow reads the WAL in order from where it is told, skips what the
// archive purged (in the middle and below the first sequence), waits at the end for
// what comes next, and stops on fn's error or when its context ends.
func TestFollow(t *testing.T) {
	s := newWAL(t, 4, 150)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := s.env.JS.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(s.log.OrderFilter("o-3"))); err != nil {
		t.Fatal(err)
	}
	var want []uint64
	for _, seq := range s.all[5:] {
		if (seq-1)%4 != 3 {
			want = append(want, seq)
		}
	}
	got := make(chan uint64, 1000)
	done := make(chan error, 1)
	go func() {
		done <- wal.Follow(ctx, s.env.JS, s.all[5], wal.FollowConfig{Window: 16, Idle: 10 * time.Millisecond}, func(r wal.Record) error {
			if !strings.HasPrefix(r.Subject, topology.WALPrefix+".") || len(r.Data) == 0 {
				return fmt.Errorf("record %d: subject %q, %d bytes", r.Seq, r.Subject, len(r.Data))
			}
			got <- r.Seq
			return nil
		})
	}()
	receive := func(want []uint64) {
		t.Helper()
		for _, w := range want {
			select {
			case seq := <-got:
				if seq != w {
					t.Fatalf("followed %d, want %d", seq, w)
				}
			case err := <-done:
				t.Fatalf("Follow returned %v before %d", err, w)
			case <-time.After(30 * time.Second):
				t.Fatalf("nothing followed after waiting for %d", w)
			}
		}
	}
	receive(want)
	// At the end it waits; what is published next arrives.
	body := `{"schema_version":1,"event_id":"e-new","order_id":"o-1","source":"estimator","source_seq":1000,"occurred_at":"2026-11-28T12:00:00Z","eta":"2026-11-28T12:30:00Z"}`
	ack, err := s.env.JS.Publish(ctx, schemas.Subject(schemas.SourceEstimator, "o-1"), []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	receive([]uint64{ack.Sequence})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Follow after its context ended = %v, want nil", err)
	}
	// Below the first sequence (purged) it starts at the first; fn's error ends it.
	if err := stream.Purge(context.Background(), jetstream.WithPurgeSequence(100)); err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	var first uint64
	err = wal.Follow(context.Background(), s.env.JS, 1, wal.FollowConfig{}, func(r wal.Record) error {
		first = r.Seq
		return stop
	})
	if !errors.Is(err, stop) || first != info.State.FirstSeq || first < 100 {
		t.Fatalf("Follow from 1 after purging below 100: first %d, err %v; want %d and fn's error", first, err, info.State.FirstSeq)
	}
}

// BenchmarkFollow: how fast a reader without consumers (the estimator) follows a
// WAL already written, one STREAM.MSG.GET per message, a window in flight.
func BenchmarkFollow(b *testing.B) {
	const events = 20_000
	s := newWAL(b, 100, events)
	stop := errors.New("read all")
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		n := 0
		err := wal.Follow(context.Background(), s.env.JS, 1, wal.FollowConfig{}, func(wal.Record) error {
			if n++; n == events {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*events)/time.Since(start).Seconds(), "events/s")
}
