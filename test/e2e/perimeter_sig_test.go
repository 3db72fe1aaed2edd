package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dunglas/httpsfv"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// setSigParam sets parameter name of the nops signature in Signature-Input to value.
func setSigParam(t *testing.T, r *http.Request, name string, value any) {
	t.Helper()
	d, err := httpsfv.UnmarshalDictionary(r.Header.Values("Signature-Input"))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := d.Get(reqsig.Label)
	list := m.(httpsfv.InnerList)
	list.Params.Add(name, value)
	d.Add(reqsig.Label, list)
	s, err := httpsfv.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Signature-Input", s)
}

// Every covered component, the body, the time, the nonce, the key and the algorithm are checked:
// each change answers 401 saying which check failed, and is audited; the untouched requests pass.
func TestRequestSignatures(t *testing.T) {
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]
	agent := newAgent(t, k, admin, "signed", map[string]string{"env": "dev"}, "")
	other := newAgent(t, k, admin, "other", map[string]string{"env": "dev"}, "")
	hmacKey := newRequestKey(t, k, admin, nil)
	edKey := newRequestKey(t, k, admin, newEd25519(t))
	get := func() signed { return signed{method: "GET", path: "/v1/agents/" + agent, headers: []string{admin}} }
	post := func(name string) signed {
		s := signed{method: "POST", path: "/v1/agents", headers: []string{admin}}
		s.body = []byte(`{"name":"` + name + `","version":"v1.0.0","endpoint":"https://agents.example.com/x","capabilities":[{"name":"text.summarize","description":"x","input_schema":{"type":"object"}}]}`)
		return s
	}
	with := func(s signed, change func(*signed)) signed { change(&s); return s }

	refused := []struct {
		name string
		key  reqsig.SignerKey
		req  signed
		want string
	}{
		{"method", hmacKey, with(get(), func(s *signed) {
			s.alter = func(r *http.Request, b []byte) []byte { r.Method = "DELETE"; return b }
		}), "signature does not verify"},
		{"path", hmacKey, with(get(), func(s *signed) {
			s.alter = func(r *http.Request, b []byte) []byte { r.URL.Path = "/v1/agents/" + other; return b }
		}), "signature does not verify"},
		{"query", hmacKey, with(get(), func(s *signed) {
			s.alter = func(r *http.Request, b []byte) []byte { r.URL.RawQuery = "tenant=" + f.tenant; return b }
		}), "signature does not verify"},
		{"authority", hmacKey, with(get(), func(s *signed) {
			s.alter = func(r *http.Request, b []byte) []byte {
				r.Host = strings.Replace(r.URL.Host, "127.0.0.1", "localhost", 1)
				return b
			}
		}), "signature does not verify"},
		{"content-type", hmacKey, with(post("ct"), func(s *signed) {
			s.alter = func(r *http.Request, b []byte) []byte {
				r.Header.Set("Content-Type", "application/json; charset=utf-8")
				return b
			}
		}), "signature does not verify"},
		{"content-digest with the body", hmacKey, with(post("cd"), func(s *signed) {
			s.alter = func(r *http.Request, b []byte) []byte {
				b = []byte(strings.Replace(string(b), `"cd"`, `"evil"`, 1))
				sum := sha256.Sum256(b)
				r.Header.Set("Content-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":")
				return b
			}
		}), "signature does not verify"},
		{"body", hmacKey, with(post("body"), func(s *signed) {
			s.alter = func(r *http.Request, b []byte) []byte {
				return []byte(strings.Replace(string(b), `"body"`, `"evil"`, 1))
			}
		}), "content-digest does not match the body"},
		{"created 310 s ago", hmacKey, with(get(), func(s *signed) { s.skew = -310 * time.Second }), "in the past"},
		{"created 310 s ahead", hmacKey, with(get(), func(s *signed) { s.skew = 310 * time.Second }), "in the future"},
		{"unknown keyid", reqsig.SignerKey{ID: mustID(t), Alg: reqsig.AlgHMACSHA256, Secret: hmacKey.Secret}, get(), "unknown keyid"},
		{"alg of another algorithm", hmacKey, with(get(), func(s *signed) {
			s.alter = func(r *http.Request, b []byte) []byte { setSigParam(t, r, "alg", "ed25519"); return b }
		}), "does not match key"},
		{"ed25519 key signed with hmac", reqsig.SignerKey{ID: edKey.ID, Alg: reqsig.AlgHMACSHA256, Secret: hmacKey.Secret}, get(), "signature does not verify"},
		{"hmac key signed with ed25519", reqsig.SignerKey{ID: hmacKey.ID, Alg: reqsig.AlgEd25519, PrivateKey: edKey.PrivateKey}, get(), "signature does not verify"},
		{"missing Signature-Input", hmacKey, with(get(), func(s *signed) {
			s.alter = func(r *http.Request, b []byte) []byte { r.Header.Del("Signature-Input"); return b }
		}), "missing Signature-Input"},
		{"malformed Signature-Input", hmacKey, with(get(), func(s *signed) {
			s.alter = func(r *http.Request, b []byte) []byte { r.Header.Set("Signature-Input", `nops=("@method"`); return b }
		}), "malformed Signature-Input"},
		{"malformed Signature", hmacKey, with(get(), func(s *signed) {
			s.alter = func(r *http.Request, b []byte) []byte { r.Header.Set("Signature", `nops=:not base64!:`); return b }
		}), "malformed Signature"},
		{"wrong tag", hmacKey, with(get(), func(s *signed) {
			s.alter = func(r *http.Request, b []byte) []byte { setSigParam(t, r, "tag", "other"); return b }
		}), "tag must be"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := sendSigned(t, k, tt.key, tt.req)
			p := wantProblem(t, resp, body, http.StatusUnauthorized, "unauthenticated", tt.want)
			if sig := resp.Request.Header.Get("Signature"); sig != "" && strings.Contains(string(body), sig) {
				t.Errorf("the problem repeats the signature: %s", p.Detail)
			}
		})
	}
	// Nothing was changed by the refused requests.
	resp, body := k.Do(t, "GET", "/v1/agents?limit=100", nil, admin)
	mustStatus(t, resp, body, http.StatusOK)
	for _, name := range []string{"evil", "ct", "cd", "body"} {
		if strings.Contains(string(body), `"name":"`+name+`"`) {
			t.Errorf("a refused signed request registered agent %q", name)
		}
	}

	t.Run("replay", func(t *testing.T) {
		nonce := reqsig.NewNonce()
		resp, body := sendSigned(t, k, hmacKey, with(get(), func(s *signed) { s.nonce = nonce }))
		mustStatus(t, resp, body, http.StatusOK)
		resp, body = sendSigned(t, k, hmacKey, with(get(), func(s *signed) { s.nonce = nonce }))
		wantProblem(t, resp, body, http.StatusUnauthorized, "unauthenticated", "nonce already used")
	})
	t.Run("valid", func(t *testing.T) {
		for _, key := range []reqsig.SignerKey{hmacKey, edKey} {
			resp, body := sendSigned(t, k, key, get())
			mustStatus(t, resp, body, http.StatusOK)
		}
		resp, body := sendSigned(t, k, edKey, post("signed-post"))
		mustStatus(t, resp, body, http.StatusCreated)
	})
	t.Run("audited", func(t *testing.T) {
		reasons := map[string]bool{}
		for _, r := range auditRecords(t, k, admin, "action=auth.authenticate&decision=deny").Items {
			reasons[r.Decision.Reason] = true
		}
		var found int
		for r := range reasons {
			if strings.HasPrefix(r, "request signature refused: ") {
				found++
			}
		}
		if found < 5 {
			t.Errorf("%d distinct signature refusals in the audit trail, want at least 5: %v", found, reasons)
		}
	})
}

