package nops_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/sdk/go/nops"
	"github.com/nops-kernel/nops/sdk/go/nops/api"
)

// TestRotateDuringTraffic rotates the client's API key while invocations and heartbeats run
// continuously on it: no call fails, the client ends on the new secret, and the kernel refuses
// the old one once its grace period is over.
func TestRotateDuringTraffic(t *testing.T) {
	f := newFixture(t)
	c := f.client(t, nops.Options{})
	var hbErrs atomic.Int64
	a, err := nops.NewAgent(c, nops.AgentConfig{
		Name: "rotating", Version: "1.0.0", HeartbeatInterval: 20 * time.Millisecond,
		Capabilities: []nops.Capability{echoCapability(nil)},
		Hooks: nops.Hooks{OnHeartbeat: func(e nops.HeartbeatEvent) {
			if e.Err != nil {
				hbErrs.Add(1)
			}
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := startAgent(t, a)

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				_, err := c.Invoke(context.Background(), "echo", []byte(`{"message":"x"}`), nil)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	kerneltest.WaitFor(t, 30*time.Second, "traffic before the rotation", func() bool { return ok.Load() >= 40 })
	const grace = 4 * time.Second
	rot, err := c.RotateAPIKey(context.Background(), grace)
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	rotatedAt := ok.Load()
	kerneltest.WaitFor(t, 30*time.Second, "traffic after the rotation", func() bool { return ok.Load() >= rotatedAt+40 })
	close(done)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d calls failed during the rotation; first: %v", n, n+ok.Load(), firstErr.Load())
	}
	t.Logf("%d calls, %d of them after the rotation, 0 failed; old secret valid until %s", ok.Load(), ok.Load()-rotatedAt, rot.OldValidUntil.Format(time.RFC3339Nano))
	if n := hbErrs.Load(); n != 0 {
		t.Fatalf("%d heartbeats failed during the rotation", n)
	}
	if c.APIKey() == f.apiKey || !strings.HasPrefix(c.APIKey(), "nops_"+rot.KeyID+"_") {
		t.Fatalf("client key after rotation: same=%v, key id %s", c.APIKey() == f.apiKey, rot.KeyID)
	}
	if rot.OldValidUntil.After(time.Now().Add(grace)) {
		t.Fatalf("old secret valid until %s, beyond the %s grace", rot.OldValidUntil, grace)
	}
	// The old secret is retired when the grace period ends; the new one keeps working.
	kerneltest.WaitFor(t, 30*time.Second, "old secret refused", func() bool {
		resp, _ := f.k.Do(t, "GET", "/v1/agents", nil, "X-API-Key: "+f.apiKey)
		return resp.StatusCode == http.StatusUnauthorized
	})
	if time.Now().Before(rot.OldValidUntil) {
		t.Fatalf("old secret refused before the end of its grace (%s)", rot.OldValidUntil)
	}
	resp, body := f.k.Do(t, "GET", "/v1/agents", nil, "X-API-Key: "+c.APIKey())
	mustStatus(t, resp, body, http.StatusOK)
	if err := stop(); err != nil {
		t.Fatalf("agent run: %v", err)
	}
}

// exchange is one attempt a recording transport saw.
type exchange struct {
	at          time.Time
	method      string
	status      int
	retryAfter  string
	idemKey     string
	nonce       string
	replayed    bool
	transportOK bool
}

// recorder is a RoundTripper that records every attempt before handing it on.
type recorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	log  []exchange
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	e := exchange{at: time.Now(), method: req.Method, idemKey: req.Header.Get("Idempotency-Key")}
	if si := req.Header.Get("Signature-Input"); si != "" {
		_, after, _ := strings.Cut(si, `nonce="`)
		e.nonce, _, _ = strings.Cut(after, `"`)
	}
	resp, err := r.next.RoundTrip(req)
	if err == nil {
		e.status, e.retryAfter, e.transportOK = resp.StatusCode, resp.Header.Get("Retry-After"), true
		e.replayed = resp.Header.Get("Idempotent-Replayed") == "true"
	}
	r.mu.Lock()
	r.log = append(r.log, e)
	r.mu.Unlock()
	return resp, err
}

func (r *recorder) exchanges() []exchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]exchange(nil), r.log...)
}

