package nops

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/nops-kernel/nops/sdk/go/nops/api"
)

// AgentConfig describes an agent.
type AgentConfig struct {
	// Name is the agent's name in its tenant (a DNS label). Registering twice with the same
	// name updates that agent rather than creating a second one.
	Name    string
	Version string // semantic version, 1.2.3
	// Endpoint is the base URL the kernel calls the agent at; invocations arrive at
	// <Endpoint>/invoke/<capability>. When empty, Run derives it from its listener.
	Endpoint     string
	Capabilities []Capability
	Labels       map[string]string
	Metadata     map[string]any
	// Capacity is how many invocations the agent serves at once, reported as free capacity in
	// heartbeats (0: not reported).
	Capacity int
	// HeartbeatInterval is the mean time between heartbeats (default 10 s); each wait is drawn
	// uniformly in ±20 % of it, so a fleet started together does not beat in step.
	HeartbeatInterval time.Duration
	// DrainTimeout bounds the wait for in-flight invocations on shutdown (default 30 s).
	DrainTimeout time.Duration
	// SVID, when set, makes the agent serve https with its X.509-SVID, renewed without a
	// restart, and accept only the kernel's SVIDs as clients (see SVIDSource). The endpoint
	// Run derives is then https://…
	SVID SVIDSource
	// Propagator extracts the caller's trace context (default: W3C traceparent and baggage).
	Propagator propagation.TextMapPropagator
	// Hooks are the agent's metric callbacks (the client's own are used for retries).
	Hooks Hooks
	// DisableAutoRotate turns off the automatic rotation of the client's API key. By default,
	// when an answer of the kernel carries Nops-Api-Key-Rotate-By (an administrator
	// force-rotated the key), the agent rotates the key itself in the background, once, with
	// Client.RotateAPIKey (rotate, switch, confirm: no call fails), and hands the new key to
	// OnKeyRotated.
	DisableAutoRotate bool
	// RotationGrace is how long the previous secret keeps working after an automatic rotation
	// (default 1 h), capped at half the time left before the deadline but not below 5 s.
	RotationGrace time.Duration
	// OnKeyRotated receives the new raw API key after an automatic rotation, for the caller to
	// store it (the previous one stops working after the grace period). It is called on the
	// rotation's goroutine.
	OnKeyRotated func(newKey string)
	Logger       *slog.Logger
}

// Agent is an agent runtime bound to a kernel client.
type Agent struct {
	c       *Client
	cfg     AgentConfig
	handler *invocationHandler

	inFlight atomic.Int64
	window   window

	// rotating guards the single automatic key rotation in flight; rotations tracks it, so
	// Run waits for it; nextRotation is the earliest time to try again after a failed one.
	rotating     atomic.Bool
	rotations    sync.WaitGroup
	nextRotation time.Time

	mu sync.Mutex
	id string
}

// autoRotateRetry is the wait before another automatic rotation after a failed one.
const autoRotateRetry = 30 * time.Second

// minAutoGrace is the grace period an automatic rotation never goes below because of a close
// deadline: the time for the agent's requests in flight to be answered.
const minAutoGrace = 5 * time.Second

