package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite" // the "sqlite" driver, to count outbox rows of a kernel's database

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/idempotency"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/testutil/faultproxy"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// forEachIdempotencyStore runs test with the idempotency records in SQLite (the embedded default),
// in PostgreSQL (the database on NOPS_TEST_POSTGRES_URL) and in Redis (NOPS_TEST_REDIS_URL, under
// a namespace of the test's own whose keys are deleted at the end).
func forEachIdempotencyStore(t *testing.T, test func(t *testing.T, store func(*config.Config))) {
	forEachStore(t, test)
	t.Run("redis", func(t *testing.T) {
		url, ns := services.RedisNamespace(t)
		test(t, func(c *config.Config) {
			c.Redis.URL, c.Bus.Namespace, c.Idempotency.Store = url, ns, "redis"
		})
	})
}

// exchange sends one request without failing the test, so goroutines may call it.
func exchange(k *kerneltest.Kernel, client *http.Client, method, path string, body any, headers ...string) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		js, err := json.Marshal(body)
		if err != nil {
			return nil, nil, err
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, k.URL+path, rd)
	if err != nil {
		return nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func idemKey(k string) string { return idempotency.HeaderKey + `: "` + k + `"` }

func replayed(resp *http.Response) bool { return resp.Header.Get(idempotency.HeaderReplayed) == "true" }

// countOutbox counts the outbox rows of one event type and subject in the kernel's database,
// published or not.
func countOutbox(t *testing.T, cfg config.Config, typ events.Type, subject string) int {
	t.Helper()
	ctx := context.Background()
	var n int
	if cfg.Database.URL != "" {
		conn, err := pgx.Connect(ctx, cfg.Database.URL)
		if err != nil {
			t.Fatalf("connect to the kernel's database: %v", err)
		}
		defer conn.Close(ctx)
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE type = $1 AND subject = $2`, string(typ), subject).Scan(&n); err != nil {
			t.Fatalf("count outbox rows: %v", err)
		}
		return n
	}
	db, err := sql.Open("sqlite", filepath.Join(cfg.DataDir, kernel.SQLiteFile)+"?_pragma=query_only(1)&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatalf("open the kernel's database: %v", err)
	}
	defer db.Close()
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM outbox WHERE type = ? AND subject = ?`, string(typ), subject).Scan(&n); err != nil {
		t.Fatalf("count outbox rows: %v", err)
	}
	return n
}

// countAudit counts the tenant's audit records of action on resource.
func countAudit(t *testing.T, k *kerneltest.Kernel, auth, action, resource string) int {
	t.Helper()
	resp, body := k.Do(t, "GET", "/v1/audit?limit=500&action="+action, nil, auth)
	mustStatus(t, resp, body, http.StatusOK)
	var list struct {
		Items []struct {
			Resource string `json:"resource"`
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("decode audit list: %v", err)
	}
	n := 0
	for _, r := range list.Items {
		if r.Resource == resource {
			n++
		}
	}
	return n
}

// listNamed returns the IDs of the items of a list endpoint whose name is name.
func listNamed(t *testing.T, k *kerneltest.Kernel, auth, path, name string) []string {
	t.Helper()
	resp, body := k.Do(t, "GET", path+"?limit=500", nil, auth)
	mustStatus(t, resp, body, http.StatusOK)
	var list struct {
		Items []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("decode list: %v", err)
	}
	var ids []string
	for _, it := range list.Items {
		if it.Name == name {
			ids = append(ids, it.ID)
		}
	}
	return ids
}

// TestIdempotencyParallel sends one API key creation several times at once with one
// Idempotency-Key: one key is created, with one audit record and one outbox event; every answer
// is that key (the same bytes) or a 409 for a request that came while it was being made; a
// later retry replays it byte for byte.
func TestIdempotencyParallel(t *testing.T) {
	forEachIdempotencyStore(t, func(t *testing.T, store func(*config.Config)) {
		f := newFixture(t, store)
		k, admin := f.k, f.keys["ADMIN"]
		req := map[string]any{"name": "parallel", "role": "VIEWER"}
		const n = 8
		type result struct {
			resp *http.Response
			body []byte
			err  error
		}
		results := make([]result, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				resp, body, err := exchange(k, k.Client, "POST", "/v1/api-keys", req, admin, idemKey("parallel-1"))
				results[i] = result{resp, body, err}
			})
		}
		close(start)
		wg.Wait()

		var created []byte
		fresh := 0
		for _, r := range results {
			if r.err != nil {
				t.Fatalf("POST /v1/api-keys: %v", r.err)
			}
			switch r.resp.StatusCode {
			case http.StatusCreated:
				if created != nil && !bytes.Equal(created, r.body) {
					t.Errorf("two different 201 bodies:\n%s\n%s", created, r.body)
				}
				created = r.body
				if !replayed(r.resp) {
					fresh++
				}
			case http.StatusConflict:
				if p := decodeProblem(t, r.resp, r.body); p.Code != "conflict" || r.resp.Header.Get("Retry-After") != "1" {
					t.Errorf("in-flight answer %+v, Retry-After %q", p, r.resp.Header.Get("Retry-After"))
				}
			default:
				t.Errorf("status %d, want 201 or 409; body %s", r.resp.StatusCode, r.body)
			}
		}
		if created == nil || fresh != 1 {
			t.Fatalf("%d fresh 201 answers (and created=%v), want exactly 1", fresh, created != nil)
		}
		id := decode[struct {
			ID string `json:"id"`
		}](t, created).ID

		check := func(when string) {
			t.Helper()
			if ids := listNamed(t, k, admin, "/v1/api-keys", "parallel"); len(ids) != 1 || ids[0] != id {
				t.Errorf("%s: API keys named parallel = %v, want [%s]", when, ids, id)
			}
			if got := countAudit(t, k, admin, "apikey.create", "api-keys/"+id); got != 1 {
				t.Errorf("%s: %d audit records of the creation, want 1", when, got)
			}
			if got := countOutbox(t, k.Config, events.TypeAPIKeyCreated, events.APIKeySubject(id)); got != 1 {
				t.Errorf("%s: %d outbox events of the creation, want 1", when, got)
			}
		}
		check("after the parallel requests")

		// A retry, later: the same bytes again, marked replayed, and nothing new done.
		resp, body := k.Do(t, "POST", "/v1/api-keys", req, admin, idemKey("parallel-1"))
		mustStatus(t, resp, body, http.StatusCreated)
		if !bytes.Equal(body, created) || !replayed(resp) {
			t.Errorf("retry: replayed=%v body %s, want the stored %s", replayed(resp), body, created)
		}
		check("after the retry")
	})
}

