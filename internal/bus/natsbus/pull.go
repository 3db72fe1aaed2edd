package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The subscriptions make their pull requests themselves rather than with the client's Fetch:
// Fetch, when cancelled, hands back its last messages before it unsubscribes its inbox, so Stop
// could return while the server still held a pull request of the stopped subscription, and the
// next message would be delivered into the void (and come back only after AckWait, as one more
// attempt). Here Stop unsubscribes the inbox before it returns: anything published afterwards
// on this connection reaches the server after the unsubscription, and the server does not
// deliver to a pull request nobody listens to.

const (
	// fetchWait is how long one pull request waits at the server for messages. It is also the
	// longest a subscription stays deaf after its pull request was lost (a reconnection to
	// another server), so it is short; an idle subscription sends one small request per
	// fetchWait.
	fetchWait = 2 * time.Second
	// fetchGrace is how much longer than fetchWait the client waits for the server to end the
	// request, before it gives the request up (connection trouble).
	fetchGrace = time.Second

	statusHdr      = "Status"
	descriptionHdr = "Description"
)

// pullRequest is the body of a JetStream CONSUMER.MSG.NEXT request.
type pullRequest struct {
	Batch   int           `json:"batch"`
	Expires time.Duration `json:"expires"` // nanoseconds
}

// pull asks src's consumer for up to n messages, waiting up to fetchWait for them, and passes
// each to got as it arrives; it returns how many it passed on. When the subscription stops, it
// unsubscribes at once and passes on what had already arrived.
func (s *subscription) pull(src *source, n int, got func(*nats.Msg)) (int, error) {
	nc := s.b.nc
	inbox := nc.NewInbox()
	// Room for the n messages and the status that ends the request: the read loop never waits.
	ch := make(chan *nats.Msg, n+2)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return 0, fmt.Errorf("pull from %s: %w", src.name, err)
	}
	defer func() { _ = sub.Unsubscribe() }() // a no-op when already unsubscribed
	req, err := json.Marshal(pullRequest{Batch: n, Expires: fetchWait})
	if err != nil {
		return 0, err
	}
	subject := "$JS.API.CONSUMER.MSG.NEXT." + s.b.eventsName + "." + src.name
	if err := nc.PublishRequest(subject, inbox, req); err != nil {
		return 0, fmt.Errorf("pull from %s: %w", src.name, err)
	}
	timer := time.NewTimer(fetchWait + fetchGrace)
	defer timer.Stop()
	reconnected := s.b.reconnectSignal()
	passed := 0
	for passed < n {
		select {
		case msg := <-ch:
			if done, err := pullStatus(msg); done || err != nil {
				return passed, err
			}
			if isStatus(msg) {
				continue
			}
			passed++
			got(msg)
		case <-timer.C:
			return passed, nil
		case <-reconnected:
			// The request may have been lost with the old connection: make a new one.
			return passed, nil
		case <-s.runCtx.Done():
			if err := sub.Unsubscribe(); err != nil {
				return passed, nil // the connection is closed: nothing more can come
			}
			for {
				select {
				case msg := <-ch:
					if !isStatus(msg) {
						passed++
						got(msg)
					}
				default:
					return passed, nil
				}
			}
		}
	}
	return passed, nil
}

func isStatus(msg *nats.Msg) bool {
	return len(msg.Data) == 0 && msg.Header.Get(statusHdr) != ""
}

// pullStatus interprets a status message of a pull request: done when the request is over
// without error (no messages, expired), an error when it failed (consumer deleted, leadership
// change, no responders). Other messages are neither.
func pullStatus(msg *nats.Msg) (done bool, err error) {
	if !isStatus(msg) {
		return false, nil
	}
	switch code := msg.Header.Get(statusHdr); code {
	case "100": // heartbeat
		return false, nil
	case "404", "408":
		return true, nil
	case "503":
		return true, nats.ErrNoResponders
	case "409":
		desc := msg.Header.Get(descriptionHdr)
		switch desc {
		case "Consumer Deleted":
			return true, jetstream.ErrConsumerDeleted
		case "Consumer is push based":
			return true, fmt.Errorf("pull: %s", desc)
		}
		return true, fmt.Errorf("pull: %s %s", code, desc)
	default:
		return true, fmt.Errorf("pull: status %s %s", code, msg.Header.Get(descriptionHdr))
	}
}

// settler settles one delivery with JetStream through the message's ack subject.
type settler struct {
	b   *Bus
	msg *nats.Msg
}

// errReconnected cancels an acknowledgement whose answer was lost with the old connection.
var errReconnected = errors.New("the connection was restored meanwhile")

// ackAttempts bounds how often an acknowledgement is sent again after reconnections.
const ackAttempts = 3

// Ack waits for the server's confirmation (a "double ack"), so that a crash right after
// Dispatch returns does not redeliver an acknowledged message. An acknowledgement whose answer
// was lost with a broken connection is sent again once the connection is back, rather than
// waiting out ctx (acknowledging twice is harmless).
func (s settler) Ack(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		reconnected := s.b.reconnectSignal()
		rctx, cancel := context.WithCancelCause(ctx)
		go func() {
			select {
			case <-reconnected:
				cancel(errReconnected)
			case <-rctx.Done():
			}
		}()
		_, err := s.b.nc.RequestWithContext(rctx, s.msg.Reply, []byte("+ACK"))
		lost := errors.Is(context.Cause(rctx), errReconnected)
		cancel(nil)
		if err == nil {
			return nil
		}
		if !lost || ctx.Err() != nil || attempt == ackAttempts {
			return fmt.Errorf("ack: %w", err)
		}
	}
}

func (s settler) Nak(_ context.Context, delay time.Duration) error {
	body := []byte("-NAK")
	if delay > 0 {
		body = fmt.Appendf(nil, `-NAK {"delay": %d}`, delay.Nanoseconds())
	}
	return s.b.nc.Publish(s.msg.Reply, body)
}

func (s settler) Term(context.Context) error { return s.b.nc.Publish(s.msg.Reply, []byte("+TERM")) }

// inProgress resets the message's AckWait at the server.
func (s settler) inProgress() error { return s.b.nc.Publish(s.msg.Reply, []byte("+WPI")) }
