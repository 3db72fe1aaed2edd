package idempotency_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/idempotency"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	ttl     = 24 * time.Hour
	lockTTL = 35 * time.Second
)

var (
	alice = principal.Principal{Subject: "usr_alice", Tenant: "ten_a"}
	bob   = principal.Principal{Subject: "usr_bob", Tenant: "ten_a"}
	carol = principal.Principal{Subject: "usr_alice", Tenant: "ten_b"} // alice's subject, another tenant
	root  = principal.Principal{Subject: "usr_root"}                   // above tenants
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// app is a real handler with side effects: each run of an operation increments its counter, and
// the response says which run it was, so a replay is told apart from a second run.
type app struct {
	runs    sync.Map // path → *atomic.Int64
	release chan struct{}
	entered chan struct{}
	ctxErr  atomic.Value // the handler context's error seen by /slow after release
}

func newApp() *app {
	return &app{release: make(chan struct{}), entered: make(chan struct{}, 16)}
}

func (a *app) count(path string) int64 {
	v, _ := a.runs.LoadOrStore(path, new(atomic.Int64))
	return v.(*atomic.Int64).Load()
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v, _ := a.runs.LoadOrStore(r.URL.Path, new(atomic.Int64))
	n := v.(*atomic.Int64).Add(1)
	body, _ := io.ReadAll(r.Body)
	switch r.URL.Path {
	case "/slow":
		a.entered <- struct{}{}
		<-a.release
		a.ctxErr.Store(fmt.Sprint(r.Context().Err()))
	case "/flaky": // fails twice, then works
		if n <= 2 {
			http.Error(w, "temporarily broken", http.StatusServiceUnavailable)
			return
		}
	case "/invalid":
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"status":400,"run":%d}`, n)
		return
	case "/panic":
		if n == 1 {
			panic("handler bug")
		}
	case "/nothing":
		return // writes nothing: an implicit 200
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Location", "/things/"+fmt.Sprint(n))
	h.Set("ETag", fmt.Sprintf(`"v%d"`, n))
	h.Add("Vary", "Origin")
	h.Set("Set-Cookie", "session=secret")
	h.Del("X-Perimeter-Drop")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"run":%d,"echo":%q}`+"\n", n, body)
}

// env is the middleware over app, behind a pretend perimeter that sets per-request headers and
// the principal.
type env struct {
	t     *testing.T
	app   *app
	store idempotency.Store
	clock *clock
	h     http.Handler
	reqs  atomic.Int64
}

func newEnv(t *testing.T, wrap func(idempotency.Store) idempotency.Store) *env {
	t.Helper()
	st, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "nops.db")}, nil)
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.MigrateUp(t.Context()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	e := &env{t: t, app: newApp(), store: st, clock: &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	if wrap != nil {
		e.store = wrap(st)
	}
	mw, err := idempotency.Middleware(e.store, idempotency.Options{TTL: ttl, LockTTL: lockTTL, WriteError: writeProblem, Now: e.clock.Now})
	if err != nil {
		t.Fatalf("Middleware: %v", err)
	}
	inner := mw(e.app)
	e.h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", fmt.Sprintf("req-%d", e.reqs.Add(1)))
		w.Header().Set("X-Perimeter-Drop", "dropped by the handler")
		inner.ServeHTTP(w, r)
	})
	return e
}

// writeProblem stands in for httpapi's error writer.
func writeProblem(w http.ResponseWriter, _ *http.Request, err error) {
	status := map[errs.Code]int{
		errs.Invalid: 400, errs.Conflict: 409, errs.Unprocessable: 422, errs.TooLarge: 413,
		errs.Unavailable: 503, errs.Internal: 500,
	}
	e := errs.As(err)
	if e == nil {
		e = errs.Wrap(errs.Internal, err, "internal")
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(int(e.RetryAfter.Seconds())))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status[e.Code])
	_ = json.NewEncoder(w).Encode(map[string]any{"code": e.Code, "detail": e.Message, "errors": e.Fields})
}

type call struct {
	method, target, body string
	keys                 []string // Idempotency-Key header lines
	who                  *principal.Principal
	ctx                  context.Context
}

