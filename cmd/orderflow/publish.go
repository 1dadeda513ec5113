package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/orderflow/orderflow/schemas"
)

func newPublish(g *globals) *cobra.Command {
	var (
		e                         schemas.Event
		source, status, eta, file string
		observed                  string
		seq                       uint64
	)
	cmd := &cobra.Command{
		Use:   "publish",
		Short: "Publish one event from flags, or JSON events (one per line) from --file (- for stdin)",
		Example: `  orderflow publish --source driver --order o-1 --seq 1 --status picked_up --dasher d-7
  orderflow publish --file events.jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var events []*schemas.Event
			var bad []error
			if file != "" {
				var err error
				events, bad, err = readEvents(file)
				if err != nil {
					return err
				}
			} else {
				ev, err := eventFromFlags(e, source, status, eta, observed, seq)
				if err != nil {
					return usageError{err}
				}
				events = append(events, ev)
			}
			for _, ev := range events {
				if ps := ev.Validate(); len(ps) > 0 {
					bad = append(bad, fmt.Errorf("event %q: %w", ev.EventID, ps))
				}
			}
			if len(bad) > 0 {
				for _, err := range bad {
					fmt.Fprintln(cmd.ErrOrStderr(), err)
				}
				return fmt.Errorf("%d invalid event(s), nothing published", len(bad))
			}
			nc, js, err := connectJS(g, "orderflow-publish")
			if err != nil {
				return err
			}
			defer nc.Close()
			return publishEvents(cmd.Context(), js, events, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&source, "source", "", "platform, merchant, driver, estimator or agent")
	f.StringVar(&e.OrderID, "order", "", "order id")
	f.Uint64Var(&seq, "seq", 0, "source_seq: this source's logical clock for the order (>= 1)")
	f.StringVar(&status, "status", "", "new status")
	f.StringVar(&e.EventID, "event-id", "", "event id (default: <order>-<source>-<seq>, so a retry is deduplicated)")
	f.StringVar(&eta, "eta", "", "estimated delivery time, RFC 3339")
	f.StringVar(&e.Reason, "reason", "", "why (required for agent events)")
	f.StringVar(&e.ActorID, "actor", "", "who: dasher, merchant user, agent")
	f.StringVar(&e.CustomerID, "customer", "", "customer id")
	f.StringVar(&e.RestaurantID, "restaurant", "", "restaurant id")
	f.StringVar(&e.DasherID, "dasher", "", "dasher id")
	f.StringVar(&observed, "observed", "", "agent's observed version vector, e.g. driver=4,merchant=3")
	f.StringVar(&file, "file", "", "JSON Lines file of events, - for stdin")
	return cmd
}

func eventFromFlags(e schemas.Event, source, status, eta, observed string, seq uint64) (*schemas.Event, error) {
	e.SchemaVersion = schemas.SchemaVersion
	e.Source = schemas.Source(source)
	e.Status = schemas.Status(status)
	e.SourceSeq = seq
	e.OccurredAt = time.Now().UTC().Truncate(time.Millisecond)
	if e.EventID == "" {
		e.EventID = fmt.Sprintf("%s-%s-%d", e.OrderID, source, seq)
	}
	if eta != "" {
		t, err := time.Parse(time.RFC3339, eta)
		if err != nil {
			return nil, fmt.Errorf("--eta: %w", err)
		}
		e.ETA = &t
	}
	if observed != "" {
		e.Observed = map[schemas.Source]uint64{}
		for _, kv := range strings.Split(observed, ",") {
			k, v, ok := strings.Cut(kv, "=")
			n, err := strconv.ParseUint(v, 10, 64)
			if !ok || err != nil {
				return nil, fmt.Errorf("--observed: %q is not source=seq", kv)
			}
			e.Observed[schemas.Source(k)] = n
		}
	}
	return &e, nil
}

// readEvents reads JSON Lines; lines that are not JSON events are reported, not sent.
func readEvents(path string) ([]*schemas.Event, []error, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, err
		}
		defer f.Close()
		r = f
	}
	var events []*schemas.Event
	var bad []error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		src, id := jsonSourceAndOrder(text)
		ev, err := schemas.Decode(schemas.Subject(src, id), []byte(text))
		if err != nil {
			bad = append(bad, fmt.Errorf("line %d: %w", line, err))
			continue
		}
		events = append(events, ev)
	}
	return events, bad, sc.Err()
}

// jsonSourceAndOrder reads the subject tokens a line names itself, so Decode checks
// the body on its own merits.
func jsonSourceAndOrder(line string) (schemas.Source, string) {
	var v struct {
		Source  string `json:"source"`
		OrderID string `json:"order_id"`
	}
	_ = json.Unmarshal([]byte(line), &v)
	return schemas.Source(v.Source), v.OrderID
}

func publishEvents(ctx context.Context, js jetstream.JetStream, events []*schemas.Event, out io.Writer) error {
	var errs []error
	for _, ev := range events {
		body, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		m := nats.NewMsg(schemas.Subject(ev.Source, ev.OrderID))
		m.Data = body
		m.Header.Set(nats.MsgIdHdr, ev.EventID)
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			errs = append(errs, fmt.Errorf("event %s: %w", ev.EventID, err))
			continue
		}
		dup := ""
		if ack.Duplicate {
			dup = " (duplicate: already stored)"
		}
		fmt.Fprintf(out, "published %s to %s at %s seq %d%s\n", ev.EventID, m.Subject, ack.Stream, ack.Sequence, dup)
	}
	return errors.Join(errs...)
}
