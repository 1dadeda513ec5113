package ingest

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/orderflow/orderflow/schemas"
)

// Limit is one actor's token bucket: Rate requests per second on average, Burst at once.
type Limit struct {
	Rate  float64
	Burst int
}

// DefaultLimits are per actor. A dasher or a merchant tablet sends a few events per
// order; the platform and the estimator are services speaking for many orders.
func DefaultLimits() map[schemas.Source]Limit {
	return map[schemas.Source]Limit{
		schemas.SourcePlatform:  {Rate: 500, Burst: 1000},
		schemas.SourceMerchant:  {Rate: 20, Burst: 40},
		schemas.SourceDriver:    {Rate: 10, Burst: 20},
		schemas.SourceEstimator: {Rate: 500, Burst: 1000},
		schemas.SourceAgent:     {Rate: 5, Burst: 10},
	}
}

// ParseLimit reads "source=rate[:burst]" (burst defaults to twice the rate, at least 1).
func ParseLimit(s string) (schemas.Source, Limit, error) {
	name, spec, ok := strings.Cut(s, "=")
	src := schemas.Source(name)
	if !ok || !src.Valid() {
		return "", Limit{}, fmt.Errorf("rate limit %q: want source=rate[:burst] with source one of %v", s, schemas.Sources)
	}
	r, b, hasBurst := strings.Cut(spec, ":")
	rt, err := strconv.ParseFloat(r, 64)
	if err != nil || rt <= 0 {
		return "", Limit{}, fmt.Errorf("rate limit %q: rate must be a positive number of requests per second", s)
	}
	l := Limit{Rate: rt, Burst: max(1, int(2*rt))}
	if hasBurst {
		if l.Burst, err = strconv.Atoi(b); err != nil || l.Burst < 1 {
			return "", Limit{}, fmt.Errorf("rate limit %q: burst must be a positive integer", s)
		}
	}
	return src, l, nil
}

// limiter holds one token bucket per (source, actor). Buckets that have refilled
// are forgotten, so memory follows the active actors, not every actor ever seen.
type limiter struct {
	limits map[schemas.Source]Limit
	mu     sync.Mutex
	bucket map[actorKey]*rate.Limiter
	sweep  time.Time
}

type actorKey struct {
	src   schemas.Source
	actor string
}

func newLimiter(limits map[schemas.Source]Limit) *limiter {
	return &limiter{limits: limits, bucket: make(map[actorKey]*rate.Limiter)}
}

// allow takes a token for the actor, or says how long until one is there.
func (l *limiter) allow(src schemas.Source, actor string, now time.Time) (bool, time.Duration) {
	lim, ok := l.limits[src]
	if !ok {
		return true, 0
	}
	k := actorKey{src, actor}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.sweep) > time.Minute {
		l.sweep = now
		for k, b := range l.bucket {
			if b.TokensAt(now) >= float64(b.Burst()) {
				delete(l.bucket, k)
			}
		}
	}
	b := l.bucket[k]
	if b == nil {
		b = rate.NewLimiter(rate.Limit(lim.Rate), lim.Burst)
		l.bucket[k] = b
	}
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}
