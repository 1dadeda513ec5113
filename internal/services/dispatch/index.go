package dispatch

import (
	"cmp"
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/mmcloughlin/geohash"
)

// cellBits is the index's geohash precision: 30 bits = 6 characters, cells of
// about 1.2 km × 0.6 km at the equator. A 2 km search looks at a few dozen cells,
// and a cell in a dense city holds tens of dashers, not thousands.
const cellBits = 30

// Per-axis cells at cellBits: geohash interleaves longitude and latitude bits,
// starting with longitude, so each axis gets half.
const (
	cellsPerAxis = 1 << (cellBits / 2)
	cellLatDeg   = 180.0 / cellsPerAxis
	cellLngDeg   = 360.0 / cellsPerAxis
)

// maxQueryCells bounds the cells one search enumerates. A search that would cover
// more (a huge radius, or a circle around a pole, where every longitude is in
// range) scans the dashers instead: still exact, and such searches are rare.
const maxQueryCells = 4096

// DefaultShards is the index's shard count when NewIndex is given 0.
const DefaultShards = 32

// Position is a dasher's reported position.
type Position struct {
	Point
	// At is when the device measured it.
	At time.Time
	// SpeedMPS is the reported ground speed in metres per second.
	SpeedMPS float64
}

// Hit is one search result.
type Hit struct {
	DasherID  string    `json:"dasher_id"`
	DistanceM float64   `json:"distance_m"`
	Lat       float64   `json:"lat"`
	Lng       float64   `json:"lng"`
	At        time.Time `json:"at"`
	SpeedMPS  float64   `json:"speed"`
}

type entry struct {
	pos      Position
	cell     uint64
	storedAt time.Time // the At of the last position written to the store
}

// shard holds the dashers whose id hashes to it: their positions and, per cell,
// who is in it. Sharding by dasher keeps an update to one lock; a search visits
// every shard, each under its read lock only for the cells it looks at.
type shard struct {
	mu    sync.RWMutex
	pos   map[string]*entry
	cells map[uint64]map[string]*entry
}

// Index is the in-memory geospatial index of the latest position of every dasher.
// It is safe for concurrent use.
type Index struct {
	seed   maphash.Seed
	shards []shard
}

// NewIndex returns an empty index with n shards (DefaultShards when n is 0).
func NewIndex(n int) *Index {
	if n <= 0 {
		n = DefaultShards
	}
	ix := &Index{seed: maphash.MakeSeed(), shards: make([]shard, n)}
	for i := range ix.shards {
		ix.shards[i].pos = make(map[string]*entry)
		ix.shards[i].cells = make(map[uint64]map[string]*entry)
	}
	return ix
}

func (ix *Index) shard(id string) *shard {
	return &ix.shards[maphash.String(ix.seed, id)%uint64(len(ix.shards))]
}

// cellOf is the geohash cell of p. The poles and lng = 180 are moved onto the
// grid (lat 90 into the top row, lng 180 is lng -180) so every valid point has a cell.
func cellOf(p Point) uint64 {
	lat := math.Min(p.Lat, math.Nextafter(90, 0))
	lng := p.Lng
	if lng >= 180 {
		lng = -180
	}
	return geohash.EncodeIntWithPrecision(lat, lng, cellBits)
}

// Update records p as id's position unless the index already holds one measured at
// the same time or later: positions arrive out of order from parallel subscribers
// and from the store at start, and the newest must win whatever the arrival order.
// storeEvery > 0 asks whether the position is due to be written to the store
// (store is true at most once per storeEvery of device time per dasher).
func (ix *Index) Update(id string, p Position, storeEvery time.Duration) (applied, store bool) {
	cell := cellOf(p.Point)
	s := ix.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.pos[id]
	if ok && !p.At.After(e.pos.At) {
		return false, false
	}
	if !ok {
		e = &entry{}
		s.pos[id] = e
	} else if e.cell != cell {
		s.removeFromCell(id, e.cell)
	}
	if !ok || e.cell != cell {
		m := s.cells[cell]
		if m == nil {
			m = make(map[string]*entry)
			s.cells[cell] = m
		}
		m[id] = e
	}
	e.pos, e.cell = p, cell
	if storeEvery > 0 && p.At.Sub(e.storedAt) >= storeEvery {
		e.storedAt = p.At
		store = true
	}
	return true, store
}

