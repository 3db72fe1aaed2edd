package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// fleetAgent is an agent of the routing tests: a real HTTP server whose behaviour the test
// changes while it runs (answer status, service time, stall, death), counting the requests it
// received.
type fleetAgent struct {
	name string
	id   string
	srv  *httptest.Server

	hits     atomic.Int64
	status   atomic.Int32 // answer this status; 0 means 200
	minDelay atomic.Int64 // service time, uniform in [minDelay, maxDelay] (ns)
	maxDelay atomic.Int64
	stall    atomic.Int64 // when set, every request waits this long (ns) instead
	dead     atomic.Bool  // requests still inside the handler die without an answer
	cut      atomic.Int64 // requests that died so
	armed    atomic.Bool  // the next request kills the agent while it is being served

	killOnce sync.Once
	dying    chan struct{} // closed when kill has begun: dead is set
	killed   chan struct{} // closed when kill has finished
	killedAt time.Time     // when kill began; read after killed is closed

	mu    sync.Mutex
	byCap map[string]int // requests per capability (the last path segment)
}

// newFleetAgent starts an agent server (closed when the test ends) and registers it in the
// tenant of auth as name, offering capabilities.
func newFleetAgent(t *testing.T, k *kerneltest.Kernel, auth, name string, capabilities ...string) *fleetAgent {
	t.Helper()
	return newFleetAgentOfClass(t, k, auth, name, "", capabilities...)
}

// newFleetAgentOfClass is newFleetAgent registering the agent with a criticality ("" for the
// default, best_effort).
func newFleetAgentOfClass(t *testing.T, k *kerneltest.Kernel, auth, name, criticality string, capabilities ...string) *fleetAgent {
	t.Helper()
	a := &fleetAgent{name: name, byCap: map[string]int{}, dying: make(chan struct{}), killed: make(chan struct{})}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.kill)
	caps := make([]any, 0, len(capabilities))
	for _, c := range capabilities {
		caps = append(caps, map[string]any{"name": c})
	}
	spec := map[string]any{"name": name, "version": "1.0.0", "endpoint": a.srv.URL, "capabilities": caps}
	if criticality != "" {
		spec["criticality"] = criticality
	}
	resp, body := k.Do(t, "POST", "/v1/agents", spec, auth)
	mustStatus(t, resp, body, http.StatusCreated)
	a.id = decode[agentDoc](t, body).ID
	return a
}