// TestIdempotencyReplay checks the replay of a registration byte for byte with its headers, the
// 422 for another request under the same key, the replay of a stored 4xx, and the 400 for a
// malformed key.
func TestIdempotencyReplay(t *testing.T) {
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]
	first, firstBody := k.Do(t, "POST", "/v1/agents", agentSpec("replayed"), admin, idemKey("reg-1"))
	mustStatus(t, first, firstBody, http.StatusCreated)
	if replayed(first) {
		t.Error("the first response is marked replayed")
	}
	for _, header := range []string{idemKey("reg-1"), idempotency.HeaderKey + ": reg-1"} { // quoted and bare
		resp, body := k.Do(t, "POST", "/v1/agents", agentSpec("replayed"), admin, header)
		mustStatus(t, resp, body, http.StatusCreated)
		if !bytes.Equal(body, firstBody) || !replayed(resp) {
			t.Errorf("replay: marked %v, body %s, want byte-identical %s", replayed(resp), body, firstBody)
		}
		for _, h := range []string{"Content-Type", "ETag"} {
			if resp.Header.Get(h) != first.Header.Get(h) {
				t.Errorf("replayed %s %q, want %q", h, resp.Header.Get(h), first.Header.Get(h))
			}
		}
		if resp.Header.Get("X-Request-ID") == first.Header.Get("X-Request-ID") {
			t.Error("the replay carries the first request's X-Request-ID")
		}
	}
	if ids := listNamed(t, k, admin, "/v1/agents", "replayed"); len(ids) != 1 {
		t.Errorf("agents named replayed: %v, want one", ids)
	}

	// The same key with another request: 422, whatever differs.
	for name, c := range map[string]struct {
		path string
		body any
	}{
		"body":  {"/v1/agents", agentSpec("another")},
		"query": {"/v1/agents?tenant=" + f.tenant, agentSpec("replayed")},
		"path":  {"/v1/api-keys", map[string]any{"name": "k", "role": "VIEWER"}},
	} {
		resp, body := k.Do(t, "POST", c.path, c.body, admin, idemKey("reg-1"))
		mustStatus(t, resp, body, http.StatusUnprocessableEntity)
		if p := decodeProblem(t, resp, body); p.Code != "unprocessable" {
			t.Errorf("%s differs: problem %+v, want code unprocessable", name, p)
		}
	}
	if ids := listNamed(t, k, admin, "/v1/agents", "another"); len(ids) != 0 {
		t.Errorf("a refused request registered agents %v", ids)
	}

	// A 4xx the handler answered is the response: replayed too.
	bad := agentSpec("bad")
	bad["endpoint"] = "https://user:pw@a.example"
	resp, badBody := k.Do(t, "POST", "/v1/agents", bad, admin, idemKey("bad-1"))
	mustStatus(t, resp, badBody, http.StatusBadRequest)
	resp, body := k.Do(t, "POST", "/v1/agents", bad, admin, idemKey("bad-1"))
	mustStatus(t, resp, body, http.StatusBadRequest)
	if !bytes.Equal(body, badBody) || !replayed(resp) {
		t.Errorf("4xx replay: marked %v, body %s, want %s", replayed(resp), body, badBody)
	}

	// A malformed key.
	resp, body = k.Do(t, "POST", "/v1/agents", agentSpec("malformed"), admin, idempotency.HeaderKey+": has space")
	mustStatus(t, resp, body, http.StatusBadRequest)
	if p := decodeProblem(t, resp, body); len(p.Errors) != 1 || p.Errors[0].Name != "header.Idempotency-Key" {
		t.Errorf("malformed key: problem %+v, want one naming header.Idempotency-Key", p)
	}
	// Unauthenticated operations ignore the header.
	for range 2 {
		resp, body = k.Do(t, "POST", "/v1/auth/token", map[string]string{"username": "admin", "password": kerneltest.AdminPassword}, idemKey("login"))
		mustStatus(t, resp, body, http.StatusOK)
		if replayed(resp) {
			t.Error("a login was replayed")
		}
	}
}