func (e *env) do(c call) *httptest.ResponseRecorder {
	e.t.Helper()
	if c.method == "" {
		c.method = http.MethodPost
	}
	ctx := c.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if c.who == nil {
		c.who = &alice
	}
	if c.who.Subject != "" {
		ctx = principal.NewContext(ctx, *c.who)
	}
	r := httptest.NewRequestWithContext(ctx, c.method, c.target, strings.NewReader(c.body))
	for _, k := range c.keys {
		r.Header.Add(idempotency.HeaderKey, k)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

func key(k string) []string { return []string{k} }

func mustStatus(t *testing.T, w *httptest.ResponseRecorder, want int) {
	t.Helper()
	if w.Code != want {
		t.Fatalf("status %d, want %d; body %s", w.Code, want, w.Body)
	}
}

func problemCode(t *testing.T, w *httptest.ResponseRecorder) (string, []errs.FieldError) {
	t.Helper()
	var p struct {
		Code   string            `json:"code"`
		Errors []errs.FieldError `json:"errors"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem body %s: %v", w.Body, err)
	}
	return p.Code, p.Errors
}

func TestPassThrough(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name string
		c    call
	}{
		{"no header", call{target: "/things", body: "a"}},
		{"GET", call{method: http.MethodGet, target: "/things", keys: key(`"k"`)}},
		{"PUT", call{method: http.MethodPut, target: "/things", body: "a", keys: key(`"k"`)}},
		{"DELETE", call{method: http.MethodDelete, target: "/things", keys: key(`"k"`)}},
		{"no principal", call{target: "/things", body: "a", keys: key(`"k"`), who: &principal.Principal{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.app.count("/things")
			for range 2 {
				w := e.do(tt.c)
				mustStatus(t, w, http.StatusCreated)
				if w.Header().Get(idempotency.HeaderReplayed) != "" {
					t.Error("a pass-through response is marked replayed")
				}
			}
			if got := e.app.count("/things") - before; got != 2 {
				t.Errorf("handler ran %d times for 2 requests, want 2", got)
			}
		})
	}
}

func TestInvalidHeader(t *testing.T) {
	e := newEnv(t, nil)
	for _, keys := range [][]string{{""}, {`"unterminated`}, {`""`}, {"has space"}, {`"a", "b"`}, {`"a"`, `"a"`}, {"?1"}, {strings.Repeat("k", 256)}} {
		w := e.do(call{target: "/things", body: "a", keys: keys})
		mustStatus(t, w, http.StatusBadRequest)
		code, fields := problemCode(t, w)
		if code != string(errs.Invalid) || len(fields) != 1 || fields[0].Name != "header.Idempotency-Key" {
			t.Errorf("keys %q: problem %s %+v, want invalid naming header.Idempotency-Key", keys, code, fields)
		}
	}
	if n := e.app.count("/things"); n != 0 {
		t.Errorf("handler ran %d times for refused requests", n)
	}
}

func TestReplay(t *testing.T) {
	e := newEnv(t, nil)
	first := e.do(call{target: "/things?x=1", body: `{"a":1}`, keys: key(`"key-1"`)})
	mustStatus(t, first, http.StatusCreated)
	if first.Header().Get("Set-Cookie") == "" || first.Header().Get(idempotency.HeaderReplayed) != "" {
		t.Fatalf("first response headers %v", first.Header())
	}
	if first.Header().Get("X-Perimeter-Drop") != "" {
		t.Error("a header the handler deleted was sent")
	}
	// The quoted key and its bare form are one key.
	for _, k := range []string{`"key-1"`, "key-1", ` "key-1";p=1 `} {
		again := e.do(call{target: "/things?x=1", body: `{"a":1}`, keys: key(k)})
		mustStatus(t, again, http.StatusCreated)
		if again.Body.String() != first.Body.String() {
			t.Errorf("replayed body %q, want byte-identical %q", again.Body, first.Body)
		}
		want := first.Header().Clone()
		want.Del("Set-Cookie")
		// The perimeter's headers are the new request's, even one the first run's handler deleted.
		want.Set("X-Request-Id", again.Header().Get("X-Request-Id"))
		want.Set("X-Perimeter-Drop", "dropped by the handler")
		want.Set(idempotency.HeaderReplayed, "true")
		if diff := cmp.Diff(want, again.Header()); diff != "" {
			t.Errorf("replayed headers (-want +got):\n%s", diff)
		}
		if again.Header().Get("X-Request-Id") == first.Header().Get("X-Request-Id") {
			t.Error("the replay carries the first request's X-Request-Id")
		}
	}
	if n := e.app.count("/things"); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}

	// An implicit 200 with no body is stored and replayed too.
	mustStatus(t, e.do(call{target: "/nothing", keys: key("k-nothing")}), http.StatusOK)
	w := e.do(call{target: "/nothing", keys: key("k-nothing")})
	mustStatus(t, w, http.StatusOK)
	if w.Body.Len() != 0 || w.Header().Get(idempotency.HeaderReplayed) != "true" || e.app.count("/nothing") != 1 {
		t.Errorf("replay of an empty 200: body %q headers %v runs %d", w.Body, w.Header(), e.app.count("/nothing"))
	}
}

func TestDifferentRequestSameKey(t *testing.T) {
	e := newEnv(t, nil)
	mustStatus(t, e.do(call{target: "/things?x=1", body: "body", keys: key("k")}), http.StatusCreated)
	for name, c := range map[string]call{
		"body":   {target: "/things?x=1", body: "other body"},
		"path":   {target: "/other?x=1", body: "body"},
		"query":  {target: "/things?x=2", body: "body"},
		"method": {method: http.MethodPatch, target: "/things?x=1", body: "body"},
	} {
		c.keys = key("k")
		w := e.do(c)
		mustStatus(t, w, http.StatusUnprocessableEntity)
		if code, _ := problemCode(t, w); code != string(errs.Unprocessable) {
			t.Errorf("%s: problem code %s, want unprocessable", name, code)
		}
	}
	if n := e.app.count("/things") + e.app.count("/other"); n != 1 {
		t.Errorf("handlers ran %d times, want 1", n)
	}
}

func TestInFlight(t *testing.T) {
	e := newEnv(t, nil)
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- e.do(call{target: "/slow", body: "b", keys: key("k")}) }()
	<-e.app.entered
	for _, body := range []string{"b", "other"} {
		w := e.do(call{target: "/slow", body: body, keys: key("k")})
		if body == "other" {
			mustStatus(t, w, http.StatusUnprocessableEntity)
			continue
		}
		mustStatus(t, w, http.StatusConflict)
		if code, _ := problemCode(t, w); code != string(errs.Conflict) || w.Header().Get("Retry-After") != "1" {
			t.Errorf("in-flight answer: code %s Retry-After %q", code, w.Header().Get("Retry-After"))
		}
	}
	close(e.app.release)
	first := <-done
	mustStatus(t, first, http.StatusCreated)
	w := e.do(call{target: "/slow", body: "b", keys: key("k")})
	mustStatus(t, w, http.StatusCreated)
	if w.Body.String() != first.Body.String() || e.app.count("/slow") != 1 {
		t.Errorf("after completion: body %q (first %q), runs %d", w.Body, first.Body, e.app.count("/slow"))
	}
}

