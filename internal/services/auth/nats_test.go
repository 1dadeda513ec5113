package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/adapters/embedded"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/services/dispatch"
	"github.com/orderflow/orderflow/internal/services/estimator"
	"github.com/orderflow/orderflow/internal/testsupport/testenv"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// secureServer is an embedded JetStream server that trusts only the authority of
// its data directory, provisioned with orderflow's topology by the pipeline user.
type secureServer struct {
	url   string
	dir   string
	authz *auth.Authority
	admin jetstream.JetStream
}

func startSecure(t *testing.T) *secureServer {
	t.Helper()
	dir := t.TempDir()
	authz, err := auth.LoadOrCreateAuthority(auth.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := embedded.Start(ctx, embedded.Config{
		DataDir: dir, Listen: "127.0.0.1:-1", Configure: authz.Configure,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4})), // the violations these tests provoke are logged as errors
	})
	if err != nil {
		t.Fatalf("start nats with auth: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	s := &secureServer{url: srv.ClientURL(), dir: dir, authz: authz}
	nc := s.connect(t, s.credsFile(t, auth.RolePipeline), nil)
	t.Cleanup(nc.Close)
	if s.admin, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if _, err := topology.Provision(ctx, s.admin, topology.Topology{Partitions: 2}); err != nil {
		t.Fatalf("the pipeline user cannot provision: %v", err)
	}
	return s
}

// credsFile writes a role's .creds file, as `orderflow creds issue` does.
func (s *secureServer) credsFile(t *testing.T, role auth.Role) string {
	t.Helper()
	b, err := s.authz.UserCreds(role, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.dir, string(role)+".creds")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// dasherCredsFile writes a dasher's own .creds file, as `orderflow creds issue
// --role driver --dasher ID` does.
func (s *secureServer) dasherCredsFile(t *testing.T, dasher string) string {
	t.Helper()
	b, err := s.authz.DasherCreds(dasher, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.dir, "dasher-"+dasher+".creds")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// connect reads the file as a client of the role does: credentials from the
// .creds file, and the role's inbox prefix.
func (s *secureServer) connect(t *testing.T, creds string, onErr func(error)) *nats.Conn {
	t.Helper()
	b, err := os.ReadFile(creds)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := auth.ConnectOptions(b)
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, nats.UserCredentials(creds))
	if onErr != nil {
		opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { onErr(err) }))
	}
	nc, err := nats.Connect(s.url, opts...)
	if err != nil {
		t.Fatalf("connect with %s: %v", creds, err)
	}
	return nc
}

// op is one thing a client may try; name says what, run does it.
type op struct {
	name string
	run  func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, role auth.Role) error
}

