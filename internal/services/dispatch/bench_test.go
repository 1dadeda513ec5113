package dispatch

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func BenchmarkHandle(b *testing.B) {
	l, err := NewLocations(nil, NewIndex(0), LocationsConfig{StoreEvery: -1, Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	c := Point{Lat: 40.7, Lng: -74}
	subjects := make([]string, 10000)
	bodies := make([][]byte, 10000)
	for i := range bodies {
		subjects[i] = LocationsSubject(fmt.Sprint("d", i))
		bodies[i] = EncodePosition(Position{Point: Destination(c, float64(i), float64(i)), At: t0.Add(time.Duration(i) * time.Millisecond), SpeedMPS: 5})
	}
	l.cfg.Now = func() time.Time { return t0.Add(time.Hour) }
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l.Handle(subjects[i%len(subjects)], bodies[i%len(bodies)])
	}
}

func BenchmarkNearby100k(b *testing.B) {
	ix := NewIndex(0)
	c := Point{Lat: 40.7484, Lng: -73.9857}
	for i := range 100_000 {
		ix.Update(fmt.Sprint("d", i), Position{Point: Destination(c, float64(i*7919%360), float64(i*104729%15000)), At: t0}, 0)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ix.Nearby(Query{Center: Destination(c, float64(i%360), float64(i%10000)), RadiusM: 2000, Limit: 10})
	}
}

// BenchmarkHandleWhileSearching: updates from every P while one goroutine searches
// without pause, to show the shards' lock contention (run with -mutexprofile).
func BenchmarkHandleWhileSearching(b *testing.B) {
	l, err := NewLocations(nil, NewIndex(0), LocationsConfig{StoreEvery: -1, Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	c := Point{Lat: 40.7484, Lng: -73.9857}
	const n = 100_000
	subjects := make([]string, n)
	bodies := make([][]byte, n)
	for i := range bodies {
		subjects[i] = LocationsSubject(fmt.Sprint("d", i))
		bodies[i] = EncodePosition(Position{Point: Destination(c, float64(i*7919%360), float64(i*104729%15000)), At: t0.Add(time.Duration(i) * time.Microsecond), SpeedMPS: 5})
		l.Handle(subjects[i], bodies[i])
	}
	later := make([][]byte, n)
	for i := range later {
		later[i] = EncodePosition(Position{Point: Destination(c, float64(i*7919%360), float64(i*104729%15000)+20), At: t0.Add(time.Minute + time.Duration(i)*time.Microsecond), SpeedMPS: 5})
	}
	l.cfg.Now = func() time.Time { return t0.Add(time.Hour) }
	stop := make(chan struct{})
	searched := make(chan int)
	go func() {
		k := 0
		for {
			select {
			case <-stop:
				searched <- k
				return
			default:
			}
			l.index.Nearby(Query{Center: Destination(c, float64(k%360), float64(k%10000)), RadiusM: 2000, Limit: 10})
			k++
		}
	}()
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1)) % n
			l.Handle(subjects[i], later[i])
		}
	})
	b.StopTimer()
	close(stop)
	b.ReportMetric(float64(<-searched)/b.Elapsed().Seconds(), "searches/s")
}
