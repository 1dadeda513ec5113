package dispatch

import "math"

// EarthRadiusM is the mean Earth radius (IUGG), in metres.
const EarthRadiusM = 6371008.8

// Point is a WGS 84 position in degrees.
type Point struct {
	Lat float64 `json:"lat"`
	Lng float64 `json:"lng"`
}

// Valid reports whether p is a position on Earth.
func (p Point) Valid() bool {
	return p.Lat >= -90 && p.Lat <= 90 && p.Lng >= -180 && p.Lng <= 180
}

// DistanceM is the great-circle (haversine) distance between a and b in metres. It
// is exact across the antimeridian and at the poles, where planar shortcuts fail.
func DistanceM(a, b Point) float64 { return haversineM(newOrigin(a).haversine(b)) }

// origin is a point distances are measured from, with what every distance from it
// needs computed once: a search measures from its centre to every candidate.
type origin struct {
	p       Point
	φ, cosφ float64
}

func newOrigin(p Point) origin {
	φ := rad(p.Lat)
	return origin{p: p, φ: φ, cosφ: math.Cos(φ)}
}

// haversine is the haversine of the central angle from o to b: a monotone
// function of the distance, cheaper to compare than the distance itself.
func (o origin) haversine(b Point) float64 {
	φ2 := rad(b.Lat)
	dφ, dλ := φ2-o.φ, rad(b.Lng-o.p.Lng)
	return sq(math.Sin(dφ/2)) + o.cosφ*math.Cos(φ2)*sq(math.Sin(dλ/2))
}

// haversineM is the distance in metres of a haversine.
func haversineM(h float64) float64 { return 2 * EarthRadiusM * math.Asin(math.Min(1, math.Sqrt(h))) }

// Destination is the point reached from p after distM metres on the initial bearing
// (degrees clockwise from north), normalised to lng in [-180, 180).
func Destination(p Point, bearingDeg, distM float64) Point {
	δ, θ := distM/EarthRadiusM, rad(bearingDeg)
	φ1, λ1 := rad(p.Lat), rad(p.Lng)
	φ2 := math.Asin(math.Sin(φ1)*math.Cos(δ) + math.Cos(φ1)*math.Sin(δ)*math.Cos(θ))
	λ2 := λ1 + math.Atan2(math.Sin(θ)*math.Sin(δ)*math.Cos(φ1), math.Cos(δ)-math.Sin(φ1)*math.Sin(φ2))
	return Point{Lat: deg(φ2), Lng: normLng(deg(λ2))}
}

// boundingBox is the latitude/longitude box that contains every point within
// radiusM of p. full means every longitude (the circle contains a pole, or is wider
// than the globe at that latitude); otherwise [minLng, maxLng] may cross the
// antimeridian (minLng < -180 or maxLng > 180), which the caller wraps.
func boundingBox(p Point, radiusM float64) (minLat, maxLat, minLng, maxLng float64, full bool) {
	δ := radiusM / EarthRadiusM
	dLat := deg(δ)
	minLat, maxLat = p.Lat-dLat, p.Lat+dLat
	if minLat <= -90 || maxLat >= 90 || δ >= math.Pi/2 {
		return math.Max(minLat, -90), math.Min(maxLat, 90), -180, 180, true
	}
	// The widest longitude reached by a circle on the sphere (not at its centre's
	// latitude): asin(sin δ / cos φ).
	s := math.Sin(δ) / math.Cos(rad(p.Lat))
	if s >= 1 {
		return minLat, maxLat, -180, 180, true
	}
	dLng := deg(math.Asin(s))
	return minLat, maxLat, p.Lng - dLng, p.Lng + dLng, false
}

func normLng(lng float64) float64 {
	lng = math.Mod(lng+180, 360)
	if lng < 0 {
		lng += 360
	}
	return lng - 180
}

func rad(d float64) float64 { return d * math.Pi / 180 }
func deg(r float64) float64 { return r * 180 / math.Pi }
func sq(x float64) float64  { return x * x }
