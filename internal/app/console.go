package app

import (
	"log/slog"
	"net/http"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/internal/services/api"
	"github.com/orderflow/orderflow/internal/services/auth"
	"github.com/orderflow/orderflow/internal/services/console"
	"github.com/orderflow/orderflow/internal/services/orders"
	"github.com/orderflow/orderflow/sinks/archive"
)

// withConsole mounts the support console at /console beside the API. The console
// signs agents in with their own tokens (a session cookie), so the API's bearer
// check, which a browser cannot satisfy, does not guard it.
func withConsole(apiHandler http.Handler, srv *api.Server, reader *orders.Reader, tokens *auth.Verifier, ingestHandler http.Handler, js jetstream.JetStream, archived *archive.Reader, ch driver.Conn, log *slog.Logger) (http.Handler, error) {
	cfg := console.Config{Reader: reader, Tokens: tokens, Ingest: ingestHandler, Watch: srv.Watch(), JS: js, ClickHouse: ch, Logger: log}
	if archived != nil { // a nil *Reader in the interface would not read as "no archive"
		cfg.Archive = archived
	}
	con, err := console.New(cfg)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/", apiHandler)
	mux.Handle(console.Prefix, con)
	mux.Handle(console.Prefix+"/", con)
	return mux, nil
}
