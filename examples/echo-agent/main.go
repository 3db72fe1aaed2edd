// Command echo-agent is the example agent of the Go SDK (github.com/nops-kernel/nops/sdk/go/nops):
// it registers an `echo` capability with a NOPS kernel, serves it, heartbeats, and deregisters
// on Ctrl-C (SIGINT) or SIGTERM after the calls in flight have finished.
//
//	NOPS_URL=http://127.0.0.1:8080 NOPS_API_KEY=nops_… go run ./examples/echo-agent
//
// Environment:
//
//	NOPS_URL                  the kernel (default http://127.0.0.1:8080)
//	NOPS_API_KEY              an API key of the agent's tenant (required)
//	NOPS_AGENT_NAME           the agent's name in the tenant (default echo-agent)
//	NOPS_AGENT_ADDR           where the agent listens (default 127.0.0.1:0: a free port)
//	NOPS_AGENT_ENDPOINT       the URL the kernel calls (default http://<the listener's address>)
//	NOPS_REQUEST_KEY_ID       with NOPS_REQUEST_KEY_SECRET: sign every request (hmac-sha256),
//	NOPS_REQUEST_KEY_SECRET   for tenants that require RFC 9421 signatures
//
// See docs/sdk-go.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nops-kernel/nops/sdk/go/nops"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, logger); err != nil {
		logger.Error("echo-agent", "err", err)
		os.Exit(1)
	}
}

// echoInput is the input schema of the echo capability.
const echoInput = `{
  "type": "object",
  "required": ["message"],
  "properties": {"message": {"type": "string", "maxLength": 4096}},
  "additionalProperties": false
}`

// echo answers the message with who called and when the call must end.
func echo(ctx context.Context, inv *nops.Invocation) (any, error) {
	var in struct {
		Message string `json:"message"`
	}
	if err := json.Unmarshal(inv.Input, &in); err != nil {
		return nil, &nops.Error{Status: 400, Code: "invalid", Detail: "the input is not an echo request"}
	}
	out := map[string]any{"message": in.Message, "invocation_id": inv.ID, "tenant": inv.Tenant}
	if d, ok := ctx.Deadline(); ok {
		out["deadline_ms"] = time.Until(d).Milliseconds()
	}
	return out, nil
}

func run(ctx context.Context, getenv func(string) string, logger *slog.Logger) error {
	base := getenv("NOPS_URL")
	if base == "" {
		base = "http://127.0.0.1:8080"
	}
	key := getenv("NOPS_API_KEY")
	if key == "" {
		return errors.New("set NOPS_API_KEY to an API key of the agent's tenant (see docs/sdk-go.md)")
	}
	opts := nops.Options{BaseURL: base, APIKey: key, Hooks: nops.Hooks{
		OnRetry: func(e nops.RetryEvent) {
			logger.Warn("retrying", "method", e.Method, "path", e.Path, "reason", e.Reason, "delay", e.Delay)
		},
	}}
	if id := getenv("NOPS_REQUEST_KEY_ID"); id != "" {
		secret, err := nops.DecodeRequestSecret(getenv("NOPS_REQUEST_KEY_SECRET"))
		if err != nil {
			return fmt.Errorf("NOPS_REQUEST_KEY_SECRET: %w", err)
		}
		opts.RequestKey = &nops.RequestKey{ID: id, Alg: nops.AlgHMACSHA256, Secret: secret}
	}
	client, err := nops.NewClient(opts)
	if err != nil {
		return err
	}
	name := getenv("NOPS_AGENT_NAME")
	if name == "" {
		name = "echo-agent"
	}
	agent, err := nops.NewAgent(client, nops.AgentConfig{
		Name:     name,
		Version:  "1.0.0",
		Endpoint: getenv("NOPS_AGENT_ENDPOINT"),
		Capacity: 64,
		Capabilities: []nops.Capability{{
			Name:        "echo",
			Description: "Echoes the message it is given.",
			InputSchema: json.RawMessage(echoInput),
			Handle:      echo,
		}},
		Logger: logger,
		Hooks: nops.Hooks{OnInvocation: func(e nops.InvocationEvent) {
			logger.Info("invocation served", "capability", e.Capability, "invocation", e.InvocationID, "status", e.Status, "duration", e.Duration)
		}},
	})
	if err != nil {
		return err
	}
	addr := getenv("NOPS_AGENT_ADDR")
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	logger.Info("echo-agent listening", "addr", ln.Addr().String(), "kernel", base)
	return agent.Run(ctx, ln)
}
