package estimator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/schemas"
)

// CheckpointStore keeps one estimator's checkpoint in KV estimator_checkpoints
// as chunks and a manifest written last, so a checkpoint is as large as the open
// orders make it (one KV value stops at the server's max_payload, 1 MB by
// default: about 3000 open orders).
//
// # Layout
//
//	<name>                the manifest (JSON): generation, chunk count, size, sha256, wal_seq
//	<name>.<slot>.<i>     chunk i of a generation, slot = generation % 2
//
// Save writes generation g+1 into the slot the manifest (naming g) does not
// use, then the manifest, with compare-and-set on its revision. A reader follows
// the manifest, so it sees g or g+1 whole: a crash before the manifest leaves g
// as it was (the next Save overwrites the partial slot), and the sha256 catches a
// slot written under it by a second estimator with the same name. After the
// manifest names g+1, the chunks of g-1 past g+1's count are deleted (highest
// first, so an interrupted delete leaves a prefix the next Save finds): the
// bucket holds at most the manifest and two generations, with no delete markers
// piling up as generation-numbered keys would leave them.
//
// # Why chunked KV
//
// The Object Store makes a whole-object swap too, and writes as fast (4.5 MB:
// an object put took 30–106 ms, these chunks 19–70 ms, side by side), but its
// put removes the old object's chunks through the stream purge API and its get
// creates a push consumer with flow control: the estimator role would need
// purge and consumer rights on another stream, and a crash mid-put leaves
// chunks under a fresh id that nothing ever removes. Chunks in the existing
// bucket need nothing beyond the KV puts and gets the role already has.
// Per-order keys would write less per round, but a snapshot spanning thousands
// of keys and the WAL position is not atomic without a manifest of its own.
//
// # Encoding
//
// gob, then zstd (fastest); the orders in batches of orderBatch. Measured on
// 100k open orders (a shared 2-core machine at load 4–8): JSON is 35.6 MB and
// takes 0.8–1.9 s to encode and 0.5 s to decode, 3.9 MB with zstd; gob is
// 16.7 MB, about 0.1 s either way, and 4.5 MB with zstd (about 45 bytes an
// order): encoding 0.2–1.1 s wall (0.25 s of CPU, half of it zstd), writing
// its 9 chunks 26–183 ms, loading 0.16–1.4 s (TestCheckpointOf100kOpenOrders
// logs them). Uncompressed, the same checkpoint would be 33 chunks to write.
// The single-value JSON checkpoint of earlier versions is still read (Load
// recognises it by its missing format) and replaced by the first Save.
//
// A store is used by one goroutine at a time.
type CheckpointStore struct {
	kv        jetstream.KeyValue
	name      string
	chunkSize int
	enc       *zstd.Encoder

	// What the manifest holds, as far as this store knows: known is false until
	// Load or Save read it, and after a manifest write whose outcome is unknown.
	known bool
	gen   uint64 // the manifest's generation; 0: none, or a single-value checkpoint
	rev   uint64 // the manifest key's revision; 0: no key

	// beforeManifest, if set, runs after the chunks are written and before the
	// manifest; an error stops Save there, as a crash would.
	beforeManifest func() error
}

// CheckpointChunkSize is the size of a checkpoint chunk: well under the 1 MB
// default max_payload, with room for the message's headers.
const CheckpointChunkSize = 512 << 10

// checkpointFormat names the encoding of the chunks in a manifest.
const checkpointFormat = "gob+zstd/2"

type checkpointManifest struct {
	Format     string `json:"format"`
	Generation uint64 `json:"generation"`
	Chunks     int    `json:"chunks"`
	Size       int    `json:"size"`
	SHA256     string `json:"sha256"`
	// WALSeq is the checkpoint's, for operators reading the manifest.
	WALSeq uint64 `json:"wal_seq"`
}

// SaveStats describes one written checkpoint.
type SaveStats struct {
	Generation uint64
	Bytes      int // encoded (compressed) size
	Chunks     int
	Encode     time.Duration
	Write      time.Duration
}