func (s *shard) removeFromCell(id string, cell uint64) {
	m := s.cells[cell]
	delete(m, id)
	if len(m) == 0 {
		delete(s.cells, cell)
	}
}

// Remove forgets id.
func (ix *Index) Remove(id string) {
	s := ix.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.pos[id]; ok {
		s.removeFromCell(id, e.cell)
		delete(s.pos, id)
	}
}

// Get returns id's position.
func (ix *Index) Get(id string) (Position, bool) {
	s := ix.shard(id)
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.pos[id]
	if !ok {
		return Position{}, false
	}
	return e.pos, true
}

// Len is the number of dashers indexed.
func (ix *Index) Len() int {
	n := 0
	for i := range ix.shards {
		s := &ix.shards[i]
		s.mu.RLock()
		n += len(s.pos)
		s.mu.RUnlock()
	}
	return n
}

// Query is one nearby search.
type Query struct {
	Center  Point
	RadiusM float64
	// Limit caps the answer (0 = no cap).
	Limit int
	// Since, when set, leaves out positions measured before it (dashers gone quiet).
	Since time.Time
	// Skip, when set, leaves out the dashers it returns true for.
	Skip func(id string) bool
}

// Nearby returns the dashers within q.RadiusM of q.Center, nearest first (ties by
// id, so answers are deterministic), each with its distance. It visits the cells
// nearest first (by a lower bound of the distance to any point of the cell) and,
// with a Limit, keeps only the best Limit candidates as it goes (a bounded
// max-heap) and stops at the first cell that cannot hold anyone nearer than the
// worst kept: in a dense city the nearest ten are found in a cell or two, not
// among every dasher in range.
func (ix *Index) Nearby(q Query) []Hit {
	o := newOrigin(q.Center)
	cells, scan := queryCells(o, q.RadiusM)
	// Candidates beyond the radius are dropped on the haversine, before the
	// distance's arcsine; the margin leaves the last word to the exact distance.
	hMax := math.Inf(1)
	if a := q.RadiusM / (2 * EarthRadiusM); a < math.Pi/2 {
		hMax = sq(math.Sin(a))*(1+1e-9) + 1e-18
	}
	top := hitHeap{limit: q.Limit}
	if q.Limit > 0 {
		top.hits = make([]Hit, 0, q.Limit)
	}
	consider := func(id string, e *entry) {
		if !q.Since.IsZero() && e.pos.At.Before(q.Since) {
			return
		}
		h := o.haversine(e.pos.Point)
		if h > hMax {
			return
		}
		d := haversineM(h)
		if d > q.RadiusM || !top.wants(d, id) || (q.Skip != nil && q.Skip(id)) {
			return
		}
		top.push(Hit{DasherID: id, DistanceM: d, Lat: e.pos.Lat, Lng: e.pos.Lng, At: e.pos.At, SpeedMPS: e.pos.SpeedMPS})
	}
	for i := range ix.shards {
		s := &ix.shards[i]
		s.mu.RLock()
		if scan {
			for id, e := range s.pos {
				consider(id, e)
			}
		} else {
			for _, c := range cells {
				if top.full() && c.nearestM > top.hits[0].DistanceM {
					break // every cell left is farther than the worst kept
				}
				for id, e := range s.cells[c.cell] {
					consider(id, e)
				}
			}
		}
		s.mu.RUnlock()
	}
	hits := top.hits
	slices.SortFunc(hits, compareHits)
	return hits
}

// compareHits orders by distance, then id.
func compareHits(a, b Hit) int {
	switch {
	case a.DistanceM < b.DistanceM:
		return -1
	case a.DistanceM > b.DistanceM:
		return 1
	case a.DasherID < b.DasherID:
		return -1
	case a.DasherID > b.DasherID:
		return 1
	}
	return 0
}

// hitHeap keeps the limit best hits seen (all of them when limit is 0), as a
// max-heap on (distance, id) so the worst kept is at the root.
type hitHeap struct {
	limit int
	hits  []Hit
}

func (h *hitHeap) full() bool { return h.limit > 0 && len(h.hits) >= h.limit }

// wants reports whether a hit at distance d with this id would be kept.
func (h *hitHeap) wants(d float64, id string) bool {
	return !h.full() || compareHits(Hit{DistanceM: d, DasherID: id}, h.hits[0]) < 0
}

