package handlers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderflow/orderflow/handlers/fold"
	"github.com/orderflow/orderflow/internal/adapters/wal"
	"github.com/orderflow/orderflow/pipelines/topology"
	"github.com/orderflow/orderflow/schemas"
)

// DLQ headers (public contract): why the event was set aside and where it came from.
const (
	HeaderDLQReason       = "Orderflow-Dlq-Reason"
	HeaderDLQDetail       = "Orderflow-Dlq-Detail"
	HeaderOriginalSubject = "Orderflow-Original-Subject"
	HeaderWALSubject      = "Orderflow-Wal-Subject"
	HeaderWALSeq          = "Orderflow-Wal-Seq"
	// HeaderDLQBodyOmitted is set when the DLQ could not hold the body: read it
	// from the WAL at Orderflow-Wal-Seq.
	HeaderDLQBodyOmitted = "Orderflow-Dlq-Body-Omitted"
)

// maxDetail keeps one oversized explanation from exceeding header limits.
const maxDetail = 2048

// DLQ sets bad events aside in ORDER_EVENTS_DLQ, byte-for-byte.
type DLQ struct {
	js jetstream.JetStream
}

// NewDLQ returns a DLQ publisher.
func NewDLQ(js jetstream.JetStream) *DLQ { return &DLQ{js: js} }

// Send stores rec in the DLQ and waits for the ack: the lane checkpoint may pass the
// event only once it is durable there. The message id is derived from the WAL
// sequence, so a replay after a crash does not set the same event aside twice.
func (d *DLQ) Send(ctx context.Context, rec wal.Record, rej fold.Rejection) error {
	if rec.Header == nil {
		// Lanes receive events without their headers; fetch the stored original.
		orig, err := d.js.Stream(ctx, topology.EventsStream)
		if err != nil {
			return err
		}
		stored, err := orig.GetMsg(ctx, rec.Seq)
		if err != nil {
			return fmt.Errorf("read WAL %d for the DLQ: %w", rec.Seq, err)
		}
		rec.Header = stored.Header
	}
	m := nats.NewMsg(topology.DLQPrefix + "." + rej.Reason)
	m.Data = rec.Data
	for k, v := range rec.Header {
		// Nats-* headers would act on the DLQ stream itself (an expected-stream check
		// fails there) or pose as server metadata: keep them under another name.
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			k = "Orderflow-Original-" + k
		}
		m.Header[k] = append([]string(nil), v...)
	}
	detail := rej.Detail
	if len(detail) > maxDetail {
		detail = detail[:maxDetail]
	}
	m.Header.Set(HeaderDLQReason, rej.Reason)
	m.Header.Set(HeaderDLQDetail, detail)
	m.Header.Set(HeaderOriginalSubject, schemas.ProducerSubject(rec.Subject))
	m.Header.Set(HeaderWALSubject, rec.Subject)
	m.Header.Set(HeaderWALSeq, strconv.FormatUint(rec.Seq, 10))
	m.Header.Set(nats.MsgIdHdr, "dlq-"+strconv.FormatUint(rec.Seq, 10))
	_, err := d.js.PublishMsg(ctx, m)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		// The server refused the copy itself (too large with its headers, say):
		// keep the reason and the WAL position, which the WAL still holds the body
		// for, rather than retrying forever and stalling the lane.
		m.Data = nil
		m.Header.Set(HeaderDLQBodyOmitted, apiErr.Error())
		_, err = d.js.PublishMsg(ctx, m)
	}
	if err != nil {
		return fmt.Errorf("send WAL %d to the DLQ: %w", rec.Seq, err)
	}
	return nil
}