// TestClientGone cancels the client's context before the handler finishes: the handler goes on
// undisturbed, its response is stored, and the retry gets it.
func TestClientGone(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.do(call{target: "/slow", body: "b", keys: key("k"), ctx: ctx})
	}()
	<-e.app.entered
	cancel()
	close(e.app.release)
	<-done
	if got := e.app.ctxErr.Load(); got != "<nil>" {
		t.Errorf("the handler's context error after the client left = %v, want none", got)
	}
	w := e.do(call{target: "/slow", body: "b", keys: key("k")})
	mustStatus(t, w, http.StatusCreated)
	if w.Header().Get(idempotency.HeaderReplayed) != "true" || e.app.count("/slow") != 1 {
		t.Errorf("retry: headers %v, runs %d; want the stored response", w.Header(), e.app.count("/slow"))
	}
}

func TestServerErrorsNotStored(t *testing.T) {
	e := newEnv(t, nil)
	for i := range 2 {
		w := e.do(call{target: "/flaky", keys: key("k")})
		mustStatus(t, w, http.StatusServiceUnavailable)
		if w.Header().Get(idempotency.HeaderReplayed) != "" {
			t.Errorf("attempt %d: a 5xx is marked replayed", i+1)
		}
	}
	first := e.do(call{target: "/flaky", keys: key("k")})
	mustStatus(t, first, http.StatusCreated)
	again := e.do(call{target: "/flaky", keys: key("k")})
	mustStatus(t, again, http.StatusCreated)
	if again.Body.String() != first.Body.String() || e.app.count("/flaky") != 3 {
		t.Errorf("after success: body %q (first %q), runs %d (want 3)", again.Body, first.Body, e.app.count("/flaky"))
	}
}