func mustID(t *testing.T) string {
	t.Helper()
	id, err := reqsig.NewID(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A tenant that requires signatures gets 401 for every unsigned request of its credentials;
// signed ones pass, and other tenants are not affected.
func TestTenantRequiresSignatures(t *testing.T) {
	f := newFixture(t)
	k, admin := f.k, f.keys["ADMIN"]
	key := newRequestKey(t, k, admin, nil)
	agent := newAgent(t, k, admin, "a", map[string]string{"env": "dev"}, "")
	beta := newTenant(t, k, f.admin, "beta")
	_, betaAdmin := newKey(t, k, f.admin, beta, "ADMIN", nil)

	resp, body := k.Do(t, "PUT", "/v1/tenants/"+f.tenant+"/perimeter", map[string]any{"require_signatures": true, "gateway_origins": []string{}}, f.admin)
	mustStatus(t, resp, body, http.StatusOK)
	kerneltest.WaitFor(t, 10*time.Second, "unsigned requests of the tenant refused", func() bool {
		resp, _ := k.Do(t, "GET", "/v1/agents", nil, admin)
		return resp.StatusCode == http.StatusUnauthorized
	})
	resp, body = k.Do(t, "GET", "/v1/agents", nil, admin)
	wantProblem(t, resp, body, http.StatusUnauthorized, "unauthenticated", "requires RFC 9421 signatures")
	resp, body = k.Do(t, "GET", "/v1/agents", nil, f.keys["VIEWER"])
	wantProblem(t, resp, body, http.StatusUnauthorized, "unauthenticated", "requires RFC 9421 signatures")
	resp, body = sendSigned(t, k, key, signed{method: "GET", path: "/v1/agents/" + agent, headers: []string{admin}})
	mustStatus(t, resp, body, http.StatusOK)
	resp, body = k.Do(t, "GET", "/v1/agents", nil, betaAdmin)
	mustStatus(t, resp, body, http.StatusOK)
}

// A nonce is accepted once, also after a restart on the same data directory (SQLite keeps it).
func TestSignatureReplayAfterRestart(t *testing.T) {
	dataDir := t.TempDir()
	sameDir := func(c *config.Config) { c.DataDir = dataDir }
	nonce := reqsig.NewNonce()
	var (
		key   reqsig.SignerKey
		admin string
	)
	t.Run("first life", func(t *testing.T) {
		f := newFixture(t, sameDir)
		admin = f.keys["ADMIN"]
		key = newRequestKey(t, f.k, admin, nil)
		resp, body := sendSigned(t, f.k, key, signed{method: "GET", path: "/v1/auth/whoami", headers: []string{admin}, nonce: nonce})
		mustStatus(t, resp, body, http.StatusOK)
	})
	if t.Failed() {
		t.FailNow()
	}
	k := kerneltest.Start(t, sameDir)
	resp, body := sendSigned(t, k, key, signed{method: "GET", path: "/v1/auth/whoami", headers: []string{admin}, nonce: nonce})
	wantProblem(t, resp, body, http.StatusUnauthorized, "unauthenticated", "nonce already used")
	resp, body = sendSigned(t, k, key, signed{method: "GET", path: "/v1/auth/whoami", headers: []string{admin}})
	mustStatus(t, resp, body, http.StatusOK)
}

// Two replicas sharing PostgreSQL (keys), Redis (nonces), the key-encryption key and the API-key
// pepper accept a nonce once between them.
func TestSignatureReplayAcrossReplicas(t *testing.T) {
	dbURL := services.Postgres(t)
	redisURL, ns := services.RedisNamespace(t)
	secrets := t.TempDir()
	shared := func(c *config.Config) {
		c.Database.URL, c.Redis.URL, c.Bus.Namespace = dbURL, redisURL, ns
		c.Limits.RedisPrefix, c.Signing.NonceStore = ns+":rl:", "redis"
		c.Signing.KEKFile, c.APIKeys.PepperFile = filepath.Join(secrets, "kek.json"), filepath.Join(secrets, "pepper.json")
	}
	f := newFixture(t, shared)
	b := kerneltest.Start(t, shared)
	admin := f.keys["ADMIN"]
	key := newRequestKey(t, f.k, admin, nil)
	nonce := reqsig.NewNonce()
	req := signed{method: "GET", path: "/v1/auth/whoami", headers: []string{admin}, nonce: nonce}
	resp, body := sendSigned(t, f.k, key, req)
	mustStatus(t, resp, body, http.StatusOK)
	resp, body = sendSigned(t, b, key, req) // signed anew for b's authority, same nonce
	wantProblem(t, resp, body, http.StatusUnauthorized, "unauthenticated", "nonce already used")
	req.nonce = ""
	resp, body = sendSigned(t, b, key, req)
	mustStatus(t, resp, body, http.StatusOK)
}
