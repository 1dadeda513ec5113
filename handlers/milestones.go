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

// MilestonePublisher sends outbox entries to ORDER_MILESTONES.
type MilestonePublisher struct {
	js jetstream.JetStream
}

// NewMilestonePublisher returns a publisher.
func NewMilestonePublisher(js jetstream.JetStream) *MilestonePublisher {
	return &MilestonePublisher{js: js}
}

// Publish sends one milestone with a deterministic Nats-Msg-Id. The stream keeps one
// message per subject and refuses others, so a retry after any crash, or a second
// relay racing this one, cannot add a second copy: both "duplicate" and "subject
// full" mean the milestone is already out, which is success.
func (p *MilestonePublisher) Publish(ctx context.Context, orderID, kind string) error {
	m := nats.NewMsg(outbox.Subject(orderID, kind))
	m.Header.Set(nats.MsgIdHdr, outbox.MsgID(orderID, kind))
	m.Data = []byte(fmt.Sprintf(`{"order_id":%q,"milestone":%q,"milestone_id":%q}`, orderID, kind, outbox.MsgID(orderID, kind)))
	_, err := p.js.PublishMsg(ctx, m)
	if err == nil || alreadyPublished(err) {
		return nil
	}
	return fmt.Errorf("publish milestone %s of %s: %w", kind, orderID, err)
}

func alreadyPublished(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum messages per subject exceeded")
}