func (h *hitHeap) push(x Hit) {
	if h.limit <= 0 {
		h.hits = append(h.hits, x)
		return
	}
	if !h.full() {
		h.hits = append(h.hits, x)
		for i := len(h.hits) - 1; i > 0; {
			p := (i - 1) / 2
			if compareHits(h.hits[p], h.hits[i]) >= 0 {
				break
			}
			h.hits[p], h.hits[i] = h.hits[i], h.hits[p]
			i = p
		}
		return
	}
	h.hits[0] = x
	for i, n := 0, len(h.hits); ; {
		l, r, big := 2*i+1, 2*i+2, i
		if l < n && compareHits(h.hits[l], h.hits[big]) > 0 {
			big = l
		}
		if r < n && compareHits(h.hits[r], h.hits[big]) > 0 {
			big = r
		}
		if big == i {
			return
		}
		h.hits[i], h.hits[big] = h.hits[big], h.hits[i]
		i = big
	}
}

// queryCell is a cell a search visits, with a lower bound of the distance from the
// search's centre to any point in it.
type queryCell struct {
	cell     uint64
	nearestM float64
}

// queryCells lists the cells within radiusM of o among those that intersect the
// bounding box of the circle (wrapping longitudes across the antimeridian), nearest
// first. scan is true when the box holds more than maxQueryCells cells.
func queryCells(o origin, radiusM float64) (cells []queryCell, scan bool) {
	minLat, maxLat, minLng, maxLng, full := boundingBox(o.p, radiusM)
	row0 := clampRow(int(math.Floor((minLat + 90) / cellLatDeg)))
	row1 := clampRow(int(math.Floor((maxLat + 90) / cellLatDeg)))
	var col0, col1 int
	if full {
		col0, col1 = 0, cellsPerAxis-1
	} else {
		col0 = int(math.Floor((minLng + 180) / cellLngDeg))
		col1 = int(math.Floor((maxLng + 180) / cellLngDeg))
		if col1-col0+1 > cellsPerAxis {
			col0, col1 = 0, cellsPerAxis-1
		}
	}
	n := (row1 - row0 + 1) * (col1 - col0 + 1)
	if n > maxQueryCells {
		return nil, true
	}
	cells = make([]queryCell, 0, n)
	for r := row0; r <= row1; r++ {
		lat0 := -90 + float64(r)*cellLatDeg
		for col := col0; col <= col1; col++ {
			w := ((col % cellsPerAxis) + cellsPerAxis) % cellsPerAxis
			lng0 := -180 + float64(w)*cellLngDeg
			near := cellNearestM(o, lat0, lng0)
			if near > radiusM {
				continue
			}
			cells = append(cells, queryCell{
				cell:     geohash.EncodeIntWithPrecision(lat0+cellLatDeg/2, lng0+cellLngDeg/2, cellBits),
				nearestM: near,
			})
		}
	}
	slices.SortFunc(cells, func(a, b queryCell) int { return cmp.Compare(a.nearestM, b.nearestM) })
	return cells, false
}

// cellNearestM is a lower bound of the distance from o to any point of the cell
// whose south-west corner is (lat0, lng0). The haversine is a sum of a latitude
// term and a longitude term scaled by the cosines of both latitudes; each is at
// least its least value over the cell (the nearest latitude, the nearest
// longitude going either way round, the least cosine, at an edge since cos is
// concave on [-90°, 90°]), so their sum bounds the haversine of every point.
// The bound is lowered by a hair so rounding never makes it pass a real distance.
func cellNearestM(o origin, lat0, lng0 float64) float64 {
	lat1 := lat0 + cellLatDeg
	var dLat float64
	switch {
	case o.p.Lat < lat0:
		dLat = lat0 - o.p.Lat
	case o.p.Lat > lat1:
		dLat = o.p.Lat - lat1
	}
	// Degrees east of o to the cell's west edge, in [0, 360).
	east := math.Mod(lng0-o.p.Lng+720, 360)
	var dLng float64
	if east > 0 && east+cellLngDeg < 360 { // o is not within the cell's longitudes
		dLng = math.Min(east, 360-east-cellLngDeg)
	}
	minCos := math.Max(0, math.Min(math.Cos(rad(lat0)), math.Cos(rad(lat1))))
	h := sq(math.Sin(rad(dLat)/2)) + o.cosφ*minCos*sq(math.Sin(rad(dLng)/2))
	return math.Max(0, haversineM(h)*(1-1e-9)-1e-6)
}

func clampRow(r int) int { return max(0, min(cellsPerAxis-1, r)) }
