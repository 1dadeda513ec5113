package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/retry"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// FollowMilestones gives back the dasher of every order that is delivered or
// cancelled, until ctx ends. It follows the status pipeline's decision, not the
// raw events: ORDER_MILESTONES has each order's delivered or cancelled exactly once
// when the resolver says the order reached it (a rejected or overridden event
// never frees a dasher). The durable consumer is shared by every instance and
// acknowledged after the release, so a crash repeats a release, which is harmless,
// and never skips one. It never gives up: a stream that is gone for a while (a
// region's milestone handover removes and recreates it) or any JetStream error is
// logged, counted (orderflow_dispatch_release_follow_retries_total) and tried
// again with a backoff, rather than stopping serve; dashers are freed late, or by
// their lease's ConfirmedTTL, meanwhile. It returns nil when ctx ends.
func (d *Dispatcher) FollowMilestones(ctx context.Context) error {
	for ctx.Err() == nil {
		var lost <-chan struct{}
		_ = retry.Do(ctx, followBackoff, func(ctx context.Context, attempt int) error {
			var err error
			if lost, err = d.followMilestones(ctx); err != nil && ctx.Err() == nil {
				d.followRetries.Inc()
				d.cfg.Logger.Warn("dispatch: following the milestones failed; trying again", "err", err, "attempt", attempt+1)
			}
			return err
		})
		if lost == nil {
			continue // ctx ended
		}
		select {
		case <-ctx.Done():
		case <-lost:
			// The consumer was deleted (by hand, or with its stream): create it
			// again rather than stop releasing.
		}
	}
	return nil
}

// followBackoff paces FollowMilestones' attempts while the stream is away.
var followBackoff = retry.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}

// followMilestones consumes until ctx ends or the consumer goes away, which the
// returned channel reports.
func (d *Dispatcher) followMilestones(ctx context.Context) (lost <-chan struct{}, err error) {
	cons, err := d.js.CreateOrUpdateConsumer(ctx, topology.MilestonesStream, topology.Topology{}.ReleaseConsumerConfig())
	if err != nil {
		return nil, fmt.Errorf("follow milestones: %w", err)
	}
	gone := make(chan struct{})
	var once sync.Once
	cc, err := cons.Consume(func(m jetstream.Msg) {
		subject := m.Subject()
		orderID := subject[strings.LastIndexByte(subject, '.')+1:]
		if err := d.ReleaseOrder(ctx, orderID); err != nil {
			_ = m.NakWithDelay(time.Second)
			return
		}
		_ = m.Ack()
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			once.Do(func() { close(gone) })
		}
	}))
	if err != nil {
		return nil, fmt.Errorf("follow milestones: %w", err)
	}
	go func() {
		select {
		case <-ctx.Done():
		case <-gone:
		}
		cc.Stop()
	}()
	return gone, nil
}

// ReleaseOrder frees the dasher whose lease names order id, if one does: the last
// dasher of its dispatch record (an earlier one declined, expired or was given back).
func (d *Dispatcher) ReleaseOrder(ctx context.Context, id string) error {
	rec, err := d.Record(ctx, id)
	if err != nil || rec.DasherID == "" {
		return err
	}
	for range 8 {
		err := d.Release(ctx, id, rec.DasherID)
		if !errors.Is(err, ErrNoLease) {
			if err == nil {
				d.released.Inc()
			}
			return err
		}
		// No lease for the order, or it changed between the read and the delete
		// (the dasher accepted meanwhile): look again.
		if _, _, err := d.leaseFor(ctx, id, rec.DasherID); errors.Is(err, ErrNoLease) {
			return nil
		}
	}
	return ErrContended
}