func ops() []op {
	var out []op
	for _, src := range schemas.Sources {
		out = append(out, op{"publish " + string(src), func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream, role auth.Role) error {
			_, err := js.Publish(ctx, schemas.Subject(src, "pm-1"), []byte(`{}`), jetstream.WithMsgID(string(role)+"-"+string(src)))
			return err
		}})
	}
	return append(out,
		op{"publish milestone", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream, role auth.Role) error {
			_, err := js.Publish(ctx, "orders.milestones.delivered.pm-"+string(role), []byte(`{}`))
			return err
		}},
		op{"purge stream", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream, role auth.Role) error {
			return apiCall(ctx, nc, "$JS.API.STREAM.PURGE."+scratch(role))
		}},
		op{"delete stream", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream, role auth.Role) error {
			return apiCall(ctx, nc, "$JS.API.STREAM.DELETE."+scratch(role))
		}},
		op{"create consumer on the WAL", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream, role auth.Role) error {
			_, err := js.CreateOrUpdateConsumer(ctx, topology.EventsStream, jetstream.ConsumerConfig{Durable: "t-" + string(role), AckPolicy: jetstream.AckExplicitPolicy})
			return err
		}},
		op{"create consumer on milestones", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream, role auth.Role) error {
			_, err := js.CreateOrUpdateConsumer(ctx, topology.MilestonesStream, jetstream.ConsumerConfig{Durable: "t-" + string(role), AckPolicy: jetstream.AckExplicitPolicy})
			return err
		}},
		op{"KV put", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream, role auth.Role) error {
			// What kv.Put sends, without the bucket lookup a denied role cannot make.
			_, err := js.Publish(ctx, "$KV."+topology.StatusBucket+".pm-"+string(role), []byte(`{}`))
			return err
		}},
		op{"KV get", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream, _ auth.Role) error {
			kv, err := js.KeyValue(ctx, topology.StatusBucket)
			if err != nil {
				return err
			}
			_, err = kv.Get(ctx, "pm-0")
			return err
		}},
		op{"relay a milestone", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream, _ auth.Role) error {
			// No stream here stores the relay's subjects: a plain publish.
			return nc.Publish(topology.MilestonesRelayPrefix+".delivered.pm-1", []byte(`{}`))
		}},
		op{"source the ingest log through the domain API", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream, _ auth.Role) error {
			// The server has no domain, so no one answers: what counts is whether the
			// publish is a violation.
			return nc.PublishRequest("$JS.peer.API.CONSUMER.CREATE."+topology.IngestStream+".JS_SRC_pm", nc.NewRespInbox(), []byte(`{}`))
		}},
		op{"subscribe to the default inbox (others' replies)", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream, _ auth.Role) error {
			_, err := nc.SubscribeSync(nats.InboxPrefix + ">")
			return err
		}},
		op{"subscribe to WAL subjects", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream, _ auth.Role) error {
			_, err := nc.SubscribeSync(schemas.SubjectPrefix + ">")
			return err
		}},
		op{"follow the WAL", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream, _ auth.Role) error {
			// As the estimator does: message by message, no consumer.
			fctx, cancel := context.WithCancel(ctx)
			defer cancel()
			stop, failed := errors.New("read one"), error(nil)
			err := wal.Follow(fctx, js, 1, wal.FollowConfig{OnError: func(err error) { failed = err; cancel() }},
				func(wal.Record) error { return stop })
			switch {
			case errors.Is(err, stop):
				return nil
			case failed != nil:
				return failed
			}
			return ctx.Err()
		}},
		op{"update a lane consumer", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream, role auth.Role) error {
			// What a client that may create consumers on the WAL can do to the lanes.
			c, err := js.Consumer(ctx, topology.EventsStream, topology.LaneConsumer(0))
			if err != nil {
				return err
			}
			cfg := c.CachedInfo().Config
			cfg.Description = "changed by " + string(role)
			_, err = js.UpdateConsumer(ctx, topology.EventsStream, cfg)
			return err
		}},
		op{"KV put estimator checkpoint", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream, role auth.Role) error {
			// As the estimator does: chunks and a manifest (puts, a compare-and-set,
			// gets; a stale chunk's delete is a put on the same subject).
			kv, err := js.KeyValue(ctx, topology.EstimatorBucket)
			if err != nil {
				return err
			}
			store, err := estimator.NewCheckpointStore(kv, "pm-"+string(role))
			if err != nil {
				return err
			}
			if _, err := store.Save(ctx, estimator.Checkpoint{WALSeq: 1}); err != nil {
				return err
			}
			_, _, err = store.Load(ctx)
			return err
		}},
		op{"subscribe to positions", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream, _ auth.Role) error {
			_, err := nc.SubscribeSync(dispatch.LocationsPrefix + "*")
			return err
		}},
		op{"send position of d7", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream, _ auth.Role) error {
			return nc.Publish(dispatch.LocationsSubject("d7"), []byte(`{}`))
		}},
		op{"send position of d8", func(ctx context.Context, nc *nats.Conn, _ jetstream.JetStream, _ auth.Role) error {
			return nc.Publish(dispatch.LocationsSubject("d8"), []byte(`{}`))
		}},
	)
}

func scratch(role auth.Role) string { return "SCRATCH_" + strings.ToUpper(string(role)) }