// NewAgent checks cfg and compiles the capabilities' input schemas once.
func NewAgent(c *Client, cfg AgentConfig) (*Agent, error) {
	if c == nil {
		return nil, errors.New("nops: agent needs a client")
	}
	if cfg.Name == "" || cfg.Version == "" {
		return nil, errors.New("nops: agent needs a name and a version")
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 10 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RotationGrace <= 0 {
		cfg.RotationGrace = time.Hour
	}
	a := &Agent{c: c, cfg: cfg}
	caps := make(map[string]*compiled, len(cfg.Capabilities))
	for _, capb := range cfg.Capabilities {
		cc, err := compileCapability(capb)
		if err != nil {
			return nil, fmt.Errorf("nops: %w", err)
		}
		for _, sch := range []json.RawMessage{capb.InputSchema, capb.OutputSchema} {
			var m map[string]any
			if len(sch) > 0 && json.Unmarshal(sch, &m) != nil {
				return nil, fmt.Errorf("nops: capability %s: a schema must be a JSON object", capb.Name)
			}
		}
		if caps[capb.Name] != nil {
			return nil, fmt.Errorf("nops: capability %s declared twice", capb.Name)
		}
		caps[capb.Name] = cc
	}
	a.handler = &invocationHandler{
		caps: caps, propagator: cfg.Propagator, hooks: cfg.Hooks, logger: cfg.Logger, printer: newPrinter(),
		track: func(d int64) { a.inFlight.Add(d) },
		done:  a.window.add,
	}
	if !cfg.DisableAutoRotate {
		c.watchRotateBy(a.rotateBy)
	}
	return a, nil
}

// rotateBy starts the automatic rotation of the client's API key, due by the deadline by,
// unless one is in flight or the last one failed less than autoRotateRetry ago.
func (a *Agent) rotateBy(by time.Time) {
	if !a.rotating.CompareAndSwap(false, true) {
		return
	}
	a.mu.Lock()
	wait := time.Now().Before(a.nextRotation)
	a.mu.Unlock()
	if wait {
		a.rotating.Store(false)
		return
	}
	a.rotations.Go(func() {
		defer a.rotating.Store(false)
		a.autoRotate(by)
	})
}

// autoGrace is the grace period of an automatic rotation: the configured one, capped at half
// the time left before the deadline, that cap never below minAutoGrace.
func autoGrace(configured, left time.Duration) time.Duration {
	return min(configured, max(left/2, minAutoGrace))
}

// autoRotate rotates the client's API key (rotate, switch, confirm), reports it to the hooks
// and hands the new key to OnKeyRotated.
func (a *Agent) autoRotate(by time.Time) {
	start := time.Now()
	left := by.Sub(start)
	grace := autoGrace(a.cfg.RotationGrace, left)
	ctx, cancel := context.WithTimeout(context.Background(), max(min(left, 2*time.Minute), 30*time.Second))
	defer cancel()
	rot, err := a.c.RotateAPIKey(ctx, grace)
	ev := KeyRotationEvent{KeyID: rot.KeyID, RotateBy: by, Grace: grace, OldValidUntil: rot.OldValidUntil, Duration: time.Since(start), Err: err}
	if err != nil {
		if ev.KeyID == "" {
			ev.KeyID, _ = apiKeyID(a.c.APIKey())
		}
		a.mu.Lock()
		a.nextRotation = time.Now().Add(autoRotateRetry)
		a.mu.Unlock()
		a.cfg.Hooks.keyRotation(ev)
		a.cfg.Logger.Warn("automatic API key rotation failed", "key", ev.KeyID, "rotate_by", by, "err", err)
		return
	}
	a.cfg.Hooks.keyRotation(ev)
	a.cfg.Logger.Info("API key rotated as the kernel required", "key", rot.KeyID, "rotate_by", by, "old_valid_until", rot.OldValidUntil)
	if a.cfg.OnKeyRotated != nil {
		a.cfg.OnKeyRotated(a.c.APIKey())
	}
}

// Handler returns the http.Handler that serves the agent's invocations (POST
// /invoke/{capability}). Run serves it; mount it yourself to serve it on your own server.
func (a *Agent) Handler() http.Handler { return a.handler }

// ID returns the agent's ID once registered ("" before).
func (a *Agent) ID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.id
}

// InFlight returns the number of invocations being served.
func (a *Agent) InFlight() int64 { return a.inFlight.Load() }

func (a *Agent) spec(endpoint string) api.AgentSpec {
	caps := make([]api.Capability, 0, len(a.cfg.Capabilities))
	for _, c := range a.cfg.Capabilities {
		ac := api.Capability{Name: c.Name}
		if c.Description != "" {
			d := c.Description
			ac.Description = &d
		}
		if m := rawObject(c.InputSchema); m != nil {
			ac.InputSchema = &m
		}
		if m := rawObject(c.OutputSchema); m != nil {
			ac.OutputSchema = &m
		}
		caps = append(caps, ac)
	}
	s := api.AgentSpec{Name: a.cfg.Name, Version: a.cfg.Version, Endpoint: endpoint, Capabilities: &caps}
	if a.cfg.Labels != nil {
		l := a.cfg.Labels
		s.Labels = &l
	}
	if a.cfg.Metadata != nil {
		m := a.cfg.Metadata
		s.Metadata = &m
	}
	return s
}

