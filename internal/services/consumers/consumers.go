// Package consumers holds the two example downstream services of ORDER_MILESTONES,
// billing and notifications. They show the pattern a real service should copy: a
// durable consumer, an idempotent effect keyed by the milestone id (KV create, which
// fails if the key exists), and an ack only after the effect is recorded. Redelivery
// after any crash then finds the key and only acks.
package consumers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers"
	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// Service is one downstream consumer.
type Service struct {
	// Name is the durable consumer name and the prefix of its KV bucket.
	Name string
	// Kinds are the milestone kinds it reacts to.
	Kinds []string
	// Effect describes what the service does for a milestone, e.g. "charge".
	Effect func(kind string) string
	// Failpoints crash the service at named points in fault tests; nil otherwise.
	Failpoints handlers.Failpoints
}

// Billing charges on delivered (and reinstated) and refunds a revoked delivery.
var Billing = Service{
	Name:  "billing",
	Kinds: []string{"delivered", "delivered" + outbox.Revoked, "delivered" + outbox.Reinstated},
	Effect: func(kind string) string {
		if strings.HasSuffix(kind, outbox.Revoked) {
			return "refund"
		}
		return "charge"
	},
}

// Notifications tells the customer about every milestone.
var Notifications = Service{
	Name: "notifications",
	Effect: func(kind string) string {
		return "notify " + kind
	},
}

// Record is one effect a service performed, stored under its milestone id.
type Record struct {
	MilestoneID string    `json:"milestone_id"`
	OrderID     string    `json:"order_id"`
	Kind        string    `json:"kind"`
	Effect      string    `json:"effect"`
	At          time.Time `json:"at"`
}

// Bucket is the KV bucket holding a service's effects.
func (s Service) Bucket() string { return s.Name + "_ledger" }

// Run consumes milestones until ctx ends, writing one line per new effect to out.
func (s Service) Run(ctx context.Context, js jetstream.JetStream, out io.Writer) error {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: s.Bucket(), Description: "orderflow example " + s.Name + " effects, by milestone id", Storage: jetstream.FileStorage,
	})
	if err != nil {
		return fmt.Errorf("%s ledger: %w", s.Name, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable: s.Name, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 5 * time.Second,
		FilterSubject: topology.MilestonesPrefix + ".>",
	}
	if len(s.Kinds) > 0 {
		cfg.FilterSubject = ""
		for _, k := range s.Kinds {
			cfg.FilterSubjects = append(cfg.FilterSubjects, topology.MilestonesPrefix+"."+k+".*")
		}
	}
	c, err := js.CreateOrUpdateConsumer(ctx, topology.MilestonesStream, cfg)
	if err != nil {
		return fmt.Errorf("%s consumer: %w", s.Name, err)
	}
	it, err := c.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	context.AfterFunc(ctx, it.Stop)
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := s.handle(ctx, kv, m, out); err != nil {
			_ = m.Nak()
			continue
		}
		_ = m.Ack()
	}
}

func (s Service) handle(ctx context.Context, kv jetstream.KeyValue, m jetstream.Msg, out io.Writer) error {
	rest := strings.TrimPrefix(m.Subject(), topology.MilestonesPrefix+".")
	kind, orderID, ok := strings.Cut(rest, ".")
	if !ok {
		return nil // not a milestone subject: nothing to do, ack it
	}
	rec := Record{MilestoneID: outbox.MsgID(orderID, kind), OrderID: orderID, Kind: kind, Effect: s.Effect(kind), At: time.Now().UTC()}
	b, _ := json.Marshal(rec)
	_, err := kv.Create(ctx, rec.MilestoneID, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil // done before a crash or redelivery: the effect happened once
	}
	if err != nil {
		return err
	}
	s.Failpoints.Hit(handlers.FailConsumerAfterRecord)
	fmt.Fprintf(out, "%s: %s for order %s (%s)\n", s.Name, rec.Effect, orderID, kind)
	return nil
}

// Ledger reads every effect a service recorded.
func (s Service) Ledger(ctx context.Context, js jetstream.JetStream) ([]Record, error) {
	kv, err := js.KeyValue(ctx, s.Bucket())
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []Record
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			return nil, err
		}
		var r Record
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
