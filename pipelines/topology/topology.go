// Package topology owns the JetStream resources as code: the streams, subjects, KV
// buckets and lane consumers orderflow runs on (DESIGN §2 names). Provisioning is idempotent: running it again with the same config changes nothing,
// with a changed config it updates what JetStream can update and explains what it cannot.
package topology

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/schemas"
)

// Names of the public contract (DESIGN §2). Changing one needs a migration.
const (
	EventsStream     = "ORDER_EVENTS"
	DLQStream        = "ORDER_EVENTS_DLQ"
	MilestonesStream = "ORDER_MILESTONES"
	StatusBucket     = "order_status"
	// LanesBucket holds one checkpoint per lane: the WAL sequence below which every
	// event's effect is durable in order_status (see handlers/lane.go).
	LanesBucket = "order_lanes"
	// ArchiveBucket is the archive's index (order id -> archive files) and its batch
	// slot.
	ArchiveBucket = "order_archive"

	// EventsSubjects is where producers publish: orders.events.<source>.<order_id>.
	EventsSubjects = "orders.events.*.*"
	// WALPrefix is the stored subject prefix after partitioning:
	// orders.wal.<partition>.<source>.<order_id>.
	WALPrefix = schemas.WALPrefix
	// DLQPrefix is the DLQ subject prefix: orders.dlq.<reason>.
	DLQPrefix = "orders.dlq"
	// MilestonesPrefix is orders.milestones.<milestone>.<order_id>.
	MilestonesPrefix = schemas.MilestonesPrefix

	// LaneGroup is the consumer priority group whose pinned client owns a lane.
	LaneGroup = "lanes"
)

// Topology is the configuration of the streams and buckets.
type Topology struct {
	// Partitions is the number of ordered lanes ORDER_EVENTS is split into.
	Partitions int
	// Replicas is the stream replication factor: 1 embedded, 3 on a cluster.
	Replicas int
	// DuplicateWindow is how long JetStream remembers Nats-Msg-Id for producer retries.
	DuplicateWindow time.Duration
	// MaxPayload bounds one stored message; events above schemas.MaxEventBytes but
	// below this still reach the WAL so they can be sent to the DLQ with a reason.
	MaxPayload int32
	// WALMaxAge bounds the WAL; 0 keeps it until the archive purges completed orders.
	// Events older than this are removed whether or not anything else kept them, so
	// use it only with the archive off (see README, "Overload and limits").
	WALMaxAge time.Duration
	// WALMaxBytes bounds the WAL's size; 0 = no limit. At the limit the stream refuses
	// new events (discard new): a producer gets an error and nothing stored is dropped.
	WALMaxBytes int64
	// TerminalTTL is how long snapshots of delivered/cancelled orders stay in KV.
	TerminalTTL time.Duration
	// ExpiredMarkerTTL is how long KV remembers that a terminal snapshot expired. A
	// late event within it refolds the order from the WAL; after it, the event starts
	// a fresh state, as for a new order.
	ExpiredMarkerTTL time.Duration
	// LaneAckWait is how long a lane may hold an event before JetStream redelivers it.
	LaneAckWait time.Duration
	// LanePinnedTTL is how long a silent instance keeps its lanes before another takes over.
	LanePinnedTTL time.Duration
	// Region, when set, is this region's name and JetStream domain: producers'
	// events land in ORDER_INGEST and ORDER_EVENTS sources it and every peer's
	// (regions.go). Empty: the single-region topology.
	Region string
	// Peers are the other regions' names (= their JetStream domains).
	Peers []string
	// MilestonesHome is the region whose ORDER_MILESTONES is the one global ledger;
	// every other region's is a mirror of it (milestones.go). Empty with a region
	// set: the region whose name sorts first.
	MilestonesHome string
}

