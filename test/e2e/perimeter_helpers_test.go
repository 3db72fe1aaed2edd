package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/reqsig"
)

// wantProblem checks that resp is a problem of status and code whose detail contains detailHas.
func wantProblem(t *testing.T, resp *http.Response, body []byte, status int, code, detailHas string) problem {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, body)
	}
	p := decodeProblem(t, resp, body)
	if p.Code != code {
		t.Errorf("problem code %q, want %q: %s", p.Code, code, body)
	}
	if !strings.Contains(p.Detail, detailHas) {
		t.Errorf("problem detail %q does not say %q", p.Detail, detailHas)
	}
	return p
}

// auditRecords lists the audit records of action the caller (auth header) may see.
func auditRecords(t *testing.T, k *kerneltest.Kernel, auth, query string) auditPage {
	t.Helper()
	resp, body := k.Do(t, "GET", "/v1/audit?limit=100&"+query, nil, auth)
	mustStatus(t, resp, body, http.StatusOK)
	return decode[auditPage](t, body)
}

// newAgent registers an agent named name with labels and criticality and returns its ID.
func newAgent(t *testing.T, k *kerneltest.Kernel, auth, name string, labels map[string]string, criticality string) string {
	t.Helper()
	spec := agentSpec(name)
	spec["labels"] = labels
	if criticality != "" {
		spec["criticality"] = criticality
	}
	resp, body := k.Do(t, "POST", "/v1/agents", spec, auth)
	mustStatus(t, resp, body, http.StatusCreated)
	return decode[agentDoc](t, body).ID
}

// newRequestKey creates a request-signing key through /v1/request-keys: an hmac-sha256 key
// when priv is nil (its secret comes back), else an ed25519 key of priv's public half.
func newRequestKey(t *testing.T, k *kerneltest.Kernel, auth string, priv ed25519.PrivateKey) reqsig.SignerKey {
	t.Helper()
	req := map[string]any{"alg": "hmac-sha256", "name": "e2e"}
	if priv != nil {
		req = map[string]any{"alg": "ed25519", "name": "e2e-ed",
			"public_key": base64.RawURLEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))}
	}
	resp, body := k.Do(t, "POST", "/v1/request-keys", req, auth)
	mustStatus(t, resp, body, http.StatusCreated)
	out := decode[struct {
		ID     string `json:"id"`
		Alg    string `json:"alg"`
		Secret string `json:"secret"`
	}](t, body)
	if !strings.HasPrefix(out.ID, "rk_") {
		t.Fatalf("request key id %q lacks the rk_ prefix", out.ID)
	}
	if priv != nil {
		if out.Secret != "" {
			t.Fatalf("an ed25519 key came back with a secret")
		}
		return reqsig.SignerKey{ID: out.ID, Alg: reqsig.AlgEd25519, PrivateKey: priv}
	}
	secret, err := reqsig.DecodeSecret(out.Secret)
	if err != nil {
		t.Fatalf("decode the secret of %s: %v", out.ID, err)
	}
	return reqsig.SignerKey{ID: out.ID, Alg: reqsig.AlgHMACSHA256, Secret: secret}
}

// signed describes one signed request: what is signed, and what a test changes after signing.
type signed struct {
	method, path string
	body         []byte
	headers      []string // "Name: value", set before signing
	// skew moves the created parameter away from the moment of signing (a fixed created time
	// taken earlier would drift towards the window on a slow machine).
	skew  time.Duration
	nonce string
	// alter, when set, changes the request after it was signed; it returns the body to send.
	alter func(r *http.Request, body []byte) []byte
}

// sendSigned builds the request s describes against k, signs it with key, applies s.alter and
// sends it through the kernel's contract-checking client.
func sendSigned(t *testing.T, k *kerneltest.Kernel, key reqsig.SignerKey, s signed) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), s.method, k.URL+s.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range s.headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	if err := reqsig.Sign(req, s.body, key, time.Now().Add(s.skew), s.nonce); err != nil {
		t.Fatalf("sign: %v", err)
	}
	body := s.body
	if s.alter != nil {
		body = s.alter(req, body)
	}
	if len(body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
	}
	resp, err := k.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", s.method, s.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}
