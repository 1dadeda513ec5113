package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/services/ingest"
	"github.com/orderflow/orderflow/internal/tools/simulate"
	"github.com/orderflow/orderflow/schemas"
)

// ingestClients is how many HTTP clients post at once in the throughput run, each
// on its own keep-alive connection.
const ingestClients = 16

// IngestResult is the ingest phase: POST /v1/orders/{id}/events through serve's own
// HTTP listener, each request with a bearer token minted for the local key (as
// `orderflow token issue` does) and answered once the WAL has stored the event,
// against raw JetStream publish of the same events (asynchronous, as fast as the
// server acknowledges) in the same run. Each workload is fresh: orders no other phase
// has seen, the same generator config under its own order-id prefix. The pipeline runs
// meanwhile and folds what is posted, in both runs alike.
type IngestResult struct {
	// Clients post concurrently in the throughput run.
	Clients int `json:"clients"`
	// HTTPEvents were answered 202 in the throughput run, at HTTPRate.
	HTTPEvents int     `json:"http_events"`
	HTTPRate   float64 `json:"http_per_s"`
	// RawEvents were published and acknowledged in the raw run, at RawRate.
	RawEvents int     `json:"raw_events"`
	RawRate   float64 `json:"raw_publish_per_s"`
	Ratio     float64 `json:"http_to_raw_ratio"`
	// LatencyRate is a quarter of HTTPRate: single POSTs paced at it, timed from
	// the request to its 202.
	LatencyRate float64 `json:"latency_rate_per_s"`
	Samples     int     `json:"latency_samples"`
	P50Ms       float64 `json:"post_p50_ms"`
	P99Ms       float64 `json:"post_p99_ms"`
	// Late counts paced requests sent late because every in-flight slot was busy:
	// the server, not the pacing, set the rate then.
	Late int `json:"late"`
	// Limited counts 429s over both HTTP runs: the bench sets limits it should not reach.
	Limited int `json:"rate_limited"`
}

// benchIngestLimits lets every actor of every source post far faster than the bench
// can, so the phase measures the API, not its rate limiter.
func benchIngestLimits() map[schemas.Source]ingest.Limit {
	out := map[schemas.Source]ingest.Limit{}
	for _, s := range schemas.Sources {
		out[s] = ingest.Limit{Rate: 1e9, Burst: 1 << 30}
	}
	return out
}

// ingestPhase measures the ingest API at httpAddr, whose tokens the local key in
// dataDir signs, and raw publish on js, each for at most budget, then single POSTs at
// a quarter of the HTTP rate for budget. It waits for the pipeline to drain after each
// run, so no run shares the machine with the previous one's folding.
func ingestPhase(ctx context.Context, js jetstream.JetStream, httpAddr, dataDir string, cfg Config, budget time.Duration) (IngestResult, error) {
	res := IngestResult{Clients: ingestClients}
	key, err := auth.LoadOrCreateTokenKey(auth.Dir(dataDir))
	if err != nil {
		return res, err
	}
	gen := func(prefix string, orders int) ([]simulate.Message, error) {
		msgs, _, err := simulate.Generate(simulate.Config{Seed: cfg.Seed + 3000, Orders: max(orders, 1), OrderIDPrefix: prefix})
		return msgs, err
	}
	orders := max(cfg.Orders/2, 10)

	// Raw publish.
	msgs, err := gen("ingest-raw-", orders)
	if err != nil {
		return res, err
	}
	if res.RawEvents, res.RawRate, err = rawPublish(ctx, js, msgs, budget); err != nil {
		return res, err
	}
	if err := waitDrained(ctx, js); err != nil {
		return res, err
	}

	// HTTP, the same events under their own order ids.
	if msgs, err = gen("ingest-http-", orders); err != nil {
		return res, err
	}
	p, err := newPoster(httpAddr, key, msgs)
	if err != nil {
		return res, err
	}
	var next atomic.Int64
	var accepted atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, ingestClients)
	deadline := time.Now().Add(budget)
	start := time.Now()
	for c := 0; c < ingestClients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(msgs) {
					return
				}
				ok, err := p.post(ctx, i)
				if err != nil {
					errs <- err
					return
				}
				if ok {
					accepted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return res, err
	}
	res.HTTPEvents = int(accepted.Load())
	res.Limited = int(p.limited.Load())
	res.HTTPRate = float64(res.HTTPEvents) / elapsed.Seconds()
	if res.RawRate > 0 {
		res.Ratio = res.HTTPRate / res.RawRate
	}
	if err := waitDrained(ctx, js); err != nil {
		return res, err
	}

	// Single POSTs at a quarter of that rate.
	res.LatencyRate = res.HTTPRate / 4
	if msgs, err = gen("ingest-lat-", int(res.LatencyRate*budget.Seconds()/9.5)+1); err != nil {
		return res, err
	}
	if p, err = newPoster(httpAddr, key, msgs); err != nil {
		return res, err
	}
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	slots := make(chan struct{}, ingestClients)
	start = time.Now()
	for i := range msgs {
		if time.Since(start) >= budget || ctx.Err() != nil {
			break
		}
		if d := simulate.PaceDelay(i, res.LatencyRate, time.Since(start)); d > 0 {
			time.Sleep(d)
		}
		select {
		case slots <- struct{}{}:
		default:
			res.Late++
			slots <- struct{}{}
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			t0 := time.Now()
			ok, err := p.post(ctx, i)
			d := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil && firstErr == nil:
				firstErr = err
			case ok:
				lat = append(lat, d)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return res, firstErr
	}
	res.Samples = len(lat)
	res.P50Ms, res.P99Ms = quantileMs(lat, 0.50), quantileMs(lat, 0.99)
	res.Limited += int(p.limited.Load())
	return res, waitDrained(ctx, js)
}