// TestRetryAfter429 makes the kernel answer real 429s (a low per-tenant rate limit set through
// the API) and checks that the client retries them no sooner than Retry-After asks, until every
// call succeeds.
func TestRetryAfter429(t *testing.T) {
	f := newFixture(t)
	resp, body := f.k.Do(t, "POST", "/v1/rate-limits", map[string]any{
		"kind": "tenant", "target": f.tenant, "limit": 2, "period": "1s",
	}, f.super)
	mustStatus(t, resp, body, http.StatusCreated)
	rec := &recorder{next: f.k.Client.Transport}
	var retries429 atomic.Int64
	c := f.client(t, nops.Options{
		HTTPClient: &http.Client{Transport: rec},
		Retry:      nops.RetryPolicy{MaxAttempts: 10, BaseDelay: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond},
		Hooks: nops.Hooks{OnRetry: func(e nops.RetryEvent) {
			if e.Reason == "429" {
				retries429.Add(1)
			}
		}},
	})
	kerneltest.WaitFor(t, 10*time.Second, "the override in force", func() bool {
		r, err := c.API().ListAgentsWithResponse(context.Background(), nil)
		return err == nil && r.StatusCode() == http.StatusOK && retries429.Load() > 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 6 {
		r, err := c.API().ListAgentsWithResponse(ctx, nil)
		if err != nil || r.StatusCode() != http.StatusOK {
			t.Fatalf("call %d: %v %s", i, err, bodyOf(r))
		}
	}
	log := rec.exchanges()
	checked := 0
	for i, e := range log[:len(log)-1] {
		if e.status != http.StatusTooManyRequests {
			continue
		}
		secs, err := strconv.Atoi(e.retryAfter)
		if err != nil || secs < 1 {
			t.Fatalf("429 with Retry-After %q", e.retryAfter)
		}
		if gap := log[i+1].at.Sub(e.at); gap < time.Duration(secs)*time.Second {
			t.Fatalf("retried %s after a 429 asking for %ds", gap, secs)
		}
		checked++
	}
	if checked == 0 {
		t.Fatalf("the kernel answered no 429: %+v", log)
	}
	t.Logf("%d attempts, %d answered 429, each retried no sooner than its Retry-After", len(log), checked)
}

func bodyOf(r interface{ StatusCode() int }) string {
	if r == nil {
		return ""
	}
	return strconv.Itoa(r.StatusCode())
}

// faultyFront is a front of the kernel that forwards each request and then, for the first
// failures requests, throws the kernel's answer away: it answers 503 with Retry-After instead
// (mode "503"), or cuts the connection (mode "cut"). The kernel has processed the request each
// time, so only the Idempotency-Key keeps a retried POST from being done twice.
func faultyFront(t *testing.T, kernelURL string, mode string, failures int64) *httptest.Server {
	u, err := url.Parse(kernelURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) > failures {
			proxy.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		proxy.ServeHTTP(rec, r)
		if mode == "cut" {
			panic(http.ErrAbortHandler)
		}
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"type":"urn:nops:problem:unavailable","title":"Service Unavailable","status":503,"code":"unavailable"}`)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestRetry503AndTransportErrors registers an agent through a front that loses the kernel's
// answers: after 503s (with Retry-After) or cut connections the client retries with the same
// Idempotency-Key, the kernel replays its first answer, and there is exactly one agent.
func TestRetry503AndTransportErrors(t *testing.T) {
	f := newFixture(t)
	for _, mode := range []string{"503", "cut"} {
		t.Run(mode, func(t *testing.T) {
			front := faultyFront(t, f.k.URL, mode, 2)
			rec := &recorder{next: http.DefaultTransport.(*http.Transport).Clone()}
			c, err := nops.NewClient(nops.Options{BaseURL: front.URL, APIKey: f.apiKey, HTTPClient: &http.Client{Transport: rec},
				Retry: nops.RetryPolicy{BaseDelay: 10 * time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			name := "retried-" + mode
			r, err := c.API().RegisterAgentWithResponse(context.Background(), nil, api.AgentSpec{Name: name, Version: "1.0.0", Endpoint: "http://127.0.0.1:9/"})
			if err != nil || r.JSON201 == nil {
				t.Fatalf("register: %v %d %s", err, r.StatusCode(), r.Body)
			}
			log := rec.exchanges()
			if len(log) != 3 {
				t.Fatalf("%d attempts, want 3: %+v", len(log), log)
			}
			for _, e := range log {
				if e.idemKey == "" || e.idemKey != log[0].idemKey {
					t.Fatalf("attempts with Idempotency-Keys %q and %q", log[0].idemKey, e.idemKey)
				}
			}
			if !log[2].replayed {
				t.Fatalf("the last attempt was processed anew, not replayed: %+v", log[2])
			}
			if mode == "503" {
				if gap := log[1].at.Sub(log[0].at); gap < time.Second {
					t.Fatalf("retried %s after a 503 asking for 1 s", gap)
				}
			} else if log[0].transportOK {
				t.Fatalf("the cut attempt got an answer: %+v", log[0])
			}
			resp, body := f.k.Do(t, "GET", "/v1/agents", nil, "X-API-Key: "+f.apiKey)
			mustStatus(t, resp, body, http.StatusOK)
			if n := strings.Count(string(body), `"name":"`+name+`"`); n != 1 {
				t.Fatalf("%d agents named %s: %s", n, name, body)
			}
		})
	}
}

// TestRetryStopsAtDeadline checks that the client does not wait past its context's deadline
// for a Retry-After it cannot honour: it returns the 503 it has.
func TestRetryStopsAtDeadline(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	c, err := nops.NewClient(nops.Options{BaseURL: srv.URL, APIKey: "nops_ak01jq3v6y7m9k2x8p4t5w0zcd1h_x"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.API().ListAgentsWithResponse(ctx, nil)
	if err != nil || r.StatusCode() != http.StatusServiceUnavailable || hits.Load() != 1 {
		t.Fatalf("got %v, %v after %d attempts; want the 503 after 1", bodyOf(r), err, hits.Load())
	}
	if ctx.Err() != nil {
		t.Fatalf("the client waited until the deadline")
	}
}

// TestSignedRequests runs against a tenant that requires RFC 9421 signatures: clients signing
// with an hmac-sha256 or an ed25519 request key work (an agent registers, heartbeats, is
// invoked and deregisters), an unsigned client and tampered requests are refused.
func TestSignedRequests(t *testing.T) {
	f := newFixture(t)
	admin := "X-API-Key: " + f.apiKey
	resp, body := f.k.Do(t, "POST", "/v1/request-keys", map[string]any{"alg": "hmac-sha256", "name": "sdk-hmac"}, admin)
	mustStatus(t, resp, body, http.StatusCreated)
	hk := decode[struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}](t, body)
	secret, err := nops.DecodeRequestSecret(hk.Secret)
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	resp, body = f.k.Do(t, "POST", "/v1/request-keys", map[string]any{"alg": "ed25519", "name": "sdk-ed",
		"public_key": base64.StdEncoding.EncodeToString(pub)}, admin)
	mustStatus(t, resp, body, http.StatusCreated)
	edID := decode[struct {
		ID string `json:"id"`
	}](t, body).ID

	resp, body = f.k.Do(t, "PUT", "/v1/tenants/"+f.tenant+"/perimeter", map[string]any{"require_signatures": true, "gateway_origins": []string{}}, f.super)
	mustStatus(t, resp, body, http.StatusOK)
	unsigned := f.client(t, nops.Options{})
	kerneltest.WaitFor(t, 10*time.Second, "unsigned requests refused", func() bool {
		r, err := unsigned.API().ListAgentsWithResponse(context.Background(), nil)
		return err == nil && r.StatusCode() == http.StatusUnauthorized
	})

	hmacKey := &nops.RequestKey{ID: hk.ID, Alg: nops.AlgHMACSHA256, Secret: secret}
	signed := f.client(t, nops.Options{RequestKey: hmacKey})
	var beats atomic.Int64
	a, err := nops.NewAgent(signed, nops.AgentConfig{Name: "signed", Version: "1.0.0", HeartbeatInterval: 50 * time.Millisecond,
		Capabilities: []nops.Capability{echoCapability(nil)},
		Hooks: nops.Hooks{OnHeartbeat: func(e nops.HeartbeatEvent) {
			if e.Err == nil {
				beats.Add(1)
			}
		}}})
	if err != nil {
		t.Fatal(err)
	}
	stop := startAgent(t, a)
	kerneltest.WaitFor(t, 20*time.Second, "signed heartbeats", func() bool { return beats.Load() >= 2 })
	res, err := signed.Invoke(context.Background(), "echo", []byte(`{"message":"signed"}`), nil)
	if err != nil || string(res.Body) != `{"message":"signed"}` {
		t.Fatalf("signed invoke: %+v %v", res, err)
	}
	ed := f.client(t, nops.Options{RequestKey: &nops.RequestKey{ID: edID, Alg: nops.AlgEd25519, PrivateKey: priv}})
	if r, err := ed.API().GetAgentWithResponse(context.Background(), a.ID(), nil); err != nil || r.JSON200 == nil {
		t.Fatalf("ed25519-signed read: %v %s", err, bodyOf(r))
	}
	if err := stop(); err != nil {
		t.Fatalf("signed agent run: %v", err)
	}

	// Tampering after signing: the body, the query, the key.
	for _, tc := range []struct {
		name   string
		alter  func(*http.Request)
		detail string
	}{
		{"body", func(r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			b = bytes.Replace(b, []byte("signed"), []byte("forged"), 1)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		}, "content-digest does not match the body"},
		{"query", func(r *http.Request) { r.URL.RawQuery = "tenant=" + f.tenant }, "signature does not verify"},
		{"content digest", func(r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			b = bytes.Replace(b, []byte("signed"), []byte("forged"), 1)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
			r.Header.Set("Content-Digest", digest(b))
		}, "signature does not verify"},
	} {
		t.Run("tampered "+tc.name, func(t *testing.T) {
			c := f.client(t, nops.Options{RequestKey: hmacKey, Retry: nops.RetryPolicy{MaxAttempts: 1},
				HTTPClient: &http.Client{Transport: tamper{next: f.k.Client.Transport, alter: tc.alter}}})
			_, err := c.Invoke(context.Background(), "echo", []byte(`{"message":"signed"}`), nil)
			var pe *nops.Error
			if !errors.As(err, &pe) || pe.Status != http.StatusUnauthorized || !strings.Contains(pe.Detail, tc.detail) {
				t.Fatalf("tampered request: %v, want 401 %q", err, tc.detail)
			}
		})
	}
	wrong := f.client(t, nops.Options{RequestKey: &nops.RequestKey{ID: hk.ID, Alg: nops.AlgHMACSHA256, Secret: bytes.Repeat([]byte{7}, 32)}})
	r, err := wrong.API().ListAgentsWithResponse(context.Background(), nil)
	if err != nil || r.StatusCode() != http.StatusUnauthorized || !strings.Contains(string(r.Body), "signature does not verify") {
		t.Fatalf("request signed with the wrong secret: %v %s", err, bodyOf(r))
	}
}

// tamper changes a request after the client signed it.
type tamper struct {
	next  http.RoundTripper
	alter func(*http.Request)
}

func (tp tamper) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	tp.alter(r)
	return tp.next.RoundTrip(r)
}