// TestIdempotencyScopes sends one key value and request from tenant A's admin, tenant B's admin,
// another principal of A and a SUPER_ADMIN: each is processed once for itself, and nobody gets a
// response made for someone else.
func TestIdempotencyScopes(t *testing.T) {
	f := newFixture(t)
	k := f.k
	tenantB := newTenant(t, k, f.admin, "beta")
	_, adminB := newKey(t, k, f.admin, tenantB, "ADMIN", nil)
	// A and B's admins send the very same request; A's other callers register other agents.
	callers := []struct {
		name, auth, tenant, path, agent string
	}{
		{"tenant A admin", f.keys["ADMIN"], f.tenant, "/v1/agents", "shared"},
		{"tenant B admin", adminB, tenantB, "/v1/agents", "shared"},
		{"tenant A operator", f.keys["OPERATOR"], f.tenant, "/v1/agents", "shared-operator"},
		{"super admin", f.admin, f.tenant, "/v1/agents?tenant=" + f.tenant, "shared-root"},
	}
	for _, c := range callers {
		resp, body := k.Do(t, "POST", c.path, agentSpec(c.agent), c.auth, idemKey("shared-key"))
		mustStatus(t, resp, body, http.StatusCreated)
		if replayed(resp) {
			t.Errorf("%s got a replay of another caller's response: %s", c.name, body)
		}
		if a := decode[agentDoc](t, body); a.Tenant != c.tenant || a.Name != c.agent {
			t.Errorf("%s: registered %+v, want %s in %s", c.name, a, c.agent, c.tenant)
		}
		again, againBody := k.Do(t, "POST", c.path, agentSpec(c.agent), c.auth, idemKey("shared-key"))
		mustStatus(t, again, againBody, http.StatusCreated)
		if !replayed(again) || !bytes.Equal(body, againBody) {
			t.Errorf("%s: its own retry is not its replay: %s", c.name, againBody)
		}
	}
	if ids := listNamed(t, k, f.keys["ADMIN"], "/v1/agents", "shared"); len(ids) != 1 {
		t.Errorf("tenant A has agents named shared %v, want one", ids)
	}
	if ids := listNamed(t, k, adminB, "/v1/agents", "shared"); len(ids) != 1 {
		t.Errorf("tenant B has agents named shared %v, want one", ids)
	}
}

