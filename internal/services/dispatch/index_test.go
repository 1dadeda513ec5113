package dispatch

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func at(p Point, s int) Position {
	return Position{Point: p, At: t0.Add(time.Duration(s) * time.Second)}
}

// bruteNearby is the specification: every dasher within the radius, nearest first.
func bruteNearby(pos map[string]Point, q Query) []string {
	var hits []Hit
	for id, p := range pos {
		if d := DistanceM(q.Center, p); d <= q.RadiusM {
			hits = append(hits, Hit{DasherID: id, DistanceM: d})
		}
	}
	slices.SortFunc(hits, func(a, b Hit) int {
		if c := cmp.Compare(a.DistanceM, b.DistanceM); c != 0 {
			return c
		}
		return cmp.Compare(a.DasherID, b.DasherID)
	})
	ids := make([]string, len(hits))
	for i, h := range hits {
		ids[i] = h.DasherID
	}
	return ids
}

func ids(hits []Hit) []string {
	out := make([]string, len(hits))
	for i, h := range hits {
		out[i] = h.DasherID
	}
	return out
}

// centre draws the places where geohash searches go wrong: cell edges, the
// antimeridian, the poles, and anywhere at all.
func centre(t *rapid.T) Point {
	switch rapid.IntRange(0, 4).Draw(t, "kind") {
	case 0: // a cell corner
		r := rapid.IntRange(0, cellsPerAxis).Draw(t, "row")
		c := rapid.IntRange(0, cellsPerAxis-1).Draw(t, "col")
		return Point{Lat: math.Min(90, -90+float64(r)*cellLatDeg), Lng: -180 + float64(c)*cellLngDeg}
	case 1: // the antimeridian
		return Point{Lat: rapid.Float64Range(-80, 80).Draw(t, "lat"), Lng: rapid.SampledFrom([]float64{-180, 180, 179.9999, -179.9999}).Draw(t, "lng")}
	case 2: // the poles
		return Point{Lat: rapid.SampledFrom([]float64{90, -90, 89.99, -89.999, 89.9}).Draw(t, "lat"), Lng: rapid.Float64Range(-180, 180).Draw(t, "lng")}
	default:
		return Point{Lat: rapid.Float64Range(-90, 90).Draw(t, "lat"), Lng: rapid.Float64Range(-180, 180).Draw(t, "lng")}
	}
}

func TestNearbyEqualsBruteForce(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := centre(t)
		radius := rapid.SampledFrom([]float64{1, 50, 600, 2000, 15000, 300000}).Draw(t, "radius")
		ix := NewIndex(4)
		pos := map[string]Point{}
		n := rapid.IntRange(0, 60).Draw(t, "n")
		for i := range n {
			// Around the circle's edge, where a missed cell shows.
			p := Destination(c, rapid.Float64Range(0, 360).Draw(t, "bearing"), radius*rapid.Float64Range(0, 2).Draw(t, "dist"))
			id := fmt.Sprintf("d%d", i)
			pos[id] = p
			ix.Update(id, at(p, 1), 0)
		}
		q := Query{Center: c, RadiusM: radius, Limit: rapid.IntRange(0, 8).Draw(t, "limit")}
		want := bruteNearby(pos, q)
		if q.Limit > 0 && len(want) > q.Limit {
			want = want[:q.Limit]
		}
		if got := ids(ix.Nearby(q)); !slices.Equal(got, want) {
			t.Fatalf("centre %+v radius %v:\n got %v\nwant %v", c, radius, got, want)
		}
	})
}

func TestNearbyAcrossTheAntimeridian(t *testing.T) {
	ix := NewIndex(0)
	ix.Update("east", at(Point{Lat: 0, Lng: 179.9995}, 1), 0)
	ix.Update("west", at(Point{Lat: 0, Lng: -179.9995}, 1), 0)
	ix.Update("far", at(Point{Lat: 0, Lng: 179.9}, 1), 0)
	hits := ix.Nearby(Query{Center: Point{Lat: 0, Lng: 180}, RadiusM: 500})
	if got := ids(hits); !slices.Equal(got, []string{"east", "west"}) {
		t.Fatalf("got %v, want east and west (about 56 m each way)", got)
	}
	if d := hits[0].DistanceM; d < 50 || d > 60 {
		t.Errorf("distance %v m, want about 55.7 m", d)
	}
}

func TestNearbyAroundThePole(t *testing.T) {
	ix := NewIndex(0)
	// Four dashers 1.1 km from the north pole, on opposite sides of the globe.
	for i, lng := range []float64{-179, -90, 0, 90} {
		ix.Update(fmt.Sprint("n", i), at(Point{Lat: 89.99, Lng: lng}, 1), 0)
	}
	ix.Update("south", at(Point{Lat: -89.99, Lng: 0}, 1), 0)
	if got := ids(ix.Nearby(Query{Center: Point{Lat: 90, Lng: 0}, RadiusM: 1200})); len(got) != 4 || slices.Contains(got, "south") {
		t.Fatalf("got %v, want the four northern dashers", got)
	}
	// From one of them, the one across the pole is 2.2 km away.
	if got := ids(ix.Nearby(Query{Center: Point{Lat: 89.99, Lng: 0}, RadiusM: 2300})); len(got) != 4 || got[0] != "n2" || got[3] != "n0" {
		t.Fatalf("got %v, want n2 first and n0 (across the pole) last", got)
	}
}