// rawPublish publishes msgs asynchronously, as fast as the server acknowledges,
// until they are all sent or budget has passed, and returns how many it sent and
// their rate up to the last ack (Publish returns once every publish is acknowledged).
func rawPublish(ctx context.Context, js jetstream.JetStream, msgs []simulate.Message, budget time.Duration) (int, float64, error) {
	i := 0
	start := time.Now()
	sent, err := simulate.Publish(ctx, js, func() (simulate.Message, bool) {
		if i == len(msgs) || time.Since(start) >= budget {
			return simulate.Message{}, false
		}
		i++
		return msgs[i-1], true
	}, 0, nil)
	if err != nil {
		return 0, 0, err
	}
	return sent, float64(sent) / time.Since(start).Seconds(), nil
}

// poster posts a workload's events to the ingest API, each with the token of its
// source and actor.
type poster struct {
	url     string
	client  *http.Client
	msgs    []simulate.Message
	tokens  []string // per message
	limited *atomic.Int64
}

// newPoster mints, before anything is timed, one token per (source, actor) of msgs:
// the actor-bound sources must post as the event's actor_id.
func newPoster(addr string, key ed25519.PrivateKey, msgs []simulate.Message) (*poster, error) {
	p := &poster{
		url:     "http://" + addr + "/v1/orders/",
		client:  &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: ingestClients, MaxConnsPerHost: ingestClients}, Timeout: 30 * time.Second},
		msgs:    msgs,
		tokens:  make([]string, len(msgs)),
		limited: new(atomic.Int64),
	}
	minted := map[[2]string]string{}
	for i, m := range msgs {
		if m.Invalid != "" {
			return nil, fmt.Errorf("ingest workload: message %d is invalid (%s)", i, m.Invalid)
		}
		actor := m.Event.ActorID
		if actor == "" {
			actor = "bench-" + string(m.Event.Source)
		}
		k := [2]string{string(m.Event.Source), actor}
		if minted[k] == "" {
			tok, err := auth.Issue(key, auth.IssueRequest{Source: m.Event.Source, ActorID: actor})
			if err != nil {
				return nil, fmt.Errorf("token for %s %s: %w", k[0], k[1], err)
			}
			minted[k] = tok
		}
		p.tokens[i] = minted[k]
	}
	return p, nil
}

// post sends message i and reports whether it was answered 202; a 429 is counted
// and false, any other answer an error.
func (p *poster) post(ctx context.Context, i int) (bool, error) {
	m := p.msgs[i]
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+m.Event.OrderID+"/events", bytes.NewReader(m.Body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+p.tokens[i])
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return false, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusAccepted:
		return true, nil
	case http.StatusTooManyRequests:
		p.limited.Add(1)
		return false, nil
	}
	return false, fmt.Errorf("POST %s event %s: %s %s", m.Event.OrderID, m.MsgID, resp.Status, bytes.TrimSpace(body))
}