// apiCall sends a JetStream API request and turns an error answer into an error.
func apiCall(ctx context.Context, nc *nats.Conn, subject string) error {
	m, err := nc.RequestWithContext(ctx, subject, nil)
	if err != nil {
		return err
	}
	var r struct {
		Error *struct{ Description string } `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return err
	}
	if r.Error != nil {
		return errors.New(r.Error.Description)
	}
	return nil
}

// user is one credential the matrix tries: a role's, or a dasher's own.
type user struct {
	role   auth.Role
	dasher string // set: auth.DasherCreds for this dasher
}

func (u user) String() string {
	if u.dasher != "" {
		return string(u.role) + " " + u.dasher
	}
	return string(u.role)
}

// allowed is the matrix the permissions must implement.
func allowed(u user, opName string) bool {
	switch role := u.role; {
	case u.dasher != "":
		return opName == "publish "+string(role) || opName == "send position of "+u.dasher
	case role == auth.RolePipeline:
		return true
	case role == auth.RoleIngest:
		return strings.HasPrefix(opName, "publish ") && opName != "publish milestone"
	case role == auth.RoleReader:
		return opName == "KV get" || opName == "subscribe to WAL subjects" || opName == "follow the WAL"
	case role == auth.RoleAnalyst:
		return opName == "KV get" || opName == "create consumer on milestones" || opName == "follow the WAL"
	case role == auth.RoleEstimator:
		switch opName {
		case "publish estimator", "KV get", "follow the WAL", "KV put estimator checkpoint", "subscribe to positions":
			return true
		}
		return false
	case role == auth.RoleRegion:
		// A peer region's link: sourcing through a JetStream domain and the milestone
		// relay, nothing else (internal/app's TestSecureRegionLinkRefusals tries it
		// on a real link).
		return opName == "relay a milestone" || opName == "source the ingest log through the domain API"
	default: // a producer
		return opName == "publish "+string(role)
	}
}

// TestPermissionMatrix: every role × every operation against the real server,
// through each role's .creds file. Allowed ones succeed; the others fail with the
// server's permissions violation, and leave no trace.
func TestPermissionMatrix(t *testing.T) {
	s := startSecure(t)
	ctx := context.Background()
	kv, err := s.admin.KeyValue(ctx, topology.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "pm-0", []byte(`{"order_id":"pm-0"}`)); err != nil {
		t.Fatal(err)
	}
	var users []user
	for _, role := range auth.Roles {
		if _, err := s.admin.CreateStream(ctx, jetstream.StreamConfig{Name: scratch(role), Subjects: []string{"scratch." + string(role)}}); err != nil {
			t.Fatal(err)
		}
		users = append(users, user{role: role})
	}
	users = append(users, user{role: auth.RoleDriver, dasher: "d7"})
	for _, u := range users {
		role := u.role
		creds := s.credsFile(t, role)
		if u.dasher != "" {
			creds = s.dasherCredsFile(t, u.dasher)
		}
		for _, o := range ops() {
			perm := make(chan error, 4)
			nc := s.connect(t, creds, func(err error) {
				if errors.Is(err, nats.ErrPermissionViolation) {
					select {
					case perm <- err:
					default:
					}
				}
			})
			js, _ := jetstream.New(nc)
			opCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			// A denied request is never answered: the violation ends the wait.
			done := make(chan error, 1)
			go func() { done <- o.run(opCtx, nc, js, role) }()
			var err, violation error
			select {
			case err = <-done:
			case violation = <-perm:
				cancel()
				err = <-done
			}
			if violation == nil && err == nil {
				// A denied subscription returns nil; the violation follows the flush.
				_ = nc.Flush()
				select {
				case violation = <-perm:
				case <-time.After(100 * time.Millisecond):
				}
			}
			cancel()
			nc.Close()
			want := allowed(u, o.name)
			switch {
			case want && (err != nil || violation != nil):
				t.Errorf("%s: %s should be allowed: err=%v violation=%v", u, o.name, err, violation)
			case !want && violation == nil:
				t.Errorf("%s: %s should fail with a permissions violation: err=%v", u, o.name, err)
			}
		}
	}
	// Denied writes left nothing: only the pipeline's and the ingest user's
	// publishes and each producer's own are in the WAL (the dasher's as a driver
	// carries the driver role's message id, so the WAL keeps one of the two).
	info, err := s.admin.Stream(ctx, topology.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.CachedInfo().State.Msgs, uint64(2*len(schemas.Sources)+len(schemas.Sources)); got != want {
		t.Errorf("WAL holds %d messages, want %d", got, want)
	}
}

// TestUnauthenticatedClientsCannotConnect: no credentials, or credentials another
// authority signed, are refused at connect.
func TestUnauthenticatedClientsCannotConnect(t *testing.T) {
	s := startSecure(t)
	if nc, err := nats.Connect(s.url); err == nil {
		nc.Close()
		t.Fatal("a client without credentials connected")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("want an authorization error, got %v", err)
	}
	other, err := auth.LoadOrCreateAuthority(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := other.UserCreds(auth.RolePipeline, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "foreign.creds")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(s.url, nats.UserCredentials(path)); err == nil {
		nc.Close()
		t.Fatal("a foreign authority's user connected")
	}
	expired, err := s.authz.UserCreds(auth.RolePipeline, "", time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // JWT expiry has a one-second resolution
	if err := os.WriteFile(path, expired, 0o600); err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(s.url, nats.UserCredentials(path)); err == nil {
		nc.Close()
		t.Fatal("an expired user connected")
	}
}

// TestEstimatorAndDasherRunOnTheirCredentials: the real estimator, connected with
// the estimator role's credentials, follows the WAL, the dispatch record and a
// dasher's positions (sent with that dasher's own credentials), publishes its
// prediction and writes its checkpoint, without one permissions violation.
func TestEstimatorAndDasherRunOnTheirCredentials(t *testing.T) {
	s := startSecure(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, ev := range []schemas.Event{
		testenv.Event("o1", schemas.SourcePlatform, 1, schemas.StatusCreated),
		testenv.Event("o1", schemas.SourceMerchant, 1, schemas.StatusConfirmed),
	} {
		if _, err := s.admin.Publish(ctx, schemas.Subject(ev.Source, ev.OrderID), testenv.EventJSON(t, ev), jetstream.WithMsgID(ev.EventID)); err != nil {
			t.Fatal(err)
		}
	}
	restaurant := dispatch.Point{Lat: 48.8566, Lng: 2.3522}
	customer := dispatch.Destination(restaurant, 90, 2000)
	ix := dispatch.NewIndex(0)
	ix.Update("d7", dispatch.Position{Point: restaurant, At: time.Now()}, 0)
	d, err := dispatch.NewDispatcher(ctx, s.admin, ix, dispatch.AssignConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Assign(ctx, "o1", dispatch.AssignRequest{Pickup: restaurant, Dropoff: &customer}); err != nil {
		t.Fatal(err)
	}

	violations := make(chan error, 16)
	onErr := func(err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			select {
			case violations <- err:
			default:
			}
		}
	}
	nc := s.connect(t, s.credsFile(t, auth.RoleEstimator), onErr)
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	published := make(chan schemas.Event, 16)
	svc, err := estimator.New(ctx, nc, js, estimator.Config{Tick: 50 * time.Millisecond,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Published: func(ev schemas.Event) { published <- ev }})
	if err != nil {
		t.Fatalf("the estimator cannot start on its credentials: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	dasher := s.connect(t, s.dasherCredsFile(t, "d7"), onErr)
	defer dasher.Close()

	var ev schemas.Event
	timeout := time.After(10 * time.Second)
	for got := false; !got; {
		pos := dispatch.Position{Point: restaurant, At: time.Now(), SpeedMPS: 0}
		if err := dasher.Publish(dispatch.LocationsSubject("d7"), dispatch.EncodePosition(pos)); err != nil {
			t.Fatal(err)
		}
		select {
		case ev = <-published:
			got = ev.Status == schemas.StatusReadyForPickup
		case err := <-violations:
			t.Fatalf("permissions violation: %v", err)
		case err := <-done:
			t.Fatalf("the estimator stopped: %v", err)
		case <-timeout:
			t.Fatal("no ready_for_pickup prediction within 10 s")
		case <-time.After(50 * time.Millisecond):
		}
	}
	kv, err := s.admin.KeyValue(ctx, topology.EstimatorBucket)
	if err != nil {
		t.Fatal(err)
	}
	store, err := estimator.NewCheckpointStore(kv, "estimator")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if cp, _, err := store.Load(ctx); err == nil && cp.Model.Orders["o1"].Seq >= ev.SourceSeq {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint covering the prediction within 10 s")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("estimator: %v", err)
	}
	select {
	case err := <-violations:
		t.Fatalf("permissions violation: %v", err)
	default:
	}
}

// The permissions spell the names they allow; they must be the topology's.
func TestPermissionNamesAreTheTopologys(t *testing.T) {
	if auth.LocationsPrefix != dispatch.LocationsPrefix || auth.EstimatorBucket != topology.EstimatorBucket {
		t.Fatalf("auth names %q %q, topology's %q %q", auth.LocationsPrefix, auth.EstimatorBucket, dispatch.LocationsPrefix, topology.EstimatorBucket)
	}
}
