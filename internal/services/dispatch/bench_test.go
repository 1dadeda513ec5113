package dispatch

import (
	"fmt"
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
