package simulate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publish sends every message next yields to JetStream with pipelined async
// publishes (Nats-Msg-Id = the message id), paced to rate messages per second (0 =
// as fast as the server acknowledges), printing a progress line to progress each
// second when it is not nil. It returns once every publish is acknowledged. js
// should report failed publishes through jetstream.WithPublishAsyncErrHandler.
func Publish(ctx context.Context, js jetstream.JetStream, next func() (Message, bool), rate float64, progress io.Writer) (int, error) {
	start := time.Now()
	lastProgress := start
	sent := 0
	for {
		m, ok := next()
		if !ok {
			break
		}
		if d := PaceDelay(sent, rate, time.Since(start)); d > 0 {
			time.Sleep(d)
		}
		if err := publishAsync(ctx, js, m.NatsMsg()); err != nil {
			return sent, err
		}
		sent++
		if progress != nil && time.Since(lastProgress) >= time.Second {
			lastProgress = time.Now()
			fmt.Fprintf(progress, "published %d messages (%.0f/s)\n", sent, float64(sent)/time.Since(start).Seconds())
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return sent, ctx.Err()
	case <-time.After(2 * time.Minute):
		return sent, errors.New("publishes not acknowledged within 2m")
	}
	if progress != nil {
		el := time.Since(start)
		fmt.Fprintf(progress, "published %d messages in %s (%.0f/s)\n", sent, el.Round(time.Millisecond), float64(sent)/el.Seconds())
	}
	return sent, nil
}

// NatsMsg is m as a producer publishes it: the body, with Nats-Msg-Id set so the WAL
// drops a retry.
func (m Message) NatsMsg() *nats.Msg {
	msg := nats.NewMsg(m.Subject)
	msg.Data = m.Body
	msg.Header.Set(nats.MsgIdHdr, m.MsgID)
	return msg
}

// PublishAll publishes msgs in order; see Publish.
func PublishAll(ctx context.Context, js jetstream.JetStream, msgs []Message, rate float64) error {
	i := 0
	_, err := Publish(ctx, js, func() (Message, bool) {
		if i == len(msgs) {
			return Message{}, false
		}
		i++
		return msgs[i-1], true
	}, rate, nil)
	return err
}

// publishAsync sends m without waiting for its ack, waiting only while too many acks
// are outstanding (back-pressure from the server).
func publishAsync(ctx context.Context, js jetstream.JetStream, m *nats.Msg) error {
	for {
		_, err := js.PublishMsgAsync(m)
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			if err != nil {
				return fmt.Errorf("publish %s: %w", m.Subject, err)
			}
			return nil
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
