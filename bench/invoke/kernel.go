package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel"
)

const password = "bench-admin-password-0123"

// heartbeatEvery keeps the bench's agents healthy: well within registry.stale_after (30 s).
const heartbeatEvery = 5 * time.Second

// inputSchema is the bench capabilities' input schema, so that the kernel validates every body
// as it would a real capability's.
var inputSchema = map[string]any{
	"type":       "object",
	"required":   []string{"text"},
	"properties": map[string]any{"text": map[string]any{"type": "string", "maxLength": 4096}},
}

// allowPolicy is the tenant's one ABAC policy, an allow policy evaluated on every request: the
// tenant's requests must match it (allow policies form an allow-list), so a capability outside
// bench.* is refused — which is how the setup checks that policies are on.
const allowPolicy = `principal.role == "ADMIN" && (capability == "" || capability.startsWith("bench."))`

// agentSpec is an agent to register: which child serves it and for which capability.
type agentSpec struct {
	name       string
	endpoint   string
	capability string
}

// runKernel is the -role kernel process: a kernel with the embedded defaults on a fresh data
// directory (removed at exit) and o.balancing, on 127.0.0.1:0. It prints "listening <addr>"
// once it serves, and shuts down when ctx ends or its stdin reaches EOF. With o.cpuprofile it
// writes a CPU profile of the kernel alone (no load generator in this process) there, and at
// exit the allocation profile of its whole life to o.cpuprofile + ".allocs" (go tool pprof
// -sample_index=alloc_space or alloc_objects).
func runKernel(ctx context.Context, o options, stdout io.Writer) (err error) {
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			_ = f.Close()
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			err = errors.Join(err, f.Close(), writeAllocs(o.cpuprofile+".allocs"))
		}()
	}
	dir, err := os.MkdirTemp("", "nops-bench-invoke-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := config.Default()
	cfg.DataDir, cfg.HTTP.Addr, cfg.Auth.BootstrapAdminPassword = dir, "127.0.0.1:0", password
	cfg.Log.Level = "error"
	// The bench is one client IP and one tenant: the per-IP and concurrency caps would refuse
	// its load. Authentication, RBAC and the policy stay on.
	cfg.Limits.PerIP = ""
	cfg.Limits.InFlightPerIP, cfg.Limits.InFlightMax, cfg.Limits.InFlightPerTenant = 100000, 100000, 100000
	cfg.Limits.MaxConnsPerIP = 100000
	cfg.Invoke.Balancing = o.balancing
	// The agents are children on 127.0.0.1: egress.allow_loopback's default (auto) allows
	// loopback with the embedded database.
	k, err := kernel.New(ctx, cfg, kernel.Options{Logger: slog.New(slog.DiscardHandler), Out: io.Discard, Version: "bench", Commit: "bench", BcryptCost: bcrypt.MinCost})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- k.Run(rctx) }()
	if _, err := fmt.Fprintf(stdout, "listening %s\n", k.Addr()); err != nil {
		cancel()
		return errors.Join(err, <-done, k.Close())
	}
	select {
	case <-ctx.Done():
	case <-parentGone():
	case err := <-done:
		cancel()
		return errors.Join(fmt.Errorf("kernel stopped: %w", err), k.Close())
	}
	cancel()
	return errors.Join(<-done, k.Close())
}

// writeAllocs writes the process's allocation profile to path.
func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("allocation profile: %w", err)
	}
	err = pprof.Lookup("allocs").WriteTo(f, 0)
	return errors.Join(err, f.Close())
}

// kernelRun is a kernel process started by the bench, with a tenant, an ADMIN API key, one
// allow policy and the agents registered, heartbeating until closed.
type kernelRun struct {
	proc   *child
	client *http.Client // the setup's, heartbeats' and readiness checks'
	base   string
	key    string
	agents map[string]string // agent id → name
	close  func()
}

// invokeURL returns the kernel's invoke URL of capability.
func (k *kernelRun) invokeURL(capability string) string { return k.base + "/v1/invoke/" + capability }

// startKernel starts a kernel process (-role kernel) with the given balancing mode (dynamic or
// static), sets up its tenant and registers agents. With profile, the kernel writes its CPU
// profile there.
func startKernel(ctx context.Context, balancing string, agents []agentSpec, profile string, stderr io.Writer) (*kernelRun, error) {
	args := []string{"-role", "kernel", "-balancing", balancing}
	if profile != "" {
		args = append(args, "-cpuprofile", profile)
	}
	proc, err := startChild(ctx, "kernel", time.Minute, stderr, args...)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	var hb sync.WaitGroup
	kr := &kernelRun{proc: proc, client: proc.client, base: proc.URL(), agents: map[string]string{}}
	kr.close = func() {
		cancel()
		hb.Wait()
		proc.stop()
	}
	ids, err := kr.setup(ctx, agents)
	if err != nil {
		kr.close()
		return nil, fmt.Errorf("kernel setup: %w", err)
	}
	hb.Add(1)
	go func() {
		defer hb.Done()
		kr.heartbeat(rctx, ids, stderr)
	}()
	for _, a := range agents {
		if err := kr.waitInvoke(ctx, a.capability); err != nil {
			kr.close()
			return nil, err
		}
	}
	return kr, nil
}