func TestClientErrorsStored(t *testing.T) {
	e := newEnv(t, nil)
	first := e.do(call{target: "/invalid", body: "x", keys: key("k")})
	mustStatus(t, first, http.StatusBadRequest)
	again := e.do(call{target: "/invalid", body: "x", keys: key("k")})
	mustStatus(t, again, http.StatusBadRequest)
	if again.Body.String() != first.Body.String() || again.Header().Get(idempotency.HeaderReplayed) != "true" || e.app.count("/invalid") != 1 {
		t.Errorf("4xx replay: body %q (first %q), runs %d", again.Body, first.Body, e.app.count("/invalid"))
	}
}

func TestPanicReleases(t *testing.T) {
	e := newEnv(t, nil)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the handler's panic was swallowed")
			}
		}()
		e.do(call{target: "/panic", keys: key("k")})
	}()
	mustStatus(t, e.do(call{target: "/panic", keys: key("k")}), http.StatusCreated)
	if n := e.app.count("/panic"); n != 2 {
		t.Errorf("handler ran %d times, want 2 (the panicking run released the key)", n)
	}
}

func TestScopes(t *testing.T) {
	e := newEnv(t, nil)
	// The same key and request from four callers: each runs once, and gets its own response.
	bodies := map[string]string{}
	for _, who := range []principal.Principal{alice, bob, carol, root} {
		for range 2 {
			w := e.do(call{target: "/things", body: "same", keys: key("shared"), who: &who})
			mustStatus(t, w, http.StatusCreated)
			if prev, ok := bodies[who.Tenant+"/"+who.Subject]; ok && prev != w.Body.String() {
				t.Errorf("%+v: replay %q differs from its first response %q", who, w.Body, prev)
			}
			bodies[who.Tenant+"/"+who.Subject] = w.Body.String()
		}
	}
	if n := e.app.count("/things"); n != 4 {
		t.Errorf("handler ran %d times for 4 callers, want 4", n)
	}
}

func TestLockExpiryTakeOver(t *testing.T) {
	e := newEnv(t, nil)
	// A crashed process left an in-flight record of alice's request.
	now := e.clock.Now()
	scope, _ := idempotency.ScopeOf(alice)
	crashed := idempotency.Record{
		Scope: scope, Key: "k", Fingerprint: idempotency.FingerprintRequest(http.MethodPost, "/things", "", []byte("b")),
		Token: idempotency.NewToken(), State: idempotency.InFlight,
		CreatedAt: now, LockedUntil: now.Add(lockTTL), ExpiresAt: now.Add(ttl),
	}
	if _, ok, err := e.store.ReserveIdempotencyKey(t.Context(), crashed, now); err != nil || !ok {
		t.Fatalf("reserve the crashed attempt: %v %v", ok, err)
	}
	mustStatus(t, e.do(call{target: "/things", body: "b", keys: key("k")}), http.StatusConflict)
	e.clock.Add(lockTTL)
	mustStatus(t, e.do(call{target: "/things", body: "other", keys: key("k")}), http.StatusUnprocessableEntity)
	first := e.do(call{target: "/things", body: "b", keys: key("k")})
	mustStatus(t, first, http.StatusCreated)
	again := e.do(call{target: "/things", body: "b", keys: key("k")})
	if again.Body.String() != first.Body.String() || e.app.count("/things") != 1 {
		t.Errorf("after take-over: body %q (first %q), runs %d", again.Body, first.Body, e.app.count("/things"))
	}
}

