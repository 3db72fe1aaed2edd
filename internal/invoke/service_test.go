package invoke_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/balancer"
	"github.com/nops-kernel/nops/internal/egress"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/invoke"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/routing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const tenantID = "ten_01jzzzzzzzzzzzzzzzzzzzzzzz"

// fleet is a set of agents served by real HTTP servers.
type fleet struct {
	mu     sync.Mutex
	agents []registry.Agent
}

func (f *fleet) Routable(_ context.Context, tenant, capability string) ([]registry.Agent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []registry.Agent
	for _, a := range f.agents {
		if a.TenantID == tenant && a.HasCapability(capability) {
			out = append(out, a)
		}
	}
	return out, nil
}

// add registers an agent served by h and returns its id and server.
func (f *fleet) add(t *testing.T, h http.Handler, schema string) (string, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return f.addURL(srv.URL, schema), srv
}

func (f *fleet) addURL(endpoint, schema string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := fmt.Sprintf("agt_%026d", len(f.agents)+1)
	c := registry.Capability{Name: "text.summarize"}
	if schema != "" {
		c.InputSchema = json.RawMessage(schema)
	}
	f.agents = append(f.agents, registry.Agent{
		ID: id, TenantID: tenantID, Name: fmt.Sprintf("a%d", len(f.agents)+1), Endpoint: endpoint,
		Capabilities: []registry.Capability{c}, Status: registry.StatusHealthy, HeartbeatAt: time.Now(),
	})
	return id
}

type routes struct{ r *routing.Route }

func (r routes) Get(context.Context, string, string) (*routing.Route, error) { return r.r, nil }

type recorder struct {
	mu   sync.Mutex
	done []invoke.Completion
}

func (r *recorder) add(_ context.Context, c invoke.Completion) {
	r.mu.Lock()
	r.done = append(r.done, c)
	r.mu.Unlock()
}

func newService(t *testing.T, f *fleet, cfg invoke.Config, mutate ...func(*invoke.Deps)) (*invoke.Service, *recorder) {
	t.Helper()
	rec := &recorder{}
	tr := egress.NewTransport(egress.Policy{AllowLoopback: true}, egress.TransportOptions{})
	t.Cleanup(tr.CloseIdleConnections)
	if cfg.CandidatesTTL == 0 {
		cfg.CandidatesTTL = -1 // the fleet changes during tests
	}
	deps := invoke.Deps{Agents: f, Transport: tr, OnComplete: rec.add}
	for _, m := range mutate {
		m(&deps)
	}
	s, err := invoke.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	return s, rec
}