// call sends one JSON request and decodes a 2xx answer into out.
func (k *kernelRun) call(ctx context.Context, method, url string, body any, out any, headers ...string) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// setup creates the tenant, its ADMIN API key, the agents and the allow policy, and returns the
// agents' ids.
func (k *kernelRun) setup(ctx context.Context, agents []agentSpec) ([]string, error) {
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := k.call(ctx, "POST", k.base+"/v1/auth/token", map[string]string{"username": "admin", "password": password}, &tok); err != nil {
		return nil, err
	}
	admin := []string{"Authorization", "Bearer " + tok.AccessToken}
	var ten struct {
		ID string `json:"id"`
	}
	if err := k.call(ctx, "POST", k.base+"/v1/tenants", map[string]string{"name": "bench", "display_name": "Bench"}, &ten, admin...); err != nil {
		return nil, err
	}
	var key struct {
		Secret string `json:"secret"`
	}
	if err := k.call(ctx, "POST", k.base+"/v1/api-keys?tenant="+ten.ID, map[string]string{"name": "bench", "role": "ADMIN"}, &key, admin...); err != nil {
		return nil, err
	}
	k.key = key.Secret
	apiKey := []string{"X-API-Key", key.Secret}
	var ids []string
	for _, a := range agents {
		var out struct {
			ID string `json:"id"`
		}
		spec := map[string]any{"name": a.name, "version": "1.0.0", "endpoint": a.endpoint, "criticality": "essential",
			"capabilities": []map[string]any{{"name": a.capability, "description": "bench", "input_schema": inputSchema}}}
		if err := k.call(ctx, "POST", k.base+"/v1/agents", spec, &out, apiKey...); err != nil {
			return nil, err
		}
		ids = append(ids, out.ID)
		k.agents[out.ID] = a.name
	}
	pol := map[string]any{"name": "bench-allow", "effect": "allow", "expression": allowPolicy}
	if err := k.call(ctx, "POST", k.base+"/v1/policies", pol, nil, apiKey...); err != nil {
		return nil, err
	}
	// The policy must be in force before anything is measured: a capability outside bench.*
	// answers 403 (no allow policy matched) instead of 404 (no agent offers it).
	return ids, k.waitStatus(ctx, k.invokeURL("other.echo"), http.StatusForbidden)
}

// heartbeat reports every agent alive every heartbeatEvery until ctx ends. A failure is shown
// (it would make the agent stale, then a zombie, and skew the figures); the next beat retries.
func (k *kernelRun) heartbeat(ctx context.Context, ids []string, stderr io.Writer) {
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, id := range ids {
			err := k.call(ctx, "POST", k.base+"/v1/agents/"+id+"/heartbeat", map[string]any{}, nil, "X-API-Key", k.key)
			if err != nil && ctx.Err() == nil {
				fmt.Fprintf(stderr, "  heartbeat of %s (%s) failed: %v\n", k.agents[id], id, err)
			}
		}
	}
}

// usageCount returns the event-stats consumer's count of the tenant's billing.usage events.
func (k *kernelRun) usageCount(ctx context.Context) (int64, error) {
	var out struct {
		Items []struct {
			Type  string `json:"type"`
			Count int64  `json:"count"`
		} `json:"items"`
	}
	if err := k.call(ctx, "GET", k.base+"/v1/events/stats", nil, &out, "X-API-Key", k.key); err != nil {
		return 0, err
	}
	for _, it := range out.Items {
		if it.Type == "nops.billing.usage.v1" {
			return it.Count, nil
		}
	}
	return 0, nil
}

// drainFor bounds drain.
const drainFor = 2 * time.Minute

// drain waits until the event-stats consumer's count of billing.usage events has not moved for
// a second, and returns the count and when it last moved, from drain's call: how long the event
// work the load left behind (each call's two events through the outbox, the relay, the bus and
// the consumer) ran on after the load. Waiting for it also puts all of that work into the
// kernel's CPU profile.
func (k *kernelRun) drain(ctx context.Context) (int64, time.Duration, error) {
	start := time.Now()
	last, err := k.usageCount(ctx)
	if err != nil {
		return 0, 0, err
	}
	moved := start
	for time.Since(start) < drainFor {
		select {
		case <-ctx.Done():
			return last, 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		n, err := k.usageCount(ctx)
		if err != nil {
			return last, 0, err
		}
		if n != last {
			last, moved = n, time.Now()
		} else if time.Since(moved) >= time.Second {
			return last, moved.Sub(start), nil
		}
	}
	return last, time.Since(start), fmt.Errorf("billing.usage events still being counted %s after the load", drainFor)
}

// waitInvoke polls the capability through the kernel until it answers 200.
func (k *kernelRun) waitInvoke(ctx context.Context, capability string) error {
	if err := k.waitStatus(ctx, k.invokeURL(capability), http.StatusOK); err != nil {
		return fmt.Errorf("POST /v1/invoke/%s never answered 200 (is the invoke API wired in internal/kernel?): %w", capability, err)
	}
	return nil
}

// waitStatus polls POST url with the bench's body and API key until it answers want.
func (k *kernelRun) waitStatus(ctx context.Context, url string, want int) error {
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(requestBody))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", k.key)
		resp, err := k.client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s: wanted %d within 15s, last: %s", url, want, last)
}