func TestExpiry(t *testing.T) {
	e := newEnv(t, nil)
	first := e.do(call{target: "/things", body: "b", keys: key("k")})
	mustStatus(t, first, http.StatusCreated)
	e.clock.Add(ttl - time.Second)
	if w := e.do(call{target: "/things", body: "other", keys: key("k")}); w.Code != http.StatusUnprocessableEntity {
		t.Fatalf("before expiry: status %d, want 422", w.Code)
	}
	e.clock.Add(time.Second)
	// Expired: the key is free for any request.
	w := e.do(call{target: "/things", body: "other", keys: key("k")})
	mustStatus(t, w, http.StatusCreated)
	if w.Body.String() == first.Body.String() || e.app.count("/things") != 2 {
		t.Errorf("after expiry: body %q, runs %d; want a second run", w.Body, e.app.count("/things"))
	}
	if n, err := e.store.PurgeIdempotencyKeys(t.Context(), e.clock.Now().Add(ttl)); err != nil || n != 1 {
		t.Errorf("PurgeIdempotencyKeys = %d, %v; want 1", n, err)
	}
}

func TestConcurrent(t *testing.T) {
	e := newEnv(t, nil)
	const n = 12
	results := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			results[i] = e.do(call{target: "/things", body: "b", keys: key("k")})
		})
	}
	close(start)
	wg.Wait()
	if got := e.app.count("/things"); got != 1 {
		t.Fatalf("handler ran %d times for %d concurrent requests with one key, want 1", got, n)
	}
	var body string
	for _, w := range results {
		switch w.Code {
		case http.StatusCreated:
			if body != "" && w.Body.String() != body {
				t.Errorf("two different 201 bodies: %q and %q", body, w.Body)
			}
			body = w.Body.String()
		case http.StatusConflict:
		default:
			t.Errorf("status %d, want 201 or 409", w.Code)
		}
	}
}

// faultyStore wraps the real store, failing the methods named in fail.
type faultyStore struct {
	idempotency.Store
	failReserve, failComplete bool
}

var errInjected = errors.New("injected store failure")

func (f *faultyStore) ReserveIdempotencyKey(ctx context.Context, r idempotency.Record, now time.Time) (idempotency.Record, bool, error) {
	if f.failReserve {
		return idempotency.Record{}, false, errInjected
	}
	return f.Store.ReserveIdempotencyKey(ctx, r, now)
}

func (f *faultyStore) CompleteIdempotencyKey(ctx context.Context, s idempotency.Scope, key, token string, resp idempotency.Response, expiresAt time.Time) error {
	if f.failComplete {
		return errInjected
	}
	return f.Store.CompleteIdempotencyKey(ctx, s, key, token, resp, expiresAt)
}

func TestStoreFailures(t *testing.T) {
	faulty := &faultyStore{}
	e := newEnv(t, func(s idempotency.Store) idempotency.Store { faulty.Store = s; return faulty })

	faulty.failReserve = true
	w := e.do(call{target: "/things", body: "b", keys: key("k")})
	mustStatus(t, w, http.StatusServiceUnavailable)
	if w.Header().Get("Retry-After") == "" || e.app.count("/things") != 0 {
		t.Errorf("reserve failure: Retry-After %q, runs %d", w.Header().Get("Retry-After"), e.app.count("/things"))
	}

	// The response cannot be stored: this client still gets it, and the key stays locked rather
	// than free for a second run.
	faulty.failReserve, faulty.failComplete = false, true
	mustStatus(t, e.do(call{target: "/things", body: "b", keys: key("k")}), http.StatusCreated)
	faulty.failComplete = false
	mustStatus(t, e.do(call{target: "/things", body: "b", keys: key("k")}), http.StatusConflict)
	if n := e.app.count("/things"); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

func TestMiddlewareOptions(t *testing.T) {
	st := &faultyStore{}
	for name, opts := range map[string]idempotency.Options{
		"no TTL":        {LockTTL: time.Second, WriteError: writeProblem},
		"no lock TTL":   {TTL: time.Second, WriteError: writeProblem},
		"no WriteError": {TTL: time.Second, LockTTL: time.Second},
		"negative TTL":  {TTL: -time.Second, LockTTL: time.Second, WriteError: writeProblem},
	} {
		if _, err := idempotency.Middleware(st, opts); err == nil {
			t.Errorf("%s: Middleware succeeded, want an error", name)
		}
	}
	if _, err := idempotency.Middleware(nil, idempotency.Options{TTL: 1, LockTTL: 1, WriteError: writeProblem}); err == nil {
		t.Error("Middleware without a store succeeded")
	}
}
