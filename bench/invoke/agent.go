package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// replyPad makes the agent's answer about 200 bytes, a small JSON result.
var replyPad = strings.Repeat("x", 120)

// runAgent is the -role agent process: a minimal HTTP server that answers POST /invoke/{cap}
// with a ~200-byte JSON document after reading the whole request body and waiting its service
// time. PUT /delay (a Go duration in the body) changes the service time, so that one set of
// children serves every phase and the weights phase can degrade an agent mid-run. It prints
// "listening <addr>" on stdout once it accepts connections, and exits when ctx ends or its
// stdin reaches EOF (the parent died or closed the pipe).
func runAgent(ctx context.Context, o options, stdout io.Writer) error {
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("agent listen: %w", err)
	}
	var delay atomic.Int64
	delay.Store(int64(o.delay))
	mux := http.NewServeMux()
	mux.HandleFunc("POST /invoke/{capability}", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		if d := time.Duration(delay.Load()); d > 0 {
			time.Sleep(d) // the service time is what this agent simulates
		}
		body := fmt.Sprintf(`{"ok":true,"agent":%q,"capability":%q,"result":%q}`, o.name, r.PathValue("capability"), replyPad)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		_, _ = io.WriteString(w, body)
	})
	mux.HandleFunc("PUT /delay", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 64))
		d, err := time.ParseDuration(strings.TrimSpace(string(b)))
		if err != nil || d < 0 {
			http.Error(w, "body must be a non-negative Go duration", http.StatusBadRequest)
			return
		}
		delay.Store(int64(d))
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 5 * time.Minute}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if _, err := fmt.Fprintf(stdout, "listening %s\n", ln.Addr()); err != nil {
		_ = srv.Close()
		return err
	}
	select {
	case <-ctx.Done():
	case <-parentGone():
	case err := <-served:
		return fmt.Errorf("agent serve: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// startAgent starts an agent process named name.
func startAgent(ctx context.Context, name string, stderr io.Writer) (*child, error) {
	return startChild(ctx, "agent "+name, 10*time.Second, stderr, "-role", "agent", "-addr", "127.0.0.1:0", "-name", name)
}

// setDelay changes the child's service time.
func (c *child) setDelay(ctx context.Context, d time.Duration) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.URL()+"/delay", strings.NewReader(d.String()))
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("set delay of agent %s: %w", c.name, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("set delay of agent %s: status %d", c.name, resp.StatusCode)
	}
	return nil
}

// children are the agent processes of a run.
type children []*child

func (cs children) stop() {
	for _, c := range cs {
		c.stop()
	}
}

// setDelays sets the service time of the first len(ds) children.
func (cs children) setDelays(ctx context.Context, ds ...time.Duration) error {
	if len(ds) > len(cs) {
		return errors.New("more delays than agents")
	}
	for i, d := range ds {
		if err := cs[i].setDelay(ctx, d); err != nil {
			return err
		}
	}
	return nil
}
