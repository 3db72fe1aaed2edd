package natsbus

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
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
	Expires time.Duration `json:"expires,omitempty"` // nanoseconds
	NoWait  bool          `json:"no_wait,omitempty"`
}

// pull asks src's consumer for up to n messages, waiting up to fetchWait for them (with noWait,
// only for those already there), and passes each to got as it arrives; it returns how many it
// passed on. When the subscription stops, it unsubscribes at once and passes on what had
// already arrived.
func (s *subscription) pull(src *source, n int, noWait bool, got func(*nats.Msg)) (int, error) {
	nc := s.b.nc
	inbox := nc.NewInbox()
	// Room for the n messages and the status that ends the request: the read loop never waits.
	ch := make(chan *nats.Msg, n+2)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return 0, fmt.Errorf("pull from %s: %w", src.name, err)
	}
	defer func() { _ = sub.Unsubscribe() }() // a no-op when already unsubscribed
	pr := pullRequest{Batch: n, Expires: fetchWait}
	if noWait {
		pr = pullRequest{Batch: n, NoWait: true}
	}
	req, err := json.Marshal(pr)
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

// settler settles one delivery with JetStream through the message's ack subject. Every
// settlement is a plain publish on the connection, which the client sends pipelined with the
// others: settling never waits for the server, so the handler slot is free at once.
type settler struct {
	b   *Bus
	msg *nats.Msg
	// acks, when set, records the acknowledgements the subscription confirms when it stops.
	acks *ackBarrier
}

// Ack hands the acknowledgement to the connection and returns: it fails only when it cannot be
// sent (connection closed). An acknowledgement lost on its way (a broken connection) leaves the
// message pending, and the server delivers it again after AckWait; consumers dedupe by event
// id. The subscription makes sure the server has processed its acknowledgements before Stop
// returns (see ackBarrier).
func (s settler) Ack(context.Context) error { return s.settle("ack", []byte("+ACK")) }

func (s settler) Nak(_ context.Context, delay time.Duration) error {
	body := []byte("-NAK")
	if delay > 0 {
		body = fmt.Appendf(nil, `-NAK {"delay": %d}`, delay.Nanoseconds())
	}
	// Not recorded for the barrier: a progress request would reset the redelivery delay.
	if err := s.b.nc.Publish(s.msg.Reply, body); err != nil {
		return fmt.Errorf("nak: %w", err)
	}
	return nil
}

// Term removes the message from the consumer, asynchronously like Ack.
func (s settler) Term(context.Context) error { return s.settle("term", []byte("+TERM")) }

// inProgress resets the message's AckWait at the server.
func (s settler) inProgress() error { return s.b.nc.Publish(s.msg.Reply, []byte("+WPI")) }

// settle publishes an acknowledgement or termination, and records it for the barrier.
func (s settler) settle(what string, body []byte) error {
	if err := s.b.nc.Publish(s.msg.Reply, body); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if s.acks != nil {
		s.acks.sent(s.msg.Reply)
	}
	return nil
}

// ackBarrierTimeout bounds how long a stopping subscription waits for the server to confirm
// its settlements.
const ackBarrierTimeout = 5 * time.Second

// ackBarrier remembers, per JetStream consumer, the ack subject of the last message a
// subscription settled. The server queues a consumer's acknowledgements and processes them in
// order, apart from its pull requests, so a flush of the connection is not enough to know they
// took effect: when the subscription stops, confirm sends a progress request ("+WPI", a no-op
// on a settled message) to each last subject and waits for the server's reply, which comes
// once every earlier settlement of that consumer has been processed. Thus a message acked
// before Stop returns is not delivered again to the next subscription.
type ackBarrier struct {
	mu   sync.Mutex
	last map[string]string // ack subject of the last settlement, by consumer token of the subject
}

func (a *ackBarrier) sent(reply string) {
	key := ackConsumer(reply)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last == nil {
		a.last = map[string]string{}
	}
	a.last[key] = reply
}

// confirm waits (up to ackBarrierTimeout) until the server has processed every settlement
// sent so far; it logs the consumers it could not confirm, whose acknowledged messages may be
// delivered again after AckWait.
func (a *ackBarrier) confirm(b *Bus, log *slog.Logger) {
	a.mu.Lock()
	last := a.last
	a.last = nil
	a.mu.Unlock()
	if len(last) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), ackBarrierTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for consumer, reply := range last {
		wg.Go(func() {
			if _, err := b.nc.RequestWithContext(ctx, reply, []byte("+WPI")); err != nil {
				log.Warn("consumer stopped without the server confirming its last settlements; they may be delivered again after ack wait",
					"jetstream_consumer", consumer, "error", err.Error())
			}
		})
	}
	wg.Wait()
}

// ackConsumer is the consumer token of JetStream ack subject reply
// ($JS.ACK.<stream>.<consumer>.… or, with a domain, $JS.ACK.<domain>.<hash>.<stream>.<consumer>.…);
// the subject itself when it is not one.
func ackConsumer(reply string) string {
	tokens := strings.Split(reply, ".")
	switch {
	case len(tokens) == 9 && tokens[0] == "$JS" && tokens[1] == "ACK":
		return tokens[3]
	case len(tokens) >= 12 && tokens[0] == "$JS" && tokens[1] == "ACK":
		return tokens[5]
	}
	return reply
}