// Register registers the agent at endpoint and returns its ID. It is idempotent: when the
// tenant already has an agent of this name (a restart, a retried call), that agent's
// specification is replaced (If-Match on its ETag) and its ID kept.
func (a *Agent) Register(ctx context.Context, endpoint string) (string, error) {
	spec := a.spec(endpoint)
	api := a.c.API()
	for range 3 {
		resp, err := api.RegisterAgentWithResponse(ctx, nil, spec)
		if err != nil {
			return "", fmt.Errorf("nops: register %s: %w", a.cfg.Name, err)
		}
		if resp.JSON201 != nil {
			a.setID(resp.JSON201.Id)
			return resp.JSON201.Id, nil
		}
		if resp.StatusCode() != http.StatusConflict {
			return "", fmt.Errorf("nops: register %s: %w", a.cfg.Name, problemOf(resp.StatusCode(), resp.Body))
		}
		id, err := a.findByName(ctx)
		if err != nil {
			return "", err
		}
		if id == "" {
			continue // deleted meanwhile: register again
		}
		got, err := api.GetAgentWithResponse(ctx, id, nil)
		if err != nil {
			return "", fmt.Errorf("nops: register %s: read %s: %w", a.cfg.Name, id, err)
		}
		if got.JSON200 == nil {
			continue
		}
		etag := got.HTTPResponse.Header.Get("ETag")
		upd, err := api.UpdateAgentWithResponse(ctx, id, &apiUpdateParams{IfMatch: etag}, spec)
		if err != nil {
			return "", fmt.Errorf("nops: register %s: update %s: %w", a.cfg.Name, id, err)
		}
		if upd.JSON200 != nil {
			a.setID(id)
			return id, nil
		}
		if s := upd.StatusCode(); s != http.StatusPreconditionFailed && s != http.StatusNotFound {
			return "", fmt.Errorf("nops: register %s: update %s: %w", a.cfg.Name, id, problemOf(s, upd.Body))
		}
	}
	return "", fmt.Errorf("nops: register %s: the agent kept changing; retry", a.cfg.Name)
}

type apiUpdateParams = api.UpdateAgentParams

// findByName returns the ID of the tenant's agent named like this one ("" when none).
func (a *Agent) findByName(ctx context.Context) (string, error) {
	var cursor *string
	limit := 500
	for {
		resp, err := a.c.API().ListAgentsWithResponse(ctx, &api.ListAgentsParams{Limit: &limit, Cursor: cursor})
		if err != nil {
			return "", fmt.Errorf("nops: list agents: %w", err)
		}
		if resp.JSON200 == nil {
			return "", fmt.Errorf("nops: list agents: %w", problemOf(resp.StatusCode(), resp.Body))
		}
		for _, ag := range resp.JSON200.Items {
			if ag.Name == a.cfg.Name {
				return ag.Id, nil
			}
		}
		if resp.JSON200.NextCursor == nil || *resp.JSON200.NextCursor == "" {
			return "", nil
		}
		cursor = resp.JSON200.NextCursor
	}
}

func (a *Agent) setID(id string) {
	a.mu.Lock()
	a.id = id
	a.mu.Unlock()
}

// windowSize is how many recent invocations the latency and error figures cover.
const windowSize = 256

// window keeps the latency and outcome of the last windowSize invocations served.
type window struct {
	mu     sync.Mutex
	lat    [windowSize]time.Duration
	failed [windowSize]bool
	n      int // invocations recorded, capped at windowSize
	next   int
}

func (w *window) add(d time.Duration, status int) {
	w.mu.Lock()
	w.lat[w.next], w.failed[w.next] = d, status >= 500
	w.next = (w.next + 1) % windowSize
	w.n = min(w.n+1, windowSize)
	w.mu.Unlock()
}

// figures returns the median and 95th percentile latency and the share of 5xx answers; ok is
// false before the first invocation.
func (w *window) figures() (p50, p95 time.Duration, errRate float64, ok bool) {
	w.mu.Lock()
	lat := slices.Clone(w.lat[:w.n])
	failed := 0
	for _, f := range w.failed[:w.n] {
		if f {
			failed++
		}
	}
	w.mu.Unlock()
	if len(lat) == 0 {
		return 0, 0, 0, false
	}
	slices.Sort(lat)
	rank := func(q float64) time.Duration { return lat[min(int(q*float64(len(lat))), len(lat)-1)] }
	return rank(0.50), rank(0.95), float64(failed) / float64(len(lat)), true
}

// load returns the agent's load figures, read from the runtime itself: in-flight invocations,
// free capacity, and the latency and error figures of the last invocations served.
func (a *Agent) load() api.Load {
	inFlight := a.inFlight.Load()
	l := api.Load{InFlight: &inFlight}
	if p50, p95, er, ok := a.window.figures(); ok {
		ms50, ms95 := float64(p50)/float64(time.Millisecond), float64(p95)/float64(time.Millisecond)
		l.P50Ms, l.P95Ms, l.ErrorRate = &ms50, &ms95, &er
	}
	if a.cfg.Capacity > 0 {
		free := max(int64(a.cfg.Capacity)-inFlight, 0)
		l.FreeCapacity = &free
	}
	return l
}