func call(t *testing.T, s *invoke.Service, body string, headers ...string) *httptest.ResponseRecorder {
	t.Helper()
	h := http.Header{"Content-Type": {"application/json"}}
	for _, kv := range headers {
		k, v, _ := strings.Cut(kv, ":")
		h.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	w := httptest.NewRecorder()
	err := s.Serve(context.Background(), w, invoke.Request{TenantID: tenantID, Capability: "text.summarize", Header: h, Body: []byte(body)})
	if err != nil {
		e := errs.As(err)
		if e == nil {
			t.Fatalf("serve: %v", err)
		}
		w.Code = map[errs.Code]int{errs.NotFound: 404, errs.Invalid: 400, errs.Unavailable: 503, errs.BadGateway: 502, errs.GatewayTimeout: 504, errs.UnsupportedMediaType: 415}[e.Code]
		w.Body.WriteString(e.Message)
		for _, f := range e.Fields {
			w.Body.WriteString(" " + f.Name)
		}
	}
	return w
}

func TestRelayAndHeaderHygiene(t *testing.T) {
	f := &fleet{}
	var got http.Header
	var gotBody string
	id, _ := f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		if r.URL.Path != "/invoke/text.summarize" || r.Method != http.MethodPost {
			t.Errorf("agent got %s %s", r.Method, r.URL.Path)
		}
		w.Header().Set("Set-Cookie", "planted=1")
		w.Header().Set("X-Agent", "yes")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"summary":"ok"}`)
	}), "")
	s, rec := newService(t, f, invoke.Config{})
	w := call(t, s, `{"text":"x"}`, "Authorization: Bearer secret", "X-API-Key: nops_secret", "Cookie: c=1",
		"Signature: nops=:x:", "Signature-Input: nops=()", "Connection: X-Hop", "X-Hop: 1", "X-Custom: kept")
	if w.Code != http.StatusCreated || w.Body.String() != `{"summary":"ok"}` {
		t.Fatalf("relayed %d %q", w.Code, w.Body.String())
	}
	if gotBody != `{"text":"x"}` {
		t.Errorf("agent got body %q", gotBody)
	}
	for _, h := range []string{"Authorization", "X-Api-Key", "Cookie", "Signature", "Signature-Input", "X-Hop"} {
		if got.Get(h) != "" {
			t.Errorf("the agent received the caller's %s", h)
		}
	}
	if got.Get("X-Custom") != "kept" || got.Get(invoke.HeaderTenant) != tenantID || got.Get(invoke.HeaderCapability) != "text.summarize" {
		t.Errorf("agent headers %v", got)
	}
	if ms := got.Get(invoke.HeaderTimeout); ms == "" || ms == "0" {
		t.Errorf("no remaining budget sent to the agent: %q", ms)
	}
	if w.Header().Get("Set-Cookie") != "" || w.Header().Get("X-Agent") != "yes" || w.Header().Get(invoke.HeaderAgent) != id {
		t.Errorf("caller headers %v", w.Header())
	}
	if len(rec.done) != 1 || rec.done[0].AgentID != id || rec.done[0].Outcome != invoke.OutcomeOK || rec.done[0].ResponseBytes != 16 || rec.done[0].Attempts != 1 {
		t.Errorf("completions %+v", rec.done)
	}
}

func TestNoAgent(t *testing.T) {
	s, rec := newService(t, &fleet{}, invoke.Config{})
	if w := call(t, s, `{}`); w.Code != http.StatusNotFound {
		t.Fatalf("no agent: %d %s", w.Code, w.Body)
	}
	if len(rec.done) != 0 {
		t.Errorf("a call refused before routing completed: %+v", rec.done)
	}
}

func TestInputSchema(t *testing.T) {
	f := &fleet{}
	var hits atomic.Int32
	f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }),
		`{"type":"object","required":["text"],"properties":{"text":{"type":"string"},"n":{"type":"integer","minimum":1}}}`)
	s, _ := newService(t, f, invoke.Config{})
	for _, tt := range []struct {
		body, want string
		code       int
	}{
		{`{"n":0}`, "body.n", 400},
		{`{"n":1}`, "body", 400},
		{`not json`, "body", 400},
		{`{"text":"ok","n":2}`, "", 200},
	} {
		w := call(t, s, tt.body)
		if w.Code != tt.code || !strings.Contains(w.Body.String(), tt.want) {
			t.Errorf("%s: %d %q, want %d naming %q", tt.body, w.Code, w.Body, tt.code, tt.want)
		}
	}
	if hits.Load() != 1 {
		t.Errorf("the agent saw %d calls, want only the valid one", hits.Load())
	}
	if w := call(t, s, `{"text":"x"}`, "Content-Type: text/plain"); w.Code != 415 {
		t.Errorf("text/plain to a JSON capability: %d", w.Code)
	}
}

// deadURL returns a URL where nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "http://" + addr
}

func TestDialFailureMovesEvenNonIdempotentCalls(t *testing.T) {
	f := &fleet{}
	f.addURL(deadURL(t), "")
	var hits atomic.Int32
	f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }), "")
	s, _ := newService(t, f, invoke.Config{BackoffBase: time.Millisecond})
	for i := range 20 {
		if w := call(t, s, `{}`); w.Code != 200 {
			t.Fatalf("call %d: %d %s", i, w.Code, w.Body)
		}
	}
	if hits.Load() != 20 {
		t.Errorf("live agent served %d of 20", hits.Load())
	}
}

func TestRetryOnlyWhenRetryable(t *testing.T) {
	f := &fleet{}
	var bad, good atomic.Int32
	f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bad.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}), "")
	f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { good.Add(1) }), "")
	s, _ := newService(t, f, invoke.Config{BackoffBase: time.Millisecond, Balancer: balancer.Config{EjectAfter: 1000}, Breaker: invoke.BreakerConfig{Failures: 1000}})
	// Without an Idempotency-Key a 503 is relayed as it is.
	var relayed503 bool
	for range 40 {
		if w := call(t, s, `{}`); w.Code == http.StatusServiceUnavailable {
			relayed503 = true
		}
	}
	if !relayed503 {
		t.Fatal("a non-retryable call was never relayed the agent's 503 (was it retried?)")
	}
	// With one, it moves to the other agent.
	for i := range 40 {
		if w := call(t, s, `{}`, fmt.Sprintf("Idempotency-Key: k%d", i)); w.Code != 200 {
			t.Fatalf("retryable call %d: %d %s", i, w.Code, w.Body)
		}
	}
}

func TestRetryBudgetBoundsAttempts(t *testing.T) {
	f := &fleet{}
	var attempts atomic.Int32
	for range 3 {
		f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			attempts.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
		}), "")
	}
	cfg := invoke.Config{
		BackoffBase: time.Microsecond, BackoffMax: time.Microsecond, MaxAttempts: 3,
		RetryBudget: invoke.RetryBudget{Ratio: 0.1, MinPerSecond: 0.5, Window: 10 * time.Second},
		Balancer:    balancer.Config{EjectAfter: 1000}, Breaker: invoke.BreakerConfig{Failures: 1000},
	}
	s, _ := newService(t, f, cfg)
	const calls = 300
	for i := range calls {
		w := call(t, s, `{}`, fmt.Sprintf("Idempotency-Key: k%d", i))
		if w.Code != http.StatusServiceUnavailable && w.Code != http.StatusBadGateway {
			t.Fatalf("call %d: %d %s", i, w.Code, w.Body)
		}
	}
	// Without a budget: 3 attempts per call = 900. With it: 300 + 10 % + the floor (0.5/s × 10 s).
	if got, limit := attempts.Load(), int32(calls+calls/10+5); got > limit {
		t.Errorf("agents saw %d attempts for %d calls, budget allows %d", got, calls, limit)
	}
	if attempts.Load() <= calls {
		t.Errorf("no retry at all (%d attempts): the budget should allow some", attempts.Load())
	}
}

func TestBreakerOpensAndHalfOpenProbeCloses(t *testing.T) {
	f := &fleet{}
	var failing atomic.Bool
	failing.Store(true)
	var hits atomic.Int32
	f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if failing.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}), "")
	var transitions []string
	var mu sync.Mutex
	s, _ := newService(t, f, invoke.Config{Breaker: invoke.BreakerConfig{Failures: 3, Delay: 200 * time.Millisecond, Successes: 1},
		Balancer: balancer.Config{EjectAfter: 1000}}, func(d *invoke.Deps) {
		d.OnBreaker = func(_, _, from, to string) { mu.Lock(); transitions = append(transitions, from+">"+to); mu.Unlock() }
	})
	for range 3 {
		if w := call(t, s, `{}`); w.Code != 500 {
			t.Fatalf("failing agent: %d", w.Code)
		}
	}
	if w := call(t, s, `{}`); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("open breaker: %d %s, want 503 without calling", w.Code, w.Body)
	}
	if hits.Load() != 3 {
		t.Fatalf("the agent was called %d times through an open breaker", hits.Load())
	}
	failing.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if w := call(t, s, `{}`); w.Code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the half-open breaker never let a probe through")
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"closed>open", "open>half_open", "half_open>closed"}
	if fmt.Sprint(transitions) != fmt.Sprint(want) {
		t.Errorf("transitions %v, want %v", transitions, want)
	}
}

func TestStreamingIsNotBuffered(t *testing.T) {
	f := &fleet{}
	release := make(chan struct{})
	f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		<-release
		_, _ = io.WriteString(w, "data: second\n\n")
	}), "")
	s, _ := newService(t, f, invoke.Config{})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.Serve(r.Context(), w, invoke.Request{TenantID: tenantID, Capability: "text.summarize", Header: r.Header}); err != nil {
			http.Error(w, err.Error(), 500)
		}
	}))
	defer front.Close()
	resp, err := http.Post(front.URL, "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	line, err := rd.ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first event before the agent finished: %q %v", line, err)
	}
	close(release)
	rest, _ := io.ReadAll(rd)
	if !strings.Contains(string(rest), "data: second") {
		t.Errorf("rest %q", rest)
	}
}

func TestHedgeGoesToAnotherAgent(t *testing.T) {
	f := &fleet{}
	stall := make(chan struct{})
	defer close(stall)
	var slowHits, fastHits atomic.Int32
	slow, _ := f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slowHits.Add(1)
		select {
		case <-stall:
		case <-r.Context().Done():
		}
	}), "")
	fast, _ := f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fastHits.Add(1) }), "")
	// Equal weights: without hedging about half the calls would wait on the stalled agent.
	rt := &routing.Route{Targets: []routing.Target{{AgentID: slow, Weight: 1}, {AgentID: fast, Weight: 1}},
		Retryable: true, Hedge: &routing.Hedge{DelayMs: 20, MaxExtra: 1}}
	s, _ := newService(t, f, invoke.Config{}, func(d *invoke.Deps) { d.Routes = routes{rt} })
	for i := range 10 {
		start := time.Now()
		w := call(t, s, `{}`)
		if w.Code != 200 {
			t.Fatalf("call %d: %d %s", i, w.Code, w.Body)
		}
		if w.Header().Get(invoke.HeaderAgent) == slow {
			t.Fatalf("call %d answered by the stalled agent", i)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("call %d took %s", i, d)
		}
	}
	if fastHits.Load() != 10 {
		t.Errorf("fast agent served %d", fastHits.Load())
	}
}

func TestTimeoutEndsStalledCall(t *testing.T) {
	f := &fleet{}
	stall := make(chan struct{})
	defer close(stall)
	f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stall:
		case <-r.Context().Done():
		}
	}), "")
	s, rec := newService(t, f, invoke.Config{})
	w := call(t, s, `{}`, invoke.HeaderTimeout+": 150")
	if w.Code != http.StatusGatewayTimeout {
		t.Fatalf("stalled agent: %d %s, want 504", w.Code, w.Body)
	}
	if len(rec.done) != 1 || rec.done[0].Outcome != invoke.OutcomeTimeout {
		t.Errorf("completion %+v", rec.done)
	}
	if w := call(t, s, `{}`, invoke.HeaderTimeout+": soon"); w.Code != 400 || !strings.Contains(w.Body.String(), "header."+invoke.HeaderTimeout) {
		t.Errorf("bad timeout header: %d %s", w.Code, w.Body)
	}
}

func TestEgressRefusedIsReportedAndNeverDialled(t *testing.T) {
	f := &fleet{}
	f.addURL("http://169.254.169.254/latest", "")
	var blocked []string
	s, rec := newService(t, f, invoke.Config{}, func(d *invoke.Deps) {
		d.OnBlocked = func(_ context.Context, _, agentID string, b *egress.BlockedError) {
			blocked = append(blocked, b.Reason)
		}
	})
	w := call(t, s, `{}`)
	if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "egress") {
		t.Fatalf("metadata agent: %d %s", w.Code, w.Body)
	}
	if len(blocked) != 1 {
		t.Errorf("blocked reports %v", blocked)
	}
	if len(rec.done) != 1 || rec.done[0].Outcome != invoke.OutcomeError {
		t.Errorf("completion %+v", rec.done)
	}
}

// TestAnswerSentBeforeAccounting: an answer of known length reaches the caller as soon as its
// last byte is relayed — before the call's accounting (OnComplete) and the handler's return,
// not when the server flushes its buffer after the handler.
func TestAnswerSentBeforeAccounting(t *testing.T) {
	f := &fleet{}
	f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"summary":"ok"}`)
	}), "")
	received := make(chan struct{})
	s, _ := newService(t, f, invoke.Config{}, func(d *invoke.Deps) {
		d.OnComplete = func(context.Context, invoke.Completion) {
			select {
			case <-received:
			case <-time.After(30 * time.Second): // a guard against the deadlock, not a timing bound
				t.Error("the answer had not reached the caller when the call was accounted")
			}
		}
	})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := s.Serve(r.Context(), w, invoke.Request{TenantID: tenantID, Capability: "text.summarize", Header: r.Header, Body: body}); err != nil {
			t.Errorf("serve: %v", err)
		}
	}))
	defer front.Close()
	resp, err := http.Post(front.URL, "application/json", strings.NewReader(`{"text":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	close(received)
	if err != nil || string(b) != `{"summary":"ok"}` || resp.ContentLength != int64(len(b)) || len(resp.TransferEncoding) != 0 {
		t.Errorf("answer %q (%v), length %d, transfer encoding %v", b, err, resp.ContentLength, resp.TransferEncoding)
	}
}

// TestHedgesAtTheCallsEndLeaveNothingInFlight: hedges that start as their call ends — the first
// attempt answering just as the hedge delay passes — are released whatever the order, so that
// no agent keeps an attempt in flight in the balancer (which would skew its choices) and no
// attempt races with the call's end (-race).
func TestHedgesAtTheCallsEndLeaveNothingInFlight(t *testing.T) {
	f := &fleet{}
	agent := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Millisecond) // the agent's service time: about the hedge delay
	})
	a, _ := f.add(t, agent, "")
	b, _ := f.add(t, agent, "")
	rt := &routing.Route{Targets: []routing.Target{{AgentID: a, Weight: 1}, {AgentID: b, Weight: 1}},
		Retryable: true, Hedge: &routing.Hedge{DelayMs: 1, MaxExtra: 1}}
	s, _ := newService(t, f, invoke.Config{}, func(d *invoke.Deps) { d.Routes = routes{rt} })
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				if w := call(t, s, `{}`); w.Code != 200 {
					t.Errorf("call: %d %s", w.Code, w.Body)
					return
				}
			}
		})
	}
	wg.Wait()
	// A hedge that lost may still be finishing: wait for it, up to a deadline.
	deadline := time.Now().Add(10 * time.Second)
	for s.Balancer().InFlight(a)+s.Balancer().InFlight(b) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("attempts left in flight: %d at %s, %d at %s", s.Balancer().InFlight(a), a, s.Balancer().InFlight(b), b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAdmitAgentShedsByClass: agents of a class AdmitAgent refuses are left out of the call;
// when every agent of the capability is refused, the refusal is the answer and none is called.
func TestAdmitAgentShedsByClass(t *testing.T) {
	f := &fleet{}
	var bestHits, critHits atomic.Int32
	best, _ := f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { bestHits.Add(1) }), "")
	var shedding atomic.Bool
	admit := func(_ context.Context, class string) error {
		if shedding.Load() && class == string(registry.CriticalityBestEffort) {
			return &errs.Error{Code: errs.Unavailable, Message: "shedding best-effort agents", RetryAfter: 5 * time.Second}
		}
		return nil
	}
	f.mu.Lock()
	f.agents[0].Criticality = registry.CriticalityBestEffort
	f.mu.Unlock()
	s, _ := newService(t, f, invoke.Config{}, func(d *invoke.Deps) { d.AdmitAgent = admit })

	if w := call(t, s, `{}`); w.Code != http.StatusOK || bestHits.Load() != 1 {
		t.Fatalf("not shedding: %d %s, hits %d", w.Code, w.Body, bestHits.Load())
	}
	shedding.Store(true)
	if w := call(t, s, `{}`); w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "shedding") {
		t.Fatalf("only best-effort agents while shedding: %d %s", w.Code, w.Body)
	}
	if bestHits.Load() != 1 {
		t.Fatalf("a shed best-effort agent was called: %d hits", bestHits.Load())
	}

	// A critical agent of the same capability serves while the best-effort one is shed.
	crit, _ := f.add(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { critHits.Add(1) }), "")
	f.mu.Lock()
	f.agents[1].Criticality = registry.CriticalityCritical
	f.mu.Unlock()
	for range 10 {
		if w := call(t, s, `{}`); w.Code != http.StatusOK {
			t.Fatalf("critical agent while shedding: %d %s", w.Code, w.Body)
		}
	}
	if critHits.Load() != 10 || bestHits.Load() != 1 {
		t.Fatalf("hits: critical %d (want 10), best-effort %d (want 1); agents %s %s", critHits.Load(), bestHits.Load(), crit, best)
	}
}