// SetDefaults fills unset fields.
func (t *Topology) SetDefaults() {
	if t.Partitions == 0 {
		t.Partitions = 8
	}
	if t.Replicas == 0 {
		t.Replicas = 1
	}
	if t.DuplicateWindow == 0 {
		t.DuplicateWindow = 2 * time.Minute
	}
	if t.MaxPayload == 0 {
		// Below the server's 1 MiB max_payload by enough that a DLQ copy, with the
		// headers that explain it, still fits.
		t.MaxPayload = 1<<20 - 16<<10
	}
	if t.TerminalTTL == 0 {
		t.TerminalTTL = 24 * time.Hour
	}
	if t.ExpiredMarkerTTL == 0 {
		t.ExpiredMarkerTTL = 7 * 24 * time.Hour
	}
	if t.LaneAckWait == 0 {
		t.LaneAckWait = 30 * time.Second
	}
	if t.LanePinnedTTL == 0 {
		t.LanePinnedTTL = 10 * time.Second
	}
	if t.Regional() && t.MilestonesHome == "" {
		t.MilestonesHome = DefaultMilestonesHome(t.Region, t.Peers)
	}
}

// Validate reports a configuration that cannot work.
func (t Topology) Validate() error {
	var errs []error
	if t.Partitions < 1 || t.Partitions > 1024 {
		errs = append(errs, fmt.Errorf("partitions must be 1..1024, got %d", t.Partitions))
	}
	if t.Replicas != 1 && t.Replicas != 3 && t.Replicas != 5 {
		errs = append(errs, fmt.Errorf("replicas must be 1, 3 or 5, got %d", t.Replicas))
	}
	if t.WALMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("WAL max bytes must be 0 (no limit) or positive, got %d", t.WALMaxBytes))
	}
	if t.WALMaxAge < 0 {
		errs = append(errs, fmt.Errorf("WAL max age must be 0 (no limit) or positive, got %s", t.WALMaxAge))
	}
	if t.Regional() && t.MilestonesHome != t.Region && !slices.Contains(t.Peers, t.MilestonesHome) {
		errs = append(errs, fmt.Errorf("milestones region %q is neither this region (%s) nor a peer %v", t.MilestonesHome, t.Region, t.Peers))
	}
	if t.TerminalTTL < time.Second {
		errs = append(errs, fmt.Errorf("terminal TTL must be at least 1s, got %s", t.TerminalTTL))
	}
	return errors.Join(errs...)
}

// LaneSubject is the filter subject of one lane.
func LaneSubject(partition int) string {
	return fmt.Sprintf("%s.%d.>", WALPrefix, partition)
}

// LaneConsumer is the durable consumer name of one lane.
func LaneConsumer(partition int) string {
	return fmt.Sprintf("lane-%d", partition)
}

// OrderWALFilter matches every WAL event of one order, whatever its partition and source.
func OrderWALFilter(orderID string) string {
	return WALPrefix + ".*.*." + orderID
}

// PartitionOf extracts the partition number from a WAL subject.
func PartitionOf(walSubject string) (int, bool) {
	rest, ok := strings.CutPrefix(walSubject, WALPrefix+".")
	if !ok {
		return 0, false
	}
	tok, _, _ := strings.Cut(rest, ".")
	n := 0
	for _, c := range tok {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, tok != ""
}

// PartitionsOf reads the partition count back from a stored ORDER_EVENTS config.
func PartitionsOf(c jetstream.StreamConfig) (int, error) {
	var n, tok int
	if c.SubjectTransform == nil {
		return 0, fmt.Errorf("stream %s has no partitioning subject transform", c.Name)
	}
	if _, err := fmt.Sscanf(c.SubjectTransform.Destination, WALPrefix+".{{partition(%d,%d)}}", &n, &tok); err != nil || n < 1 {
		return 0, fmt.Errorf("stream %s: cannot read the partition count from %q", c.Name, c.SubjectTransform.Destination)
	}
	return n, nil
}

// EventsConfig is ORDER_EVENTS: the WAL. The subject transform partitions by order id
// so every event of one order lands on one lane, in WAL order.
func (t Topology) EventsConfig() jetstream.StreamConfig {
	return t.regional(jetstream.StreamConfig{
		Name:        EventsStream,
		Description: "orderflow write-ahead log of order events, partitioned by order id",
		Subjects:    []string{EventsSubjects},
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source:      EventsSubjects,
			Destination: fmt.Sprintf("%s.{{partition(%d,2)}}.{{wildcard(1)}}.{{wildcard(2)}}", WALPrefix, t.Partitions),
		},
		Retention:  jetstream.LimitsPolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   t.Replicas,
		Duplicates: t.DuplicateWindow,
		MaxMsgSize: t.MaxPayload,
		MaxAge:     t.WALMaxAge,
		MaxBytes:   t.WALMaxBytes,
		// At MaxBytes the stream refuses the publish instead of deleting the oldest
		// events: an acknowledged event is never dropped to make room.
		Discard: jetstream.DiscardNew,
		// No direct gets: a direct get appends Nats-Sequence and friends after the
		// producer's headers, and clients read the first value, so a producer could
		// forge them. STREAM.MSG.GET returns metadata apart from headers, from the
		// leader, so reads never see a lagging replica either.
		AllowDirect: false,
	})
}

