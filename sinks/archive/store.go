package archive

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// ErrExists means Put found the name taken; the file there is complete.
var ErrExists = errors.New("archive file exists")

// Store is where archive files live. Names are slash-separated relative paths
// ("events/day=2026-01-05/<batch>.parquet").
type Store interface {
	// Put stores data under name if the name is free, and returns only once the file
	// is durable; it returns ErrExists (and changes nothing) if the name is taken.
	// It is atomic: a name is either absent or holds a complete file. Create-only is
	// what makes finishing a batch twice harmless.
	Put(ctx context.Context, name string, data []byte) error
	// Get returns the file's bytes, or an error wrapping fs.ErrNotExist.
	Get(ctx context.Context, name string) ([]byte, error)
	// List returns the names starting with prefix, sorted.
	List(ctx context.Context, prefix string) ([]string, error)
}

// DirStore is a Store in a local directory.
type DirStore struct {
	root string
}

const tmpPrefix = ".tmp-"

// NewDirStore returns a Store rooted at dir, creating it if needed.
func NewDirStore(dir string) (*DirStore, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("archive dir %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("archive dir %s: %w", dir, err)
	}
	return &DirStore{root: abs}, nil
}

// validName accepts what every Store can hold: a clean relative slash path, not
// shaped like DirStore's temporary files.
func validName(name string) error {
	if !fs.ValidPath(name) || name == "." || strings.HasPrefix(path.Base(name), tmpPrefix) {
		return fmt.Errorf("invalid archive file name %q", name)
	}
	return nil
}

func (d *DirStore) path(name string) (string, error) {
	if err := validName(name); err != nil {
		return "", err
	}
	return filepath.Join(d.root, filepath.FromSlash(name)), nil
}

// Put writes a temporary file, fsyncs it, hard-links it to its name (link(2) fails
// if the name exists, which gives create-only without a race), and fsyncs every
// directory from the file's up to the root so the new entries survive a power loss.
func (d *DirStore) Put(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := d.path(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the link, only the temporary name goes
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	if err := os.Link(tmp, p); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("put %s: %w", name, ErrExists)
		}
		return fmt.Errorf("put %s: %w", name, err)
	}
	for dir := filepath.Dir(p); ; dir = filepath.Dir(dir) {
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("put %s: sync %s: %w", name, dir, err)
		}
		if dir == d.root || len(dir) <= len(d.root) {
			return nil
		}
	}
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Get reads a file.
func (d *DirStore) Get(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	return b, nil
}

// List walks the directory the prefix names (only that subtree, so checking one
// name stays cheap as the archive grows); temporary files of interrupted Puts are
// not listed.
func (d *DirStore) List(ctx context.Context, prefix string) ([]string, error) {
	start := d.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		if !fs.ValidPath(prefix[:i]) {
			return nil, fmt.Errorf("invalid archive prefix %q", prefix)
		}
		start = filepath.Join(d.root, filepath.FromSlash(prefix[:i]))
	}
	if _, err := os.Stat(start); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var out []string
	err := filepath.WalkDir(start, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.IsDir() || strings.HasPrefix(e.Name(), tmpPrefix) {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		if name := filepath.ToSlash(rel); strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	sort.Strings(out)
	return out, nil
}

// exists reports whether name is in the store, through List so that any Store works.
func exists(ctx context.Context, s Store, name string) (bool, error) {
	names, err := s.List(ctx, name)
	if err != nil {
		return false, err
	}
	for _, n := range names {
		if n == name {
			return true, nil
		}
	}
	return false, nil
}