func TestNearbyAcrossACellEdge(t *testing.T) {
	ix := NewIndex(0)
	// A row boundary of the grid, and dashers 10 m either side of it.
	edge := -90 + 24000*cellLatDeg
	ix.Update("north", at(Point{Lat: edge + 0.00009, Lng: 10}, 1), 0)
	ix.Update("south", at(Point{Lat: edge - 0.00009, Lng: 10}, 1), 0)
	if cellOf(Point{Lat: edge + 0.00009, Lng: 10}) == cellOf(Point{Lat: edge - 0.00009, Lng: 10}) {
		t.Fatal("the test's dashers should be in different cells")
	}
	if got := ids(ix.Nearby(Query{Center: Point{Lat: edge + 0.00009, Lng: 10}, RadiusM: 25})); !slices.Equal(got, []string{"north", "south"}) {
		t.Fatalf("got %v", got)
	}
}

func TestUpdateKeepsTheNewestAndMovesCells(t *testing.T) {
	ix := NewIndex(0)
	a, b := Point{Lat: 52.5, Lng: 13.4}, Point{Lat: 48.85, Lng: 2.35}
	if applied, _ := ix.Update("d", at(a, 10), 0); !applied {
		t.Fatal("first position not applied")
	}
	if applied, _ := ix.Update("d", at(b, 5), 0); applied {
		t.Fatal("an older position replaced a newer one")
	}
	ix.Update("d", at(b, 11), 0)
	if hits := ix.Nearby(Query{Center: a, RadiusM: 1000}); len(hits) != 0 {
		t.Fatalf("dasher still found at its old cell: %v", hits)
	}
	if hits := ix.Nearby(Query{Center: b, RadiusM: 1000}); len(hits) != 1 {
		t.Fatalf("dasher not found at its new cell: %v", hits)
	}
	ix.Remove("d")
	if ix.Len() != 0 || len(ix.Nearby(Query{Center: b, RadiusM: 1000})) != 0 {
		t.Fatal("removed dasher still indexed")
	}
}

func TestUpdateAsksForAStoreWriteOncePerInterval(t *testing.T) {
	ix := NewIndex(0)
	p := Point{Lat: 1, Lng: 1}
	var stores int
	for s := 0; s < 60; s++ {
		if _, store := ix.Update("d", at(p, s), 10*time.Second); store {
			stores++
		}
	}
	if stores != 6 {
		t.Fatalf("%d store writes in 60 s at one per 10 s", stores)
	}
}

func TestNearbyFiltersAndLimits(t *testing.T) {
	ix := NewIndex(0)
	c := Point{Lat: 40.7, Lng: -74}
	for i := range 10 {
		ix.Update(fmt.Sprint("d", i), at(Destination(c, 90, float64(100*(i+1))), i), 0)
	}
	hits := ix.Nearby(Query{Center: c, RadiusM: 5000, Limit: 3, Since: t0.Add(2 * time.Second), Skip: func(id string) bool { return id == "d3" }})
	if got := ids(hits); !slices.Equal(got, []string{"d2", "d4", "d5"}) {
		t.Fatalf("got %v", got)
	}
	if math.Abs(hits[0].DistanceM-300) > 0.5 {
		t.Errorf("distance %v, want 300", hits[0].DistanceM)
	}
}

func TestIndexUnderConcurrentUpdatesAndSearches(t *testing.T) {
	ix := NewIndex(8)
	c := Point{Lat: 37.77, Lng: -122.42}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				id := fmt.Sprintf("d%d-%d", w, i%50)
				ix.Update(id, at(Destination(c, float64(i%360), float64(i%3000)), i), 0)
			}
		})
	}
	wg.Go(func() {
		for range 500 {
			for _, h := range ix.Nearby(Query{Center: c, RadiusM: 2000}) {
				if h.DistanceM > 2000 {
					t.Errorf("hit beyond the radius: %+v", h)
				}
			}
		}
	})
	wg.Wait()
	if ix.Len() != 200 {
		t.Fatalf("%d dashers, want 200", ix.Len())
	}
}

// The cell bound that lets a search stop early must never pass a real distance:
// every point of a cell is at least cellNearestM from the centre.
func TestCellNearestIsALowerBound(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		o := centre(t)
		near := Destination(o, rapid.Float64Range(0, 360).Draw(t, "bearing"), rapid.SampledFrom([]float64{0, 10, 700, 3000, 50000}).Draw(t, "dist"))
		row := clampRow(int(math.Floor((near.Lat + 90) / cellLatDeg)))
		col := int(math.Floor((near.Lng + 180) / cellLngDeg))
		lat0, lng0 := -90+float64(row)*cellLatDeg, -180+float64(col)*cellLngDeg
		p := Point{
			Lat: math.Min(90, lat0+rapid.Float64Range(0, 1).Draw(t, "u")*cellLatDeg),
			Lng: normLng(lng0 + rapid.Float64Range(0, 1).Draw(t, "v")*cellLngDeg),
		}
		if d, lb := DistanceM(o, p), cellNearestM(newOrigin(o), lat0, lng0); lb > d {
			t.Fatalf("centre %+v, point %+v of cell (%v, %v): bound %v m > distance %v m", o, p, lat0, lng0, lb, d)
		}
	})
}
