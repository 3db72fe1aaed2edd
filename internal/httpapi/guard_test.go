package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/middleware"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/store/sqlite"
)

// gatedNonces holds every nonce claim until the test releases it, then answers as MemoryNonces
// would, or with fail.
type gatedNonces struct {
	mem     reqsig.MemoryNonces
	started chan struct{} // one value per claim that started
	release chan struct{} // one value lets one claim finish

	mu   sync.Mutex
	fail error
}

func newGatedNonces() *gatedNonces {
	return &gatedNonces{started: make(chan struct{}, 8), release: make(chan struct{}, 8)}
}

func (g *gatedNonces) ClaimNonce(ctx context.Context, keyID, nonce string, expiresAt, now time.Time) (bool, error) {
	g.started <- struct{}{}
	<-g.release
	g.mu.Lock()
	fail := g.fail
	g.mu.Unlock()
	if fail != nil {
		return false, fail
	}
	return g.mem.ClaimNonce(ctx, keyID, nonce, expiresAt, now)
}

// claimWorld is the managed world with request signatures verified against gated nonces.
type claimWorld struct {
	*eventsWorld
	nonces *gatedNonces
	key    reqsig.SignerKey
	admin  string // the tenant's ADMIN API key
}

func newClaimWorld(t *testing.T) *claimWorld {
	t.Helper()
	nonces := newGatedNonces()
	w := newEventsWorld(t, func(d *Deps) {
		st, ok := d.AuditLog.(*sqlite.Store)
		if !ok {
			t.Fatalf("the flow's audit log is a %T, not the SQLite store", d.AuditLog)
		}
		box, err := sealbox.New(sealbox.Key{Version: "k1", Secret: bytes.Repeat([]byte{7}, sealbox.KeyLen)})
		if err != nil {
			t.Fatal(err)
		}
		keys, err := reqsig.NewKeys(st, box, reqsig.KeysOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d.Control.RequestKeys = keys
		if d.Guards.Signatures, err = reqsig.NewVerifier(keys, nonces, reqsig.Config{}); err != nil {
			t.Fatal(err)
		}
	})
	cw := &claimWorld{eventsWorld: w, nonces: nonces, admin: w.keys["ADMIN"]}
	_, k := w.must(201, "POST", "/v1/request-keys", cw.admin, map[string]any{"alg": "hmac-sha256", "name": "claims"})
	secret, err := reqsig.DecodeSecret(k["secret"].(string))
	if err != nil {
		t.Fatal(err)
	}
	cw.key = reqsig.SignerKey{ID: k["id"].(string), Alg: reqsig.AlgHMACSHA256, Secret: secret}
	return cw
}

// signed returns a request signed with the world's key and nonce (fresh when "").
func (w *claimWorld) signed(method, path string, body []byte, nonce string) *http.Request {
	w.t.Helper()
	var rd *bytes.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	var r *http.Request
	if rd != nil {
		r = httptest.NewRequest(method, path, rd)
		r.Header.Set("Content-Type", "application/json")
	} else {
		r = httptest.NewRequest(method, path, nil)
	}
	r.Header.Set("X-API-Key", strings.TrimPrefix(w.admin, "key:"))
	if err := reqsig.Sign(r, body, w.key, time.Now(), nonce); err != nil {
		w.t.Fatal(err)
	}
	return r
}

// watchedWriter is a ResponseRecorder that records whether anything reached it, and when.
type watchedWriter struct {
	*httptest.ResponseRecorder
	mu      sync.Mutex
	written bool
}

func (ww *watchedWriter) mark() {
	ww.mu.Lock()
	ww.written = true
	ww.mu.Unlock()
}

func (ww *watchedWriter) WriteHeader(code int) { ww.mark(); ww.ResponseRecorder.WriteHeader(code) }
func (ww *watchedWriter) Write(b []byte) (int, error) {
	ww.mark()
	return ww.ResponseRecorder.Write(b)
}

func (ww *watchedWriter) wasWritten() bool {
	ww.mu.Lock()
	defer ww.mu.Unlock()
	return ww.written
}

// serveHeld serves r while the world's next nonce claim is held, and checks that nothing is
// written, and (check) nothing else happens, for as long as it polls (the claim would have been
// answered long before without the hold); then it lets the claim finish and returns the response.
func (w *claimWorld) serveHeld(r *http.Request, check func() error) *httptest.ResponseRecorder {
	w.t.Helper()
	ww := &watchedWriter{ResponseRecorder: httptest.NewRecorder()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.h.ServeHTTP(ww, r)
	}()
	select {
	case <-w.nonces.started:
	case <-done:
		w.t.Fatalf("%s %s answered %d without claiming its nonce", r.Method, r.URL.Path, ww.Code)
	}
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); {
		if ww.wasWritten() {
			w.nonces.release <- struct{}{}
			<-done
			w.t.Fatalf("%s %s: the response was written before its nonce claim answered", r.Method, r.URL.Path)
		}
		if check != nil {
			if err := check(); err != nil {
				w.nonces.release <- struct{}{}
				<-done
				w.t.Fatalf("%s %s while its nonce claim was pending: %v", r.Method, r.URL.Path, err)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.nonces.release <- struct{}{}
	<-done
	return ww.ResponseRecorder
}

func problemDetail(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem body %q: %v", rec.Body.String(), err)
	}
	d, _ := p["detail"].(string)
	return d
}

// A signed GET's handler runs while its nonce claim commits, but its response is held until the
// claim answers: written when the claim succeeds, replaced by the refusal when the nonce was
// used before or the nonce store failed (the handler's header fields dropped, the ones set
// before it kept), and a replay is audited once, as a replay.
func TestSignedReadHeldUntilNonceClaim(t *testing.T) {
	w := newClaimWorld(t)
	_, agent := w.must(201, "POST", "/v1/agents", w.admin, map[string]any{"name": "held", "version": "1.0.0", "endpoint": "https://held.example"})
	path := "/v1/agents/" + agent["id"].(string)

	// Accepted: the response, ETag included, only once the claim has committed.
	nonce := reqsig.NewNonce()
	rec := w.serveHeld(w.signed("GET", path, nil, nonce), nil)
	if rec.Code != http.StatusOK || rec.Header().Get("ETag") == "" {
		t.Fatalf("accepted signed read: %d, ETag %q: %s", rec.Code, rec.Header().Get("ETag"), rec.Body.String())
	}

	// The same nonce again: the handler's response is discarded for the refusal.
	before := len(w.auditOf(w.admin, "auth.authenticate"))
	rec = w.serveHeld(w.signed("GET", path, nil, nonce), nil)
	if rec.Code != http.StatusUnauthorized || problemDetail(t, rec) != "nonce already used" {
		t.Fatalf("replayed signed read: %d %s", rec.Code, rec.Body.String())
	}
	if rec.Header().Get("ETag") != "" || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/problem+json") {
		t.Fatalf("replayed signed read kept the handler's header fields: %v", rec.Header())
	}
	if rec.Header().Get(middleware.RequestIDHeader) == "" {
		t.Fatalf("replayed signed read lost the header fields set before the handler: %v", rec.Header())
	}
	reasons := w.auditOf(w.admin, "auth.authenticate")
	if len(reasons) != before+1 || !strings.Contains(strings.Join(reasons, "|"), "request signature refused: replay") {
		t.Fatalf("audit after a replay: %d new records %v, want one replay record", len(reasons)-before, reasons)
	}

	// A failing nonce store: 503, never the held response.
	w.nonces.mu.Lock()
	w.nonces.fail = errors.New("nonce store down")
	w.nonces.mu.Unlock()
	rec = w.serveHeld(w.signed("GET", path, nil, ""), nil)
	w.nonces.mu.Lock()
	w.nonces.fail = nil
	w.nonces.mu.Unlock()
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("ETag") != "" {
		t.Fatalf("signed read with the nonce store down: %d, ETag %q: %s", rec.Code, rec.Header().Get("ETag"), rec.Body.String())
	}
}

// A signed change runs its handler only once its nonce claim has committed: a replayed POST
// never creates anything, not even for a moment.
func TestSignedChangeWaitsForNonceClaim(t *testing.T) {
	w := newClaimWorld(t)
	body := []byte(`{"name":"once","version":"1.0.0","endpoint":"https://once.example"}`)
	agents := func() ([]registry.Agent, error) {
		return w.st.ListAgents(context.Background(), w.a, registry.ListQuery{Limit: 10})
	}
	none := func() error {
		if as, err := agents(); err != nil || len(as) != 0 {
			return errors.New("the handler ran: an agent exists")
		}
		return nil
	}
	nonce := reqsig.NewNonce()
	rec := w.serveHeld(w.signed("POST", "/v1/agents", body, nonce), none)
	if rec.Code != http.StatusCreated {
		t.Fatalf("signed POST: %d %s", rec.Code, rec.Body.String())
	}
	// The replay: refused, and nothing more created.
	body2 := []byte(`{"name":"twice","version":"1.0.0","endpoint":"https://once.example"}`)
	one := func() error {
		if as, err := agents(); err != nil || len(as) != 1 {
			return errors.New("the replay's handler ran")
		}
		return nil
	}
	rec = w.serveHeld(w.signed("POST", "/v1/agents", body2, nonce), one)
	if rec.Code != http.StatusUnauthorized || problemDetail(t, rec) != "nonce already used" {
		t.Fatalf("replayed signed POST: %d %s", rec.Code, rec.Body.String())
	}
	if err := one(); err != nil {
		t.Fatal(err)
	}
}

// A refusal after the signature's checks (here the contract's validation of a malformed body)
// waits for the nonce claim, and a replay answers as a replay.
func TestLaterRefusalSettlesNonceClaim(t *testing.T) {
	w := newClaimWorld(t)
	nonce := reqsig.NewNonce()
	bad := []byte(`{"name":"x"}`) // no version, no endpoint: 400 from the contract
	rec := w.serveHeld(w.signed("POST", "/v1/agents", bad, nonce), nil)
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("invalid signed POST: %d %s", rec.Code, rec.Body.String())
	}
	rec = w.serveHeld(w.signed("POST", "/v1/agents", bad, nonce), nil)
	if rec.Code != http.StatusUnauthorized || problemDetail(t, rec) != "nonce already used" {
		t.Fatalf("replayed invalid signed POST: %d %s, want the replay's refusal", rec.Code, rec.Body.String())
	}
}

// The agent the policy check read is handed on only for that tenant and agent.
func TestPolicyAgentFrom(t *testing.T) {
	a := registry.Agent{ID: "agt_1", TenantID: "ten_a", Name: "read once"}
	ctx := context.WithValue(context.Background(), policyAgentKey{}, &policyAgent{tenant: "ten_a", agent: a})
	if got, ok := policyAgentFrom(ctx, "ten_a", "agt_1"); !ok || got.Name != a.Name {
		t.Fatalf("same tenant and agent: %+v %v", got, ok)
	}
	for _, tc := range [][2]string{{"ten_b", "agt_1"}, {"ten_a", "agt_2"}} {
		if _, ok := policyAgentFrom(ctx, tc[0], tc[1]); ok {
			t.Fatalf("%v: handed on the agent read for ten_a/agt_1", tc)
		}
	}
	if _, ok := policyAgentFrom(context.Background(), "ten_a", "agt_1"); ok {
		t.Fatal("no policy read: an agent handed on")
	}
}
