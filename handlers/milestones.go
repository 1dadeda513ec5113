package handlers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/outbox"
)

// MilestonePublisher sends outbox entries to ORDER_MILESTONES, or, in a region that
// is not the milestones home, to the queue its forwarder moves to the home's
// (pipelines/topology milestones.go).
type MilestonePublisher struct {
	js     jetstream.JetStream
	prefix string
}

// NewMilestonePublisher returns a publisher to subjects <prefix>.<kind>.<order_id>:
// topology.Topology.MilestonesPublishPrefix.
func NewMilestonePublisher(js jetstream.JetStream, prefix string) *MilestonePublisher {
	return &MilestonePublisher{js: js, prefix: prefix}
}

// PublishAsync sends one milestone with a deterministic Nats-Msg-Id without waiting;
// Settle waits for the answer. The stream keeps one message per subject and refuses
// others, so a retry after any crash, or a second relay racing this one, cannot add
// a second copy: both "duplicate" and "subject full" mean the milestone is already
// out, which is success.
func (p *MilestonePublisher) PublishAsync(orderID, kind string) (jetstream.PubAckFuture, error) {
	m := nats.NewMsg(p.prefix + "." + kind + "." + orderID)
	m.Header.Set(nats.MsgIdHdr, outbox.MsgID(orderID, kind))
	m.Data = []byte(fmt.Sprintf(`{"order_id":%q,"milestone":%q,"milestone_id":%q}`, orderID, kind, outbox.MsgID(orderID, kind)))
	f, err := p.js.PublishMsgAsync(m)
	if err != nil {
		return nil, fmt.Errorf("publish milestone %s of %s: %w", kind, orderID, err)
	}
	return f, nil
}

// Settle waits for a PublishAsync answer; nil means the milestone is in the stream.
func (p *MilestonePublisher) Settle(ctx context.Context, f jetstream.PubAckFuture) error {
	if f == nil {
		return errors.New("milestone publish was not sent")
	}
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		if SubjectFull(err) {
			return nil
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Publish sends one milestone and waits: PublishAsync then Settle.
func (p *MilestonePublisher) Publish(ctx context.Context, orderID, kind string) error {
	f, err := p.PublishAsync(orderID, kind)
	if err != nil {
		return err
	}
	return p.Settle(ctx, f)
}

// SubjectFull reports the ledger's answer to a milestone it holds already
// ("maximum messages per subject exceeded"). Only the stream that answered is known
// to hold it: a caller that must know which one checks there.
func SubjectFull(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum messages per subject exceeded")
}
