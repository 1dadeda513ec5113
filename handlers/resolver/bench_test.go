package resolver

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/orderflow/orderflow/schemas"
)

// benchStream is a realistic lane: many orders interleaved, each with a full
// lifecycle from all five sources, estimator predictions and eta-only updates, a
// producer race inside the order, and retries.
func benchStream(orders int) ([]State, []*schemas.Event, []int) {
	rng := rand.New(rand.NewPCG(1, 2))
	states := make([]State, orders)
	var events []*schemas.Event
	var owner []int
	perOrder := make([][]*schemas.Event, orders)
	for o := range orders {
		id := fmt.Sprintf("order-%d", o)
		states[o].reset(id)
		e := func(src schemas.Source, seq uint64, st schemas.Status) *schemas.Event {
			x := ev(src, seq, st)
			x.OrderID = id
			x.EventID = fmt.Sprintf("%s-%s-%d", id, src, seq)
			return x
		}
		eta := t0.Add(40 * time.Minute)
		list := []*schemas.Event{
			e(schemas.SourcePlatform, 1, schemas.StatusCreated),
			e(schemas.SourceMerchant, 1, schemas.StatusConfirmed),
			e(schemas.SourceMerchant, 2, schemas.StatusPreparing),
			e(schemas.SourceEstimator, 1, schemas.StatusReadyForPickup),
			e(schemas.SourceMerchant, 3, schemas.StatusReadyForPickup),
			e(schemas.SourceDriver, 1, schemas.StatusPickedUp),
			e(schemas.SourceEstimator, 2, ""),
			e(schemas.SourceDriver, 2, schemas.StatusEnRoute),
			e(schemas.SourceEstimator, 3, schemas.StatusArrived),
			e(schemas.SourceDriver, 3, schemas.StatusArrived),
			e(schemas.SourceDriver, 4, schemas.StatusDelivered),
		}
		list[0].CustomerID, list[0].RestaurantID, list[5].DasherID = "cust-1", "rest-1", "dash-1"
		list[3].ETA, list[6].ETA, list[8].ETA = &eta, &eta, &eta
		if o%10 == 0 {
			list = append(list, e(schemas.SourceAgent, 1, schemas.StatusArrived))
			list[len(list)-1].Reason = "customer says not delivered"
		}
		// Producer races: swap some neighbours; retries: repeat some events.
		for k := 1; k < len(list); k++ {
			if rng.IntN(4) == 0 {
				list[k-1], list[k] = list[k], list[k-1]
			}
		}
		for range 2 {
			k := rng.IntN(len(list))
			list = append(list[:k+1], list[k:]...)
		}
		perOrder[o] = list
	}
	for left := true; left; {
		left = false
		for o := range orders {
			if len(perOrder[o]) > 0 {
				events, owner = append(events, perOrder[o][0]), append(owner, o)
				perOrder[o], left = perOrder[o][1:], true
			}
		}
	}
	return states, events, owner
}

// BenchmarkApply measures one event folded into its order's state.
func BenchmarkApply(b *testing.B) {
	states, events, owner := benchStream(1024)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	k := 0
	for i := range b.N {
		if k == len(events) {
			k = 0
			for o := range states {
				states[o].reset(states[o].orderID)
			}
		}
		states[owner[k]].Apply(events[k], uint64(i+1))
		k++
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N), "allocs/event")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
