package simulate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderflow/orderflow/internal/services/dispatch"
)

// DashersConfig configures moving dashers.
type DashersConfig struct {
	N      int
	Seed   uint64
	Center dispatch.Point
	// RadiusM is the size of the city they drive in.
	RadiusM float64
	// Tick is the simulated GPS fix interval (the app measures every Tick, and sends
	// per dispatch.DefaultDeadBand).
	Tick time.Duration
}

type dasher struct {
	id        string
	pos, goal dispatch.Point
	leg       int // 0: north-south, 1: east-west (city blocks, not crow flight)
	speed     float64
	waitUntil time.Time
	sent      dispatch.Position
}

// Dashers moves N dashers through a grid city: each drives block-wise (first along
// the meridian, then along the parallel) to a random destination at 4–10 m/s, waits
// 30 s–2 min there (a pickup or a drop-off), and goes on. Positions go to
// dashers.locations.<id> following dispatch.DefaultDeadBand. It runs until ctx ends
// and returns how many positions it sent.
func Dashers(ctx context.Context, nc *nats.Conn, cfg DashersConfig) (int, error) {
	if cfg.Tick == 0 {
		cfg.Tick = time.Second
	}
	if cfg.RadiusM == 0 {
		cfg.RadiusM = 8000
	}
	if (cfg.Center == dispatch.Point{}) {
		cfg.Center = dispatch.Point{Lat: 40.7484, Lng: -73.9857}
	}
	r := rand.New(rand.NewPCG(cfg.Seed, 7))
	place := func() dispatch.Point {
		return dispatch.Destination(cfg.Center, r.Float64()*360, cfg.RadiusM*r.Float64())
	}
	ds := make([]*dasher, cfg.N)
	for i := range ds {
		ds[i] = &dasher{id: fmt.Sprintf("dasher-%d", i), pos: place(), goal: place(), speed: 4 + 6*r.Float64()}
	}
	t := time.NewTicker(cfg.Tick)
	defer t.Stop()
	sent := 0
	for {
		select {
		case <-ctx.Done():
			return sent, nc.Flush()
		case now := <-t.C:
			for _, d := range ds {
				speed := d.step(now, cfg.Tick, r, place)
				p := dispatch.Position{Point: d.pos, At: now, SpeedMPS: speed}
				if !dispatch.DefaultDeadBand.ShouldSend(d.sent, p) {
					continue
				}
				if err := nc.Publish(dispatch.LocationsSubject(d.id), dispatch.EncodePosition(p)); err != nil {
					return sent, err
				}
				d.sent = p
				sent++
			}
		}
	}
}

// step moves d by one tick and returns its speed.
func (d *dasher) step(now time.Time, tick time.Duration, r *rand.Rand, place func() dispatch.Point) float64 {
	if now.Before(d.waitUntil) {
		return 0
	}
	budget := d.speed * tick.Seconds()
	for budget > 0 {
		corner := dispatch.Point{Lat: d.goal.Lat, Lng: d.pos.Lng}
		target := corner
		if d.leg == 1 {
			target = d.goal
		}
		dist := dispatch.DistanceM(d.pos, target)
		if dist > budget {
			f := budget / dist
			d.pos = dispatch.Point{Lat: d.pos.Lat + (target.Lat-d.pos.Lat)*f, Lng: d.pos.Lng + (target.Lng-d.pos.Lng)*f}
			return d.speed
		}
		d.pos, budget = target, budget-dist
		if d.leg == 0 {
			d.leg = 1
			continue
		}
		d.leg, d.goal, d.speed = 0, place(), 4+6*r.Float64()
		d.waitUntil = now.Add(30*time.Second + time.Duration(r.IntN(90))*time.Second)
		return 0
	}
	return d.speed
}