// DLQConfig is ORDER_EVENTS_DLQ: bad input kept byte-for-byte with its reason.
func (t Topology) DLQConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        DLQStream,
		Description: "orderflow events that could not be processed, with the reason in headers",
		Subjects:    []string{DLQPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    t.Replicas,
		Duplicates:  t.DuplicateWindow,
		MaxMsgSize:  t.MaxPayload,
	}
}

// MilestonesConfig is ORDER_MILESTONES: at most one message per subject, ever, so a
// relay retrying after any crash cannot publish a milestone twice. With regions, it
// is the home's ledger or a mirror of it (milestones.go).
func (t Topology) MilestonesConfig() jetstream.StreamConfig {
	return t.regionalMilestones(t.milestonesLedger())
}

func (t Topology) milestonesLedger() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:                 MilestonesStream,
		Description:          "orderflow milestones, one message per order and milestone",
		Subjects:             []string{MilestonesPrefix + ".*.*"},
		Storage:              jetstream.FileStorage,
		Replicas:             t.Replicas,
		Duplicates:           t.DuplicateWindow,
		MaxMsgsPerSubject:    1,
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: true,
	}
}

// StatusBucketConfig is KV order_status. LimitMarkerTTL turns on per-key TTLs so
// terminal snapshots can expire while live ones stay, and keeps a marker of each
// expiry so a late event knows the order had a history.
func (t Topology) StatusBucketConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:         StatusBucket,
		Description:    "orderflow current status snapshot per order",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       t.Replicas,
		LimitMarkerTTL: t.ExpiredMarkerTTL,
	}
}

// FormatCheckpoint is a lane checkpoint as KV order_lanes holds it: the WAL
// sequence in decimal.
func FormatCheckpoint(seq uint64) []byte { return strconv.AppendUint(nil, seq, 10) }

// ParseCheckpoint reads a value FormatCheckpoint wrote.
func ParseCheckpoint(v []byte) (uint64, error) {
	seq, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("lane checkpoint %q: %w", v, err)
	}
	return seq, nil
}

// ArchiveBucketConfig is KV order_archive. The index must outlive everything, so
// no TTL; history 1: the entry is the state, the files are the history.
func (t Topology) ArchiveBucketConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      ArchiveBucket,
		Description: "orderflow archive index: order id -> archive files; the batch in progress",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    t.Replicas,
	}
}

// LanesBucketConfig is KV order_lanes, the lane checkpoints.
func (t Topology) LanesBucketConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      LanesBucket,
		Description: "orderflow lane checkpoints",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    t.Replicas,
	}
}

// LaneConsumerConfig is the durable consumer of one lane. Pinned-client priority groups
// give each lane to exactly one instance at a time and move it when that instance dies.
// A lane handles its events in order, so acking the last event of a batch acks the
// batch (AckAll): one ack per pulled batch instead of one per event. Consumers
// provisioned before keep their explicit acks (the server cannot change an ack
// policy in place); the lanes ack whichever way their consumer asks.
func (t Topology) LaneConsumerConfig(partition int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        LaneConsumer(partition),
		Description:    fmt.Sprintf("orderflow status lane %d", partition),
		FilterSubject:  LaneSubject(partition),
		AckPolicy:      jetstream.AckAllPolicy,
		AckWait:        t.LaneAckWait,
		MaxAckPending:  4096,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{LaneGroup},
		PinnedTTL:      t.LanePinnedTTL,
	}
}