func (a *fleetAgent) serve(w http.ResponseWriter, r *http.Request) {
	a.hits.Add(1)
	a.mu.Lock()
	a.byCap[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
	a.mu.Unlock()
	_, _ = io.Copy(io.Discard, r.Body)
	if a.armed.CompareAndSwap(true, false) {
		go a.kill() // not on this goroutine: kill waits for the handlers to return
		// Die with this request in flight: go on only once the agent is dead, so that this
		// request cannot be answered before the kill (on a loaded machine the kill's goroutine
		// may start after the service time has passed).
		<-a.dying
	}
	d := time.Duration(a.stall.Load())
	if d == 0 {
		lo, hi := a.minDelay.Load(), a.maxDelay.Load()
		d = time.Duration(lo)
		if hi > lo {
			d += time.Duration(rand.Int64N(hi - lo + 1))
		}
	}
	if d > 0 {
		// The kernel gives up on a stalled call long before the stall ends: leave with it, so
		// the test's cleanup does not wait for the stall.
		tm := time.NewTimer(d)
		select {
		case <-tm.C:
		case <-r.Context().Done():
			tm.Stop()
			if a.dead.Load() {
				a.cut.Add(1)
			}
			return
		}
	}
	if a.dead.Load() {
		a.cut.Add(1)
		panic(http.ErrAbortHandler) // the connection closes without an answer
	}
	st := int(a.status.Load())
	if st == 0 {
		st = http.StatusOK
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(st)
	_, _ = fmt.Fprintf(w, `{"agent":%q}`, a.name)
}

// setDelay sets the agent's service time to a uniform value in [lo, hi].
func (a *fleetAgent) setDelay(lo, hi time.Duration) {
	a.minDelay.Store(int64(lo))
	a.maxDelay.Store(int64(hi))
}

// kill makes the agent die as a crashed process does: requests in flight get no answer (their
// connections are closed under them), and new connections are refused because nothing listens
// any more. It is idempotent.
func (a *fleetAgent) kill() {
	a.killOnce.Do(func() {
		a.killedAt = time.Now()
		a.dead.Store(true)
		close(a.dying)
		_ = a.srv.Listener.Close()
		a.srv.CloseClientConnections()
		a.srv.Close()
		close(a.killed)
	})
}

// killWhileServing makes the agent die while it serves its next request, so that at least that
// request is in flight at the moment of death, and returns when it is dead.
func (a *fleetAgent) killWhileServing(t *testing.T) {
	t.Helper()
	a.armed.Store(true)
	select {
	case <-a.killed:
	case <-time.After(10 * time.Second):
		t.Fatalf("agent %s received no request to die in within 10 s", a.name)
	}
}

// capHits returns how many requests for capability the agent received.
func (a *fleetAgent) capHits(capability string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byCap[capability]
}

// invokeResult is the outcome of one call of POST /v1/invoke/{capability}, as a client saw it.
type invokeResult struct {
	start    time.Time
	dur      time.Duration
	status   int // 0 when the request failed in transport
	agent    string
	problem  string // the problem's code when the answer is application/problem+json
	detail   string
	sentKey  string // the Idempotency-Key sent, if any
	transErr error
}

// invokeClient calls the invoke API for load tests. Unlike kerneltest's client it does not
// validate each exchange against the spec (a few thousand validations would dominate the CPU of
// the machine the test runs on) and it is safe to use from many goroutines: it never calls
// t.Fatal.
type invokeClient struct {
	base   string
	header http.Header
	hc     *http.Client
}

func newInvokeClient(t *testing.T, k *kerneltest.Kernel, auth string) *invokeClient {
	t.Helper()
	name, value, ok := strings.Cut(auth, ":")
	if !ok {
		t.Fatalf("auth %q is not a header", auth)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	t.Cleanup(tr.CloseIdleConnections)
	h := http.Header{}
	h.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	h.Set("Content-Type", "application/json")
	return &invokeClient{base: k.URL, header: h, hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

// call invokes capability once; headers are "Name: value" strings.
func (c *invokeClient) call(capability string, headers ...string) invokeResult {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, c.base+"/v1/invoke/"+capability, strings.NewReader(`{"n":1}`))
	if err != nil {
		return invokeResult{transErr: err}
	}
	req.Header = c.header.Clone()
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	r := invokeResult{start: time.Now(), sentKey: req.Header.Get("Idempotency-Key")}
	resp, err := c.hc.Do(req)
	if err != nil {
		r.dur, r.transErr = time.Since(r.start), err
		return r
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	r.dur = time.Since(r.start)
	if err != nil {
		r.transErr = fmt.Errorf("read the answer: %w", err)
		return r
	}
	r.status, r.agent = resp.StatusCode, resp.Header.Get("Nops-Agent-Id")
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		var p problem
		if json.Unmarshal(body, &p) == nil {
			r.problem, r.detail = p.Code, p.Detail
		}
	}
	return r
}

// metric sums the samples of the Prometheus metric name on /metrics whose labels contain every
// label="value" pair of want. Unlike metricValue it may run beside the load: it does not fail
// the test itself.
func (c *invokeClient) metric(name string, want ...string) (float64, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, c.base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scrape: status %d, %v", resp.StatusCode, err)
	}
	var sum float64
	for line := range strings.SplitSeq(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %w", line, err)
		}
		sum += v
	}
	return sum, nil
}

// String describes the result for failure messages.
func (r invokeResult) String() string {
	if r.transErr != nil {
		return fmt.Sprintf("transport error after %s: %v", r.dur.Round(time.Millisecond), r.transErr)
	}
	return fmt.Sprintf("%d %s %q (agent %q) after %s", r.status, r.problem, r.detail, r.agent, r.dur.Round(time.Millisecond))
}

// runCalls makes n calls with conc concurrent workers; call(i) makes the i-th. The results are
// in the order of i.
func runCalls(n, conc int, call func(i int) invokeResult) []invokeResult {
	out := make([]invokeResult, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				out[i] = call(i)
			}
		})
	}
	wg.Wait()
	return out
}

// runLoadFor keeps conc workers calling until stop is closed, and returns every result.
func runLoadFor(stop <-chan struct{}, conc int, call func(worker, seq int) invokeResult) []invokeResult {
	var mu sync.Mutex
	var all []invokeResult
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			var mine []invokeResult
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					mu.Lock()
					all = append(all, mine...)
					mu.Unlock()
					return
				default:
				}
				mine = append(mine, call(w, seq))
			}
		})
	}
	wg.Wait()
	slices.SortFunc(all, func(a, b invokeResult) int { return a.start.Compare(b.start) })
	return all
}

// percentile returns the p-th percentile (0..100) of the results' durations, nearest rank.
func percentile(rs []invokeResult, p float64) time.Duration {
	if len(rs) == 0 {
		return 0
	}
	ds := make([]time.Duration, len(rs))
	for i, r := range rs {
		ds[i] = r.dur
	}
	slices.Sort(ds)
	i := int(float64(len(ds))*p/100+0.999999) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// countByAgent counts the results answered by each agent id ("" for none).
func countByAgent(rs []invokeResult) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		m[r.agent]++
	}
	return m
}

// putRoute creates or replaces the routing table of capability in the tenant of auth.
func putRoute(t *testing.T, k *kerneltest.Kernel, auth, capability string, spec map[string]any) {
	t.Helper()
	resp, body := k.Do(t, "PUT", "/v1/routes/"+capability, spec, auth)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT /v1/routes/%s: status %d, want 200 or 201; body %s", capability, resp.StatusCode, body)
	}
}

// target is a routing table entry naming an agent.
func target(agentID string, weight, priority int) map[string]any {
	return map[string]any{"agent_id": agentID, "weight": weight, "priority": priority}
}

// pollUntil calls cond every 20 ms until it holds, and fails the test after timeout. It returns
// how long that took.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}
