package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// TestDispatchThroughServe: dashers publish positions on the firehose, the API finds
// them, assigns the nearest to an order, and the order's status shows the dasher.
func TestDispatchThroughServe(t *testing.T) {
	env := testenv.NATS(t)
	addr := startServe(t, env, topology.Topology{Partitions: 2})
	base := "http://" + addr
	restaurant := dispatch.Point{Lat: 40.7484, Lng: -73.9857}
	// Positions are core NATS: those sent before serve subscribed are lost, so the
	// dashers send theirs again until the search sees them, as apps do.
	sendPositions := func() {
		for i := range 5 {
			p := dispatch.Position{Point: dispatch.Destination(restaurant, float64(70*i), float64(150*(i+1))), At: time.Now(), SpeedMPS: 4}
			if err := env.Conn.Publish(dispatch.LocationsSubject(fmt.Sprintf("d%d", i)), dispatch.EncodePosition(p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Bad positions are dropped, and do not stop the subscriber.
	for _, bad := range []string{`{"lat":"x"}`, `{"lat":91,"lng":0,"at":"2026-01-01T00:00:00Z"}`, `not json`} {
		_ = env.Conn.Publish("dashers.locations.dbad", []byte(bad))
	}
	var near struct{ Dashers []dispatch.Hit }
	deadline := time.Now().Add(10 * time.Second)
	for len(near.Dashers) < 5 && time.Now().Before(deadline) {
		sendPositions()
		httpGetJSON(t, fmt.Sprintf("%s/v1/dashers/nearby?lat=%v&lng=%v&radius_m=1000&limit=3", base, restaurant.Lat, restaurant.Lng), &near)
		if len(near.Dashers) == 3 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(near.Dashers) != 3 || near.Dashers[0].DasherID != "d0" || near.Dashers[0].DistanceM > 151 || near.Dashers[0].DistanceM < 149 {
		t.Fatalf("nearby: %+v, want d0 at 150 m first, 3 answers", near.Dashers)
	}
	if code := httpCode(t, base+"/v1/dashers/nearby?lat=91&lng=x"); code != http.StatusBadRequest {
		t.Fatalf("bad search: %d", code)
	}

	env.Publish(t, testenv.Event("o1", schemas.SourcePlatform, 1, schemas.StatusCreated))
	if code := httpPostJSON(t, base+"/v1/orders/nope/assign", `{"pickup":{"lat":40.7,"lng":-73.9}}`, nil); code != http.StatusNotFound {
		t.Fatalf("assign an unknown order: %d, want 404", code)
	}
	var a dispatch.Assignment
	if code := httpPostJSON(t, base+"/v1/orders/o1/assign", fmt.Sprintf(`{"pickup":{"lat":%v,"lng":%v}}`, restaurant.Lat, restaurant.Lng), &a); code != http.StatusCreated {
		t.Fatalf("assign: %d", code)
	}
	if a.DasherID != "d0" || a.SourceSeq != 2 {
		t.Fatalf("assignment %+v, want d0 with source_seq 2 (after the platform's created)", a)
	}
	var order struct {
		DasherID string `json:"dasher_id"`
		Status   string `json:"status"`
	}
	for deadline := time.Now().Add(10 * time.Second); order.DasherID == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		httpGetJSON(t, base+"/v1/orders/o1", &order)
	}
	if order.DasherID != "d0" || order.Status != "created" {
		t.Fatalf("order %+v, want created with dasher d0", order)
	}
	if code := httpPostJSON(t, base+"/v1/orders/o1/assign/accept", `{"dasher_id":"d0"}`, &a); code != http.StatusOK || a.State != dispatch.LeaseConfirmed {
		t.Fatalf("accept: %d %+v", code, a)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`orderflow_dasher_locations_rejected_total{reason="non_numeric"} 1`, `orderflow_dasher_locations_rejected_total{reason="lat_out_of_range"} 1`, `orderflow_dasher_locations_rejected_total{reason="malformed_json"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func httpGetJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
}

func httpCode(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func httpPostJSON(t *testing.T, url, body string, v any) int {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// TestDeliveredAndCancelledOrdersFreeTheirDasher: with one dasher, a second order
// finds nobody until the first is delivered; a third, until the second is
// cancelled. The lease is given back by the status pipeline's milestones (also
// after the release consumer was deleted), and the dasher's leases are one order
// at a time throughout.
func TestDeliveredAndCancelledOrdersFreeTheirDasher(t *testing.T) {
	env := testenv.NATS(t)
	base := "http://" + startServe(t, env, topology.Topology{Partitions: 2})
	leases := env.WatchLeases(t)
	restaurant := dispatch.Point{Lat: 40.7484, Lng: -73.9857}
	for _, o := range []string{"o1", "o2", "o3"} {
		env.Publish(t, testenv.Event(o, schemas.SourcePlatform, 1, schemas.StatusCreated))
	}
	pickup := fmt.Sprintf(`{"pickup":{"lat":%v,"lng":%v}}`, restaurant.Lat, restaurant.Lng)
	// assign polls until the order gets a dasher (the index, the read path and
	// the release catch up asynchronously), and fails after 10 s. d0 keeps sending
	// its position meanwhile (core NATS: one sent before serve subscribed is lost).
	assign := func(order string) dispatch.Assignment {
		t.Helper()
		var a dispatch.Assignment
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			pos := dispatch.Position{Point: dispatch.Destination(restaurant, 90, 200), At: time.Now(), SpeedMPS: 4}
			if err := env.Conn.Publish(dispatch.LocationsSubject("d0"), dispatch.EncodePosition(pos)); err != nil {
				t.Fatal(err)
			}
			if code := httpPostJSON(t, base+"/v1/orders/"+order+"/assign", pickup, &a); code == http.StatusCreated {
				return a
			}
		}
		t.Fatalf("order %s got no dasher within 10 s", order)
		return a
	}
	if a := assign("o1"); a.DasherID != "d0" {
		t.Fatalf("o1: %+v, want d0", a)
	}
	if code := httpPostJSON(t, base+"/v1/orders/o1/assign/accept", `{"dasher_id":"d0"}`, nil); code != http.StatusOK {
		t.Fatalf("accept: %d", code)
	}
	if code := httpPostJSON(t, base+"/v1/orders/o2/assign", pickup, nil); code != http.StatusServiceUnavailable {
		t.Fatalf("o2 while d0 serves o1: %d, want 503", code)
	}

	env.Publish(t, testenv.Event("o1", schemas.SourceDriver, 1, schemas.StatusDelivered))
	if a := assign("o2"); a.DasherID != "d0" || a.SourceSeq != 2 {
		t.Fatalf("o2 after o1 was delivered: %+v, want d0 with source_seq 2", a)
	}
	if code := httpPostJSON(t, base+"/v1/orders/o3/assign", pickup, nil); code != http.StatusServiceUnavailable {
		t.Fatalf("o3 while d0 serves o2: %d, want 503", code)
	}
	// The release consumer deleted by hand comes back.
	if err := env.JS.DeleteConsumer(context.Background(), topology.MilestonesStream, topology.ReleaseConsumer); err != nil {
		t.Fatal(err)
	}
	// The platform's cancel follows its assignment event (source_seq 2).
	env.Publish(t, testenv.Event("o2", schemas.SourcePlatform, 3, schemas.StatusCancelled))
	if a := assign("o3"); a.DasherID != "d0" {
		t.Fatalf("o3 after o2 was cancelled: %+v, want d0", a)
	}

	// The watcher sees o3's lease; then the whole history is one order at a time.
	for deadline := time.Now().Add(10 * time.Second); len(leases.Orders("d0")) < 3 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
	}
	leases.Check(t)
	if got := leases.Orders("d0"); !slices.Equal(got, []string{"o1", "o2", "o3"}) {
		t.Fatalf("d0 leased to %v, want o1, o2, o3 in turn", got)
	}
}