// Heartbeat reports the agent alive with its load. An agent the kernel no longer knows (reaped,
// deleted) is registered again at endpoint.
func (a *Agent) Heartbeat(ctx context.Context, endpoint string) error {
	id := a.ID()
	if id == "" {
		return errors.New("nops: heartbeat before registration")
	}
	start := time.Now()
	l := a.load()
	resp, err := a.c.API().HeartbeatAgentWithResponse(ctx, id, nil, l)
	ev := HeartbeatEvent{AgentID: id, InFlight: *l.InFlight, Duration: time.Since(start)}
	if l.FreeCapacity != nil {
		ev.Free = *l.FreeCapacity
	}
	if l.P50Ms != nil {
		ev.P50 = time.Duration(*l.P50Ms * float64(time.Millisecond))
		ev.P95 = time.Duration(*l.P95Ms * float64(time.Millisecond))
		ev.ErrorRate = *l.ErrorRate
	}
	switch {
	case err != nil:
		ev.Err = fmt.Errorf("nops: heartbeat %s: %w", id, err)
	case resp.JSON200 != nil:
		ev.Status = string(resp.JSON200.Status)
	case resp.StatusCode() == http.StatusNotFound:
		if _, rerr := a.Register(ctx, endpoint); rerr != nil {
			ev.Err = fmt.Errorf("nops: heartbeat %s: agent gone, register again: %w", id, rerr)
		}
	default:
		ev.Err = fmt.Errorf("nops: heartbeat %s: %w", id, problemOf(resp.StatusCode(), resp.Body))
	}
	a.cfg.Hooks.heartbeat(ev)
	return ev.Err
}

// Deregister removes the agent from the registry (a missing agent is not an error).
func (a *Agent) Deregister(ctx context.Context) error {
	id := a.ID()
	if id == "" {
		return nil
	}
	resp, err := a.c.API().DeregisterAgentWithResponse(ctx, id, nil)
	if err != nil {
		return fmt.Errorf("nops: deregister %s: %w", id, err)
	}
	if s := resp.StatusCode(); s != http.StatusNoContent && s != http.StatusNotFound {
		return fmt.Errorf("nops: deregister %s: %w", id, problemOf(s, resp.Body))
	}
	a.setID("")
	return nil
}

// jitter returns d ±20 %, uniformly.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*mrand.Float64()))
}

// Run serves the agent on ln until ctx ends: it starts serving (https with the SVID when
// configured), registers, heartbeats, and renews the SVID. When ctx ends it stops heartbeating,
// drains the invocations in flight (new connections are refused, calls being served finish,
// within DrainTimeout), then deregisters. It returns nil after a clean shutdown.
func (a *Agent) Run(ctx context.Context, ln net.Listener) error {
	endpoint := a.cfg.Endpoint
	scheme := "http"
	srv := &http.Server{Handler: a.handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(a.cfg.Logger.Handler(), slog.LevelWarn)}
	var bg sync.WaitGroup
	if a.cfg.SVID != nil {
		scheme = "https"
	}
	if endpoint == "" {
		endpoint = scheme + "://" + ln.Addr().String()
	}
	// Register before serving: an https agent's SVID names its agent ID. The listener is open,
	// so a call the kernel routes meanwhile waits in its backlog.
	if _, err := a.Register(ctx, endpoint); err != nil {
		_ = ln.Close()
		return err
	}
	if a.cfg.SVID != nil {
		svidCtx, stopSVID := context.WithCancel(context.WithoutCancel(ctx))
		defer stopSVID()
		if err := a.cfg.SVID.Start(svidCtx, a.ID()); err != nil {
			_ = ln.Close()
			return errors.Join(fmt.Errorf("nops: agent %s: svid: %w", a.cfg.Name, err), a.Deregister(context.WithoutCancel(ctx)))
		}
		srv.TLSConfig = serverTLSConfig(a.cfg.SVID)
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	a.cfg.Logger.InfoContext(ctx, "agent registered", "agent", a.ID(), "name", a.cfg.Name, "endpoint", endpoint)
	bg.Go(func() {
		for {
			t := time.NewTimer(jitter(a.cfg.HeartbeatInterval))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if err := a.Heartbeat(ctx, endpoint); err != nil && ctx.Err() == nil {
				a.cfg.Logger.WarnContext(ctx, "heartbeat failed", "agent", a.ID(), "err", err)
			}
		}
	})
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	bg.Wait()
	a.rotations.Wait() // a key rotation under way finishes: its new secret must reach OnKeyRotated
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.DrainTimeout)
	defer cancel()
	shutdownErr := srv.Shutdown(drainCtx)
	if serveErr == nil {
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			serveErr = err
		}
	}
	deregErr := a.Deregister(drainCtx)
	if deregErr == nil {
		a.cfg.Logger.InfoContext(ctx, "agent deregistered", "name", a.cfg.Name)
	}
	return errors.Join(serveErr, shutdownErr, deregErr)
}

// rawObject decodes a JSON object schema for the registry (nil when absent).
func rawObject(raw []byte) map[string]any {
	if len(raw) == 0 {
		return nil
	}
	var m map[string]any
	_ = json.Unmarshal(raw, &m) // NewAgent checked that it is an object
	return m
}