// NewCheckpointStore returns the store of the checkpoint named name in kv.
// name is a KV key without dots (its chunks are keyed below it).
func NewCheckpointStore(kv jetstream.KeyValue, name string) (*CheckpointStore, error) {
	if name == "" || strings.Contains(name, ".") {
		return nil, fmt.Errorf("estimator checkpoint name %q: want a non-empty KV key without dots", name)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return &CheckpointStore{kv: kv, name: name, chunkSize: CheckpointChunkSize, enc: enc}, nil
}

func (s *CheckpointStore) chunkKey(gen uint64, i int) string {
	return fmt.Sprintf("%s.%d.%d", s.name, gen%2, i)
}

// manifest reads the manifest and remembers its generation and revision.
// legacy is the value when it is a single-value checkpoint instead.
func (s *CheckpointStore) manifest(ctx context.Context) (m checkpointManifest, legacy []byte, found bool, err error) {
	e, err := s.kv.Get(ctx, s.name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		s.known, s.gen, s.rev = true, 0, 0
		return m, nil, false, nil
	}
	if err != nil {
		return m, nil, false, fmt.Errorf("read the checkpoint manifest: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return m, nil, false, fmt.Errorf("estimator checkpoint manifest: %w", err)
	}
	s.known, s.gen, s.rev = true, m.Generation, e.Revision()
	if m.Format == "" {
		s.gen = 0
		return m, e.Value(), true, nil
	}
	if m.Format != checkpointFormat {
		return m, nil, false, fmt.Errorf("estimator checkpoint: unknown format %q", m.Format)
	}
	return m, nil, true, nil
}

// Load reads the checkpoint; found is false when there is none.
func (s *CheckpointStore) Load(ctx context.Context) (c Checkpoint, found bool, err error) {
	m, legacy, found, err := s.manifest(ctx)
	if err != nil || !found {
		return Checkpoint{}, false, err
	}
	if legacy != nil {
		c, err := parseSingleValueCheckpoint(legacy)
		return c, err == nil, err
	}
	b := make([]byte, 0, m.Size)
	for i := range m.Chunks {
		e, err := s.kv.Get(ctx, s.chunkKey(m.Generation, i))
		if err != nil {
			return Checkpoint{}, false, fmt.Errorf("read checkpoint generation %d chunk %d: %w", m.Generation, i, err)
		}
		b = append(b, e.Value()...)
	}
	if sum := sha256.Sum256(b); len(b) != m.Size || hex.EncodeToString(sum[:]) != m.SHA256 {
		return Checkpoint{}, false, fmt.Errorf("estimator checkpoint generation %d: chunks do not match the manifest (%d bytes, want %d); is a second estimator named %q running?", m.Generation, len(b), m.Size, s.name)
	}
	c, err = decodeCheckpoint(b)
	return c, err == nil, err
}

// Save writes c as the next generation and makes the manifest name it.
func (s *CheckpointStore) Save(ctx context.Context, c Checkpoint) (SaveStats, error) {
	if !s.known {
		if _, _, _, err := s.manifest(ctx); err != nil {
			return SaveStats{}, err
		}
	}
	start := time.Now()
	b, err := s.encode(c)
	if err != nil {
		return SaveStats{}, err
	}
	st := SaveStats{Generation: s.gen + 1, Bytes: len(b), Encode: time.Since(start)}
	start = time.Now()
	for off := 0; off < len(b) || st.Chunks == 0; off += s.chunkSize {
		if _, err := s.kv.Put(ctx, s.chunkKey(st.Generation, st.Chunks), b[off:min(off+s.chunkSize, len(b))]); err != nil {
			return SaveStats{}, fmt.Errorf("write checkpoint generation %d chunk %d: %w", st.Generation, st.Chunks, err)
		}
		st.Chunks++
	}
	if s.beforeManifest != nil {
		if err := s.beforeManifest(); err != nil {
			return SaveStats{}, err
		}
	}
	sum := sha256.Sum256(b)
	mb, err := json.Marshal(checkpointManifest{Format: checkpointFormat, Generation: st.Generation, Chunks: st.Chunks,
		Size: len(b), SHA256: hex.EncodeToString(sum[:]), WALSeq: c.WALSeq})
	if err != nil {
		return SaveStats{}, err
	}
	var rev uint64
	if s.rev == 0 {
		rev, err = s.kv.Create(ctx, s.name, mb)
	} else {
		rev, err = s.kv.Update(ctx, s.name, mb, s.rev)
	}
	if err != nil {
		s.known = false // it may have been written: read it before the next Save
		return SaveStats{}, fmt.Errorf("write the checkpoint manifest: %w", err)
	}
	s.gen, s.rev = st.Generation, rev
	if err := s.dropStale(ctx, st.Generation, st.Chunks); err != nil {
		return SaveStats{}, err
	}
	st.Write = time.Since(start)
	return st, nil
}

// dropStale deletes the chunks of gen's slot from index from on: what is left
// of the generation two before, which had more.
func (s *CheckpointStore) dropStale(ctx context.Context, gen uint64, from int) error {
	top := from
	for ; ; top++ {
		_, err := s.kv.Get(ctx, s.chunkKey(gen, top))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("read a stale checkpoint chunk: %w", err)
		}
	}
	for i := top - 1; i >= from; i-- {
		if err := s.kv.Delete(ctx, s.chunkKey(gen, i)); err != nil {
			return fmt.Errorf("delete a stale checkpoint chunk: %w", err)
		}
	}
	return nil
}

// checkpointHeader starts an encoded checkpoint; the orders follow in batches
// of at most orderBatch, each its own gob value, so neither side holds the
// whole encoding twice (a single gob value of 100k orders is built in one
// growing buffer: most of the encoding time).
type checkpointHeader struct {
	WALSeq  uint64
	Prep    map[string]PrepState
	Global  PrepState
	Pending []schemas.Event
	Orders  int
}

type orderEntry struct {
	ID    string
	State OrderState
}

const orderBatch = 1024

func (s *CheckpointStore) encode(c Checkpoint) ([]byte, error) {
	var buf bytes.Buffer
	s.enc.Reset(&buf)
	g := gob.NewEncoder(s.enc)
	err := g.Encode(checkpointHeader{WALSeq: c.WALSeq, Prep: c.Model.Prep, Global: c.Model.Global, Pending: c.Pending, Orders: len(c.Model.Orders)})
	batch := make([]orderEntry, 0, orderBatch)
	for id, o := range c.Model.Orders {
		if err != nil {
			break
		}
		if batch = append(batch, orderEntry{id, o}); len(batch) == orderBatch {
			err, batch = g.Encode(batch), batch[:0]
		}
	}
	if err == nil && len(batch) > 0 {
		err = g.Encode(batch)
	}
	if err == nil {
		err = s.enc.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("encode the checkpoint: %w", err)
	}
	return buf.Bytes(), nil
}

func decodeCheckpoint(b []byte) (Checkpoint, error) {
	dec, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return Checkpoint{}, err
	}
	defer dec.Close()
	g := gob.NewDecoder(dec)
	var h checkpointHeader
	if err := g.Decode(&h); err != nil {
		return Checkpoint{}, fmt.Errorf("decode the estimator checkpoint: %w", err)
	}
	c := Checkpoint{WALSeq: h.WALSeq, Pending: h.Pending,
		Model: ModelState{Orders: make(map[string]OrderState, h.Orders), Prep: h.Prep, Global: h.Global}}
	for len(c.Model.Orders) < h.Orders {
		// A fresh slice each time: gob leaves a field it was not sent (a zero
		// value) as it finds it.
		var batch []orderEntry
		if err := g.Decode(&batch); err != nil {
			return Checkpoint{}, fmt.Errorf("decode the estimator checkpoint's orders (%d of %d read): %w", len(c.Model.Orders), h.Orders, err)
		}
		for _, e := range batch {
			c.Model.Orders[e.ID] = e.State
		}
	}
	return c, nil
}
