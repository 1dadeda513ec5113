package wal

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/retry"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// FollowConfig tunes Follow.
type FollowConfig struct {
	// Window is how many reads are in flight at once; default 64.
	Window int
	// Idle is how long Follow waits at the end of the WAL, or after a failed read,
	// before looking again; default 50ms.
	Idle time.Duration
	// OnError hears of a failed read before it is retried; may be nil.
	OnError func(error)
}

func (c *FollowConfig) setDefaults() {
	if c.Window <= 0 {
		c.Window = 64
	}
	if c.Idle <= 0 {
		c.Idle = 50 * time.Millisecond
	}
}

// Follow calls fn for every WAL message from sequence from on, in WAL order, until
// ctx ends (it then returns nil) or fn fails (it returns that error). It reads the
// messages by sequence (STREAM.MSG.GET, Window at a time), never through a
// consumer: a client whose credentials may not create or drive consumers, such as
// the estimator's, follows the WAL without any power over the pipeline's own
// consumers (a right to create consumers on a stream cannot be limited by name: the
// legacy create request takes the name from its body). A request per message:
// BenchmarkFollow measures what that allows.
// Sequences the archive purged are skipped; failed reads are retried after Idle.
func Follow(ctx context.Context, js jetstream.JetStream, from uint64, cfg FollowConfig, fn func(Record) error) error {
	cfg.setDefaults()
	next, last := max(from, 1), uint64(0)
	var stream jetstream.Stream
	backOff := func(err error) bool {
		if cfg.OnError != nil && ctx.Err() == nil {
			cfg.OnError(err)
		}
		return retry.Sleep(ctx, cfg.Idle)
	}
	for ctx.Err() == nil {
		if stream == nil {
			s, err := js.Stream(ctx, topology.EventsStream)
			if err != nil {
				if !backOff(fmt.Errorf("follow WAL: %w", err)) {
					break
				}
				continue
			}
			stream = s
		}
		if next > last {
			info, err := stream.Info(ctx)
			if err != nil {
				if !backOff(fmt.Errorf("follow WAL: %w", err)) {
					break
				}
				continue
			}
			last = info.State.LastSeq
			next = max(next, info.State.FirstSeq)
			if next > last {
				if !retry.Sleep(ctx, cfg.Idle) {
					break
				}
				continue
			}
		}
		end := min(last, next+uint64(cfg.Window)-1)
		msgs, errs := getRange(ctx, stream, next, end)
		for i, m := range msgs {
			if errors.Is(errs[i], jetstream.ErrMsgNotFound) {
				next++ // purged
				continue
			}
			if errs[i] != nil {
				if !backOff(fmt.Errorf("follow WAL at %d: %w", next, errs[i])) {
					return nil
				}
				break
			}
			if err := fn(Record{Seq: m.Sequence, Subject: m.Subject, Data: m.Data, Header: m.Header, Time: m.Time}); err != nil {
				return err
			}
			next = m.Sequence + 1
		}
	}
	return nil
}

// getRange reads sequences from..to at once, one request each.
func getRange(ctx context.Context, s jetstream.Stream, from, to uint64) ([]*jetstream.RawStreamMsg, []error) {
	n := int(to - from + 1)
	msgs, errs := make([]*jetstream.RawStreamMsg, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs[i], errs[i] = s.GetMsg(ctx, from+uint64(i))
		}()
	}
	wg.Wait()
	return msgs, errs
}
