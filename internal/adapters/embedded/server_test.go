package embedded

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestRestartKeepsAckedMessages is the property serve relies on: what JetStream
// acknowledged is still there after the server stops and starts on the same DataDir.
func TestRestartKeepsAckedMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: quietLogger()}

	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, "t.1", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	s.Shutdown()

	s, err = Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, err = nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ = jetstream.New(nc)
	stream, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg.Data) != "hello" || msg.Subject != "t.1" {
		t.Fatalf("got %q on %q, want \"hello\" on t.1", msg.Data, msg.Subject)
	}
}

func TestStartFailsFastWhenPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	s, err := Start(context.Background(), Config{DataDir: t.TempDir(), Listen: l.Addr().String(), Logger: quietLogger()})
	if err == nil {
		s.Shutdown()
		t.Fatal("Start succeeded on a taken port")
	}
	if !strings.Contains(err.Error(), "listen") {
		t.Errorf("error %q does not say the listen failed", err)
	}
	if d := time.Since(start); d > readyTimeout/2 {
		t.Errorf("took %s to fail, want well under the %s ready timeout", d, readyTimeout)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{DataDir: "/d"}, true},
		{"random port", Config{DataDir: "/d", Listen: "127.0.0.1:-1"}, true},
		{"no data dir", Config{}, false},
		{"no port", Config{DataDir: "/d", Listen: "127.0.0.1"}, false},
		{"bad port", Config{DataDir: "/d", Listen: "127.0.0.1:70000"}, false},
		{"negative store", Config{DataDir: "/d", MaxStore: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.setDefaults()
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestNegativeSyncIntervalMeansSyncAlways(t *testing.T) {
	cfg := Config{DataDir: "/d", SyncInterval: -1}
	cfg.setDefaults()
	if !cfg.SyncAlways || cfg.SyncInterval != 0 {
		t.Fatalf("got SyncAlways=%v SyncInterval=%s", cfg.SyncAlways, cfg.SyncInterval)
	}
}
