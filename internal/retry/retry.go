// Package retry owns how orderflow tries an operation again: a bounded number of
// attempts (or until the context ends), waiting a doubling backoff in between.
// Callers say which errors are worth another attempt by marking the others
// Permanent; the context ends every wait at once.
package retry

import (
	"context"
	"errors"
	"time"
)

// Backoff says how often and how patiently to try.
type Backoff struct {
	// Initial is the wait after the first failed attempt; 0 tries again at once.
	Initial time.Duration
	// Max caps the wait, which doubles after each failed attempt. 0 = Initial.
	Max time.Duration
	// Attempts bounds the calls of fn; 0 tries until the context ends.
	Attempts int
}

// CompareAndSet is the backoff of a read-decide-conditional-write loop. Each
// attempt reads again, so a conflict only repeats while another writer keeps
// writing the same key; a short pause lets it finish, and a key that never settles
// is an error after a few attempts rather than a loop.
var CompareAndSet = Backoff{Initial: time.Millisecond, Max: 50 * time.Millisecond, Attempts: 8}

// permanent marks an error no further attempt can fix.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err so that Do returns it at once. A nil err stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// Do calls fn until it returns nil, returns an error marked Permanent, has been
// called b.Attempts times, or ctx ends. It returns nil or fn's last error (without
// the Permanent mark); when ctx ends first, ctx's error joined with fn's last one.
// attempt counts from 0.
func Do(ctx context.Context, b Backoff, fn func(ctx context.Context, attempt int) error) error {
	wait := b.Initial
	maxWait := max(b.Max, b.Initial)
	for attempt := 0; ; attempt++ {
		err := fn(ctx, attempt)
		if err == nil {
			return nil
		}
		if p, ok := err.(permanent); ok {
			return p.err
		}
		if b.Attempts > 0 && attempt+1 >= b.Attempts {
			return err
		}
		if ctx.Err() != nil {
			return errors.Join(ctx.Err(), err)
		}
		if wait > 0 {
			if !Sleep(ctx, wait) {
				return errors.Join(ctx.Err(), err)
			}
			wait = min(2*wait, maxWait)
		}
	}
}

// Sleep waits d, reporting false when ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