// TestIdempotencyClientGaveUp: the client sends a registration and gives up (cancels) before
// the answer reaches it, after the kernel has done the work; its retry with the same key gets
// the original response and nothing is done twice. A proxy between client and kernel holds the
// response back; the client cancels when the kernel starts answering, which the kernel does
// only after storing the response.
func TestIdempotencyClientGaveUp(t *testing.T) {
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]
	hold := newHoldingProxy(t, k.Addr())

	js, err := json.Marshal(agentSpec("gave-up"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+hold.addr+"/v1/agents", bytes.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	name, value, _ := strings.Cut(admin, ":")
	req.Header.Set(name, strings.TrimSpace(value))
	req.Header.Set(idempotency.HeaderKey, `"gave-up-1"`)
	errc := make(chan error, 1)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			err = errors.New("the response got through the holding proxy")
		}
		errc <- err
	}()
	select {
	case <-hold.answering:
	case <-time.After(30 * time.Second):
		t.Fatal("the kernel did not answer the first attempt")
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("first attempt: %v, want the client's cancellation", err)
	}

	resp, body := k.Do(t, "POST", "/v1/agents", agentSpec("gave-up"), admin, idemKey("gave-up-1"))
	mustStatus(t, resp, body, http.StatusCreated)
	if !replayed(resp) {
		t.Errorf("the retry was processed anew: %s", body)
	}
	ids := listNamed(t, k, admin, "/v1/agents", "gave-up")
	if len(ids) != 1 || decode[agentDoc](t, body).ID != ids[0] {
		t.Errorf("agents named gave-up %v; the retry answered %s", ids, body)
	}
	if got := countOutbox(t, k.Config, events.TypeAgentRegistered, events.AgentSubject(ids[0])); got != 1 {
		t.Errorf("%d outbox events of the registration, want 1", got)
	}
}

// holdingProxy forwards clients' bytes to a kernel and holds back (drops) the kernel's answers,
// closing answering when the first answer byte arrives.
type holdingProxy struct {
	addr      string
	answering chan struct{}
}

func newHoldingProxy(t *testing.T, upstream string) *holdingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdingProxy{addr: ln.Addr().String(), answering: make(chan struct{})}
	var once sync.Once
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				_ = down.Close()
				continue
			}
			track(down)
			track(up)
			wg.Go(func() {
				_, _ = io.Copy(up, down) // the request; ends when the client gives up
				_ = up.Close()
			})
			wg.Go(func() {
				var b [1]byte
				if n, _ := up.Read(b[:]); n > 0 {
					once.Do(func() { close(p.answering) })
				}
				_, _ = io.Copy(io.Discard, up) // the answer goes nowhere
			})
		}
	})
	return p
}

// TestIdempotencyServerErrorNotStored cuts the database while a registration is made with a key:
// the kernel answers 5xx, which is not stored, and the retry once the database is back is
// processed anew. The records are in Redis, which stays up, so the attempt reaches the handler.
func TestIdempotencyServerErrorNotStored(t *testing.T) {
	pgURL := services.Postgres(t)
	redisURL, ns := services.RedisNamespace(t)
	proxy := faultproxy.New(t, services.HostPort(t, pgURL))
	k := kerneltest.Start(t, func(c *config.Config) {
		c.Database.URL = services.WithHost(t, pgURL, proxy.Addr())
		c.Redis.URL, c.Bus.Namespace, c.Idempotency.Store = redisURL, ns, "redis"
	})
	// A SUPER_ADMIN token: checking it needs no database, unlike an API key.
	admin := "Authorization: Bearer " + k.Token(t, "")
	tenant := newTenant(t, k, admin, "outage")
	path := "/v1/agents?tenant=" + tenant

	proxy.Cut()
	resp, body := k.Do(t, "POST", path, agentSpec("during-outage"), admin, idemKey("outage-1"))
	if resp.StatusCode < 500 {
		t.Fatalf("during the outage: status %d, want 5xx; body %s", resp.StatusCode, body)
	}
	proxy.Restore()

	var created []byte
	kerneltest.WaitFor(t, 30*time.Second, "the registration succeeds after the outage", func() bool {
		resp, body := k.Do(t, "POST", path, agentSpec("during-outage"), admin, idemKey("outage-1"))
		if resp.StatusCode >= 500 {
			if replayed(resp) {
				t.Fatalf("a 5xx was stored and replayed: %s", body)
			}
			return false
		}
		mustStatus(t, resp, body, http.StatusCreated)
		if replayed(resp) {
			t.Fatalf("the first success is a replay: the 5xx was stored? %s", body)
		}
		created = body
		return true
	})
	resp, body = k.Do(t, "POST", path, agentSpec("during-outage"), admin, idemKey("outage-1"))
	mustStatus(t, resp, body, http.StatusCreated)
	if !replayed(resp) || !bytes.Equal(body, created) {
		t.Errorf("retry after success: marked %v, body %s, want %s", replayed(resp), body, created)
	}
}
