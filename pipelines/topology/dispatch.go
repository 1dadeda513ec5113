package topology

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/schemas"
)

// Dispatch resources (DESIGN §8.4). The location firehose itself,
// dashers.locations.<dasher_id>, is core NATS and needs no stream.
const (
	// LocationsBucket keeps the latest position per dasher (key = dasher id), so an
	// instance rebuilds its nearby index on start.
	LocationsBucket = "dasher_locations"
	// LeasesBucket holds one lease per reserved dasher (key = dasher id): created
	// with compare-and-set, so a dasher serves one order at a time, with a per-key TTL,
	// so a lease nobody confirms expires.
	LeasesBucket = "dasher_leases"
	// DispatchBucket holds, per order (key = order id), who it was assigned to, the
	// assignment's source_seq, the dashers who declined it, and its pickup and
	// drop-off points (the estimator reads them).
	DispatchBucket = "order_dispatch"
	// EstimatorBucket holds each estimator's checkpoint: its WAL position and
	// model, so a restart resumes instead of rereading the WAL; a manifest at key
	// = its name and chunks below it (estimator.CheckpointStore).
	EstimatorBucket = "estimator_checkpoints"

	// LocationsTTL forgets a dasher's stored position after this much silence.
	LocationsTTL = time.Hour
	// DispatchTTL forgets an order's dispatch record; a day outlives any delivery.
	DispatchTTL = 24 * time.Hour
)

// cacheBuckets hold only what their producers send again: provisioning recreates
// one whose configuration cannot be updated in place (its storage changed).
var cacheBuckets = map[string]bool{LocationsBucket: true}

// DispatchBuckets are the dispatch service's buckets.
func (t Topology) DispatchBuckets() []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		{
			// In memory: a cache of the firehose, written for every dasher's first
			// position and then once per StoreEvery. A file write per position was
			// most of the location ingest's cost (bench dispatch: 0.43-0.44 × raw
			// core NATS with file storage, 0.51-0.55 × in memory). What it costs:
			// after every NATS server of the region restarts at once, dashers are
			// missing from nearby until their next position (a heartbeat, 15 s);
			// an instance restart, or one server's (R3), keeps it.
			Bucket: LocationsBucket, Description: "orderflow latest position per dasher",
			History: 1, TTL: LocationsTTL, Storage: jetstream.MemoryStorage, Replicas: t.Replicas,
		},
		{
			Bucket: LeasesBucket, Description: "orderflow dasher leases: the order each dasher is reserved for",
			History: 1, Storage: jetstream.FileStorage, Replicas: t.Replicas,
			// Turns on per-key TTLs (leases expire), and keeps a marker of each
			// expiry for a minute so watchers see it.
			LimitMarkerTTL: time.Minute,
		},
		{
			Bucket: DispatchBucket, Description: "orderflow dispatch record per order",
			History: 1, TTL: DispatchTTL, Storage: jetstream.FileStorage, Replicas: t.Replicas,
		},
		{
			Bucket: EstimatorBucket, Description: "orderflow estimator checkpoints: WAL position and model",
			History: 1, Storage: jetstream.FileStorage, Replicas: t.Replicas,
		},
	}
}

// ReleaseConsumer is the durable consumer on ORDER_MILESTONES through which
// dispatch gives a delivered or cancelled order's dasher back: one for every
// instance, so each milestone is handled once (a second time is harmless).
const ReleaseConsumer = "dispatch-release"

// ReleaseConsumerConfig is ReleaseConsumer: the delivered and cancelled milestones,
// from the first, acknowledged one by one.
func (t Topology) ReleaseConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:     ReleaseConsumer,
		Description: "orderflow dispatch: release the dasher of a delivered or cancelled order",
		FilterSubjects: []string{
			schemas.MilestonesPrefix + "." + string(schemas.StatusDelivered) + ".*",
			schemas.MilestonesPrefix + "." + string(schemas.StatusCancelled) + ".*",
		},
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 256,
	}
}
