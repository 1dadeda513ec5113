// Package snapshot stores order snapshots in KV order_status. Writes are
// compare-and-set on the key's revision, sent as pipelined async publishes so the hot
// path never waits one round trip per event; reads go straight to the KV stream so a
// deleted or expired key still reports the revision a create must expect.
package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/outbox"
	"github.com/orderflow/orderflow/handlers/resolver"
	"github.com/orderflow/orderflow/pipelines/topology"
)

// ErrConflict means the key moved since the revision the write expected.
var ErrConflict = errors.New("snapshot revision conflict")

// Store reads and writes snapshots.
type Store struct {
	js          jetstream.JetStream
	kvStream    jetstream.Stream
	terminalTTL time.Duration
}

// Open binds to the order_status bucket.
func Open(ctx context.Context, js jetstream.JetStream, terminalTTL time.Duration) (*Store, error) {
	s, err := js.Stream(ctx, "KV_"+topology.StatusBucket)
	if err != nil {
		return nil, fmt.Errorf("open KV bucket %s: %w", topology.StatusBucket, err)
	}
	return &Store{js: js, kvStream: s, terminalTTL: terminalTTL}, nil
}

// Key is the KV subject of an order's snapshot.
func Key(orderID string) string {
	return "$KV." + topology.StatusBucket + "." + orderID
}

// Get returns the order's snapshot and the key's revision. A missing, deleted or
// expired key returns a nil state with the revision a create must expect.
func (s *Store) Get(ctx context.Context, orderID string) (*resolver.State, outbox.Outbox, uint64, error) {
	data, rev, err := s.GetRaw(ctx, orderID)
	if err != nil || data == nil {
		return nil, outbox.Outbox{}, rev, err
	}
	st, ob, err := Decode(data)
	if err != nil {
		return nil, outbox.Outbox{}, rev, fmt.Errorf("decode snapshot %s at revision %d: %w", orderID, rev, err)
	}
	return st, ob, rev, nil
}

// GetRaw returns the key's value undecoded and its revision, as Get does: nil data
// with revision 0 for a key never written, with the marker's revision for a deleted
// or expired one.
func (s *Store) GetRaw(ctx context.Context, orderID string) ([]byte, uint64, error) {
	m, err := s.kvStream.GetLastMsgForSubject(ctx, Key(orderID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("get snapshot %s: %w", orderID, err)
	}
	if len(m.Data) == 0 || m.Header.Get("KV-Operation") != "" || m.Header.Get("Nats-Marker-Reason") != "" {
		return nil, m.Sequence, nil
	}
	return m.Data, m.Sequence, nil
}

// Holds reports whether data, a stored value, holds exactly st (whatever its outbox):
// Encode is deterministic, so this is a byte comparison, no decoding. Callers that
// compare many stored snapshots with recomputed states take this fast path first.
func Holds(data []byte, st *resolver.State) bool {
	want, err := st.MarshalSnapshot()
	if err != nil || len(data) < len(want) {
		return false
	}
	body := want[:len(want)-1] // without the closing brace, where the outbox goes
	if !bytes.Equal(data[:len(body)], body) {
		return false
	}
	rest := data[len(body):]
	if string(rest) == "}" {
		return true
	}
	// The outbox must decode as Decode would read it; it is small, so this stays cheap.
	ob, ok := bytes.CutPrefix(rest, []byte(`,"outbox":`))
	if !ok || len(ob) < 3 || ob[len(ob)-1] != '}' {
		return false
	}
	var o outbox.Outbox
	return json.Unmarshal(ob[:len(ob)-1], &o) == nil
}

// Encode is the KV value: the resolver's snapshot with the outbox beside it, so one
// compare-and-set records a status change and the milestones it owes.
func Encode(st *resolver.State, ob outbox.Outbox) ([]byte, error) {
	b, err := st.MarshalSnapshot()
	if err != nil || (len(ob.Emitted) == 0 && len(ob.Pending) == 0) {
		return b, err
	}
	b = append(b[:len(b)-1], `,"outbox":{`...) // before the object's closing brace
	for i, f := range []struct {
		name  string
		kinds []string
	}{{"emitted", ob.Emitted}, {"pending", ob.Pending}} {
		if len(f.kinds) == 0 {
			continue
		}
		if i > 0 && len(ob.Emitted) > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, f.name...)
		b = append(b, `":[`...)
		for k, kind := range f.kinds {
			if k > 0 {
				b = append(b, ',')
			}
			b = resolver.AppendJSONString(b, kind)
		}
		b = append(b, ']')
	}
	return append(b, "}}"...), nil
}

// Decode reads a KV value written by Encode.
func Decode(b []byte) (*resolver.State, outbox.Outbox, error) {
	st, err := resolver.UnmarshalSnapshot(b)
	if err != nil {
		return nil, outbox.Outbox{}, err
	}
	var v struct {
		Outbox outbox.Outbox `json:"outbox"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, outbox.Outbox{}, err
	}
	return st, v.Outbox, nil
}

// WriteAsync publishes data as the order's snapshot if the key is still at rev (0 =
// the key has never been written). Terminal snapshots carry a TTL so KV forgets
// finished orders; their reads then fall back to the WAL.
func (s *Store) WriteAsync(orderID string, data []byte, rev uint64, terminal bool) (jetstream.PubAckFuture, error) {
	m := nats.NewMsg(Key(orderID))
	m.Data = data
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	if terminal && s.terminalTTL > 0 {
		m.Header.Set(jetstream.MsgTTLHeader, s.terminalTTL.String())
	}
	f, err := s.js.PublishMsgAsync(m)
	if err != nil {
		return nil, fmt.Errorf("write snapshot %s: %w", orderID, err)
	}
	return f, nil
}

// Write is the synchronous form of WriteAsync, for cold paths (replay, repair).
// It returns the new revision, or ErrConflict.
func (s *Store) Write(ctx context.Context, orderID string, data []byte, rev uint64, terminal bool) (uint64, error) {
	f, err := s.WriteAsync(orderID, data, rev, terminal)
	if err != nil {
		return 0, err
	}
	select {
	case ack := <-f.Ok():
		return ack.Sequence, nil
	case err := <-f.Err():
		return 0, Classify(err)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Classify maps a write error to ErrConflict when the revision check failed.
func Classify(err error) error {
	var apiErr *jetstream.APIError
	// Replicated streams report the same failed check under a second code.
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return err
}
