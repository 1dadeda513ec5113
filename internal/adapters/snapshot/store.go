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
	"github.com/orderflow/orderflow/internal/retry"
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

// Open binds to the order_status bucket. terminalTTL is how long KV keeps the
// snapshot of a delivered or cancelled order: every writer of snapshots (the lane,
// replay) must open the store with the lane's --terminal-ttl, or the snapshots it
// writes never expire. 0 writes them without a TTL (readers only write nothing).
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
	f, err := s.js.PublishMsgAsync(s.writeMsg(orderID, data, rev, terminal))
	if err != nil {
		return nil, fmt.Errorf("write snapshot %s: %w", orderID, err)
	}
	return f, nil
}

// writeMsg is the compare-and-set write of data as the order's snapshot.
func (s *Store) writeMsg(orderID string, data []byte, rev uint64, terminal bool) *nats.Msg {
	m := nats.NewMsg(Key(orderID))
	m.Data = data
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	if terminal && s.terminalTTL > 0 {
		m.Header.Set(jetstream.MsgTTLHeader, s.terminalTTL.String())
	}
	return m
}

// Write is the synchronous form of WriteAsync, for cold paths and tests that
// write one snapshot as it is. It returns the new revision, or ErrConflict. A
// read-modify-write is Update.
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

// Update reads the order's snapshot, calls fn with it and writes what fn returns
// with a compare-and-set on the revision it read. When another writer moved the key
// meanwhile it reads again and calls fn again, so fn must be safe to call more than
// once (a write it made, such as publishing a milestone, must be idempotent).
//
// fn gets the stored state and its outbox; the state is nil when the key holds no
// snapshot, or a value that does not decode (a write then replaces it). It returns
// the state to store with its outbox, or a nil state to leave the key as it is.
// Terminal states are written with the store's TTL. Update reports whether it
// wrote; an error of fn is returned as it is, after no write.
func (s *Store) Update(ctx context.Context, orderID string, fn func(st *resolver.State, ob outbox.Outbox) (*resolver.State, outbox.Outbox, error)) (bool, error) {
	return s.compareAndSet(ctx, orderID, func(data []byte, rev uint64) (*nats.Msg, error) {
		var st *resolver.State
		var ob outbox.Outbox
		if data != nil {
			if got, gotOb, err := Decode(data); err == nil {
				st, ob = got, gotOb
			}
		}
		next, nextOb, err := fn(st, ob)
		if err != nil || next == nil {
			return nil, err
		}
		enc, err := Encode(next, nextOb)
		if err != nil {
			return nil, fmt.Errorf("encode snapshot %s: %w", orderID, err)
		}
		return s.writeMsg(orderID, enc, rev, next.Terminal()), nil
	})
}

// Remove deletes the order's snapshot unless keep says it stays, with a
// compare-and-set like Update (keep may be called more than once). It leaves a
// purge marker that KV forgets after markerTTL (0: keeps it). keep gets the stored
// state, nil when the value does not decode; a key with no snapshot is left alone.
// Remove reports whether it removed.
func (s *Store) Remove(ctx context.Context, orderID string, markerTTL time.Duration, keep func(st *resolver.State) bool) (bool, error) {
	return s.compareAndSet(ctx, orderID, func(data []byte, rev uint64) (*nats.Msg, error) {
		if data == nil {
			return nil, nil
		}
		st, _, err := Decode(data)
		if err != nil {
			st = nil
		}
		if keep(st) {
			return nil, nil
		}
		m := nats.NewMsg(Key(orderID))
		m.Header.Set("KV-Operation", "PURGE")
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
		if markerTTL > 0 {
			m.Header.Set(jetstream.MsgTTLHeader, markerTTL.String())
		}
		return m, nil
	})
}

// compareAndSet is the one read, decide, conditional-write loop behind Update and
// Remove: decide returns the message to publish (expecting rev), or nil for none.
func (s *Store) compareAndSet(ctx context.Context, orderID string, decide func(data []byte, rev uint64) (*nats.Msg, error)) (bool, error) {
	wrote := false
	err := retry.Do(ctx, retry.CompareAndSet, func(ctx context.Context, _ int) error {
		data, rev, err := s.GetRaw(ctx, orderID)
		if err != nil {
			return retry.Permanent(err)
		}
		m, err := decide(data, rev)
		if err != nil || m == nil {
			return retry.Permanent(err)
		}
		if _, err := s.js.PublishMsg(ctx, m); err != nil {
			if err = Classify(err); errors.Is(err, ErrConflict) {
				return err // another writer moved the key: read again
			}
			return retry.Permanent(fmt.Errorf("write snapshot %s: %w", orderID, err))
		}
		wrote = true
		return nil
	})
	if errors.Is(err, ErrConflict) {
		return false, fmt.Errorf("snapshot %s kept changing under %d compare-and-set attempts: %w", orderID, retry.CompareAndSet.Attempts, err)
	}
	return wrote, err
}
