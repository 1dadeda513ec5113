package retry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/orderflow/orderflow/internal/retry"
)

var errTransient = errors.New("transient")

func TestDoStopsAtSuccess(t *testing.T) {
	calls := 0
	err := retry.Do(context.Background(), retry.Backoff{Attempts: 5}, func(context.Context, int) error {
		calls++
		if calls < 3 {
			return errTransient
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Do = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestDoReturnsTheLastErrorWhenAttemptsRunOut(t *testing.T) {
	var seen []int
	err := retry.Do(context.Background(), retry.Backoff{Attempts: 4}, func(_ context.Context, attempt int) error {
		seen = append(seen, attempt)
		return errTransient
	})
	if !errors.Is(err, errTransient) || len(seen) != 4 || seen[3] != 3 {
		t.Fatalf("Do = %v with attempts %v, want errTransient after attempts 0..3", err, seen)
	}
}

func TestDoReturnsAPermanentErrorAtOnceUnmarked(t *testing.T) {
	calls := 0
	err := retry.Do(context.Background(), retry.Backoff{}, func(context.Context, int) error {
		calls++
		return retry.Permanent(errTransient)
	})
	if err != errTransient || calls != 1 {
		t.Fatalf("Do = %#v after %d calls, want errTransient itself after 1", err, calls)
	}
	if retry.Permanent(nil) != nil {
		t.Fatal("Permanent(nil) is not nil")
	}
}

func TestDoEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := retry.Do(ctx, retry.Backoff{Initial: time.Hour}, func(context.Context, int) error {
		calls++
		cancel()
		return errTransient
	})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errTransient) || calls != 1 {
		t.Fatalf("Do = %v after %d calls, want context.Canceled and errTransient after 1", err, calls)
	}
}

func TestDoDoublesTheWaitUpToMax(t *testing.T) {
	var at []time.Time
	b := retry.Backoff{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond, Attempts: 4}
	_ = retry.Do(context.Background(), b, func(context.Context, int) error {
		at = append(at, time.Now())
		return errTransient
	})
	// Waits are at least 10, 20, 20 ms (never a timed upper bound: the machine is shared).
	for i, least := range []time.Duration{10, 20, 20} {
		if d := at[i+1].Sub(at[i]); d < least*time.Millisecond {
			t.Fatalf("wait %d was %s, want at least %dms", i, d, least)
		}
	}
}
