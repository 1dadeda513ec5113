package topology

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrIncompatible means the existing topology cannot be changed to the requested one
// in place; the error text says why and what to do.
var ErrIncompatible = errors.New("incompatible topology change")

// Change describes what Provision did to one resource.
type Change struct {
	Resource string // e.g. "stream ORDER_EVENTS"
	Action   string // "created", "updated", "unchanged", or "ensured" (brought to the wanted config)
}

// Provision creates or updates every stream, bucket and lane consumer of t.
// It is safe to run from several instances at once. While a partition growth is
// under way it changes nothing and fails with ErrGrowing.
func Provision(ctx context.Context, js jetstream.JetStream, t Topology) ([]Change, error) {
	t.SetDefaults()
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if err := refuseDuringGrowth(ctx, js); err != nil {
		return nil, err
	}
	var changes []Change
	streams, err := t.streamsInOrder(ctx, js)
	if err != nil {
		return nil, err
	}
	for _, cfg := range streams {
		c, err := provisionStream(ctx, js, cfg)
		if err != nil {
			return changes, err
		}
		changes = append(changes, c)
	}
	for _, cfg := range append([]jetstream.KeyValueConfig{t.StatusBucketConfig(), t.LanesBucketConfig(), t.ArchiveBucketConfig()}, t.DispatchBuckets()...) {
		c, err := provisionBucket(ctx, js, cfg)
		if err != nil {
			return changes, err
		}
		changes = append(changes, c)
	}
	for p := 0; p < t.Partitions; p++ {
		c, err := provisionConsumer(ctx, js, EventsStream, t.LaneConsumerConfig(p))
		if err != nil {
			return changes, err
		}
		changes = append(changes, c)
	}
	return changes, nil
}

func provisionStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (Change, error) {
	res := "stream " + want.Name
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return Change{}, fmt.Errorf("create %s: %w", res, err)
		}
		return Change{res, "created"}, nil
	}
	if err != nil {
		return Change{}, fmt.Errorf("look up %s: %w", res, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return Change{}, fmt.Errorf("info %s: %w", res, err)
	}
	have := info.Config
	want = KeepPromotion(have, want)
	if why := incompatibleStream(have, want, info.State.Msgs); why != "" {
		return Change{}, fmt.Errorf("%s: %w: %s", res, ErrIncompatible, why)
	}
	if streamEqual(have, want) {
		return Change{res, "unchanged"}, nil
	}
	if _, err := js.UpdateStream(ctx, want); err != nil {
		return Change{}, fmt.Errorf("update %s (JetStream refused: %w); change it back or migrate the stream", res, err)
	}
	return Change{res, "updated"}, nil
}

// KeepPromotion carries a promoted ledger's record (MetaEpoch and the rest) into
// a configuration that replaces it (provisioning, regions.Guard): it outlives
// restarts.
func KeepPromotion(have, want jetstream.StreamConfig) jetstream.StreamConfig {
	if want.Name != MilestonesStream || have.Metadata[MetaEpoch] == "" {
		return want
	}
	md := map[string]string{}
	for k, v := range want.Metadata {
		md[k] = v
	}
	for _, k := range []string{MetaMilestonesHome, MetaPromotedFrom, MetaEpoch} {
		md[k] = have.Metadata[k]
	}
	want.Metadata = md
	return want
}

// incompatibleStream explains changes JetStream would accept but that would break orderflow.
func incompatibleStream(have, want jetstream.StreamConfig, msgs uint64) string {
	if have.Storage != want.Storage {
		return fmt.Sprintf("storage is %s, wanted %s; storage cannot change in place", have.Storage, want.Storage)
	}
	if want.Name == EventsStream && msgs > 0 && transformDest(have) != transformDest(want) {
		return fmt.Sprintf("partitioning is %q but %q was requested, and the stream holds %d events: "+
			"events of one order would be split across lanes and lose their order. "+
			"Keep the old partition count, or grow it with `orderflow partitions grow --to N` (every serve stopped)", transformDest(have), transformDest(want), msgs)
	}
	return ""
}

func transformDest(c jetstream.StreamConfig) string {
	if c.SubjectTransform == nil {
		return ""
	}
	return c.SubjectTransform.Destination
}

// streamEqual compares the fields orderflow sets; the server fills in others.
func streamEqual(a, b jetstream.StreamConfig) bool {
	return fmt.Sprint(a.Subjects) == fmt.Sprint(b.Subjects) &&
		transformDest(a) == transformDest(b) &&
		a.Replicas == b.Replicas && a.Duplicates == b.Duplicates &&
		unlimited(int64(a.MaxMsgSize)) == unlimited(int64(b.MaxMsgSize)) && a.MaxAge == b.MaxAge &&
		unlimited(a.MaxBytes) == unlimited(b.MaxBytes) &&
		unlimited(a.MaxMsgsPerSubject) == unlimited(b.MaxMsgsPerSubject) && a.Discard == b.Discard &&
		a.DiscardNewPerSubject == b.DiscardNewPerSubject && a.Description == b.Description &&
		a.AllowDirect == b.AllowDirect && sourcesEqual(a.Sources, b.Sources)
}

// unlimited normalises "no limit": the server reports -1 where a config sent 0.
func unlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

func provisionBucket(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig) (Change, error) {
	res := "bucket " + want.Bucket
	kv, err := js.KeyValue(ctx, want.Bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		if _, err := js.CreateKeyValue(ctx, want); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return Change{}, fmt.Errorf("create %s: %w", res, err)
		}
		return Change{res, "created"}, nil
	case err != nil:
		return Change{}, fmt.Errorf("look up %s: %w", res, err)
	}
	if cacheBuckets[want.Bucket] {
		st, err := kv.Status(ctx)
		if err != nil {
			return Change{}, fmt.Errorf("look up %s: %w", res, err)
		}
		if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo().Config.Storage != want.Storage {
			// The server cannot change a stream's storage in place; a cache can start over.
			if err := js.DeleteKeyValue(ctx, want.Bucket); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
				return Change{}, fmt.Errorf("recreate %s: %w", res, err)
			}
			if _, err := js.CreateKeyValue(ctx, want); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
				return Change{}, fmt.Errorf("recreate %s: %w", res, err)
			}
			return Change{res, "recreated"}, nil
		}
	}
	if _, err := js.UpdateKeyValue(ctx, want); err != nil {
		return Change{}, fmt.Errorf("update %s: %w", res, err)
	}
	return Change{res, "ensured"}, nil
}

func provisionConsumer(ctx context.Context, js jetstream.JetStream, stream string, want jetstream.ConsumerConfig) (Change, error) {
	res := "consumer " + stream + "/" + want.Durable
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return Change{}, fmt.Errorf("look up stream for %s: %w", res, err)
	}
	have, err := s.Consumer(ctx, want.Durable)
	action := "ensured"
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		action = "created"
	case err != nil:
		return Change{}, fmt.Errorf("look up %s: %w", res, err)
	default:
		// The server cannot change an ack or deliver policy in place, and
		// recreating the consumer would lose its position: keep the ones it has
		// (a lane consumer created by a partition growth starts at a sequence).
		hc := have.CachedInfo().Config
		want.AckPolicy = hc.AckPolicy
		want.DeliverPolicy, want.OptStartSeq, want.OptStartTime = hc.DeliverPolicy, hc.OptStartSeq, hc.OptStartTime
	}
	if _, err := s.CreateOrUpdateConsumer(ctx, want); err != nil {
		return Change{}, fmt.Errorf("ensure %s: %w", res, err)
	}
	return Change{res, action}, nil
}
