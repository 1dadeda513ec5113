package handlers

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// milestone is one outbox entry for the relay to publish.
type milestone struct {
	orderID string
	kind    string
}

// runRelay publishes milestones whose outbox entry is durable, then tells the core,
// whose order's next write clears them. A crash anywhere in between leaves them in
// the outbox; the lane publishes them again after its resync, and the milestone
// stream's one-message-per-subject rule makes the retry a no-op.
func (l *Lane) runRelay(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.relayKick:
		}
		l.mu.Lock()
		queue := l.relayQueue
		l.relayQueue = nil
		l.mu.Unlock()
		// Pipelined: send them all, then settle each; a failed one goes back in the
		// queue for the next round.
		futures := make([]jetstream.PubAckFuture, len(queue))
		sendErrs := make([]error, len(queue))
		for i, m := range queue {
			futures[i], sendErrs[i] = l.d.Milestones.PublishAsync(m.orderID, m.kind)
		}
		var failed []milestone
		for i, m := range queue {
			err := sendErrs[i]
			if err == nil {
				err = l.d.Milestones.Settle(ctx, futures[i])
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				l.log.Warn("milestone not published, retrying", "order", m.orderID, "milestone", m.kind, "err", err)
				failed = append(failed, m)
				continue
			}
			l.d.Failpoints.Hit(FailAfterMilestonePublish)
			l.d.Metrics.Milestones.WithLabelValues(m.kind).Inc()
			l.mu.Lock()
			l.core.Published(m.orderID, m.kind)
			l.mu.Unlock()
			signal(l.settled)
		}
		if len(failed) > 0 {
			l.mu.Lock()
			l.relayQueue = append(failed, l.relayQueue...)
			l.mu.Unlock()
			time.AfterFunc(l.cfg.RetryBackoff, func() { signal(l.relayKick) })
		}
	}
}
