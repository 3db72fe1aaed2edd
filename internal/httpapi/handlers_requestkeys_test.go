package httpapi

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/store/sqlite"
)

// newKeysWorld is the managed world with request keys, and the keys service it uses.
func newKeysWorld(t *testing.T) (*managedWorld, *reqsig.Keys) {
	t.Helper()
	var keys *reqsig.Keys
	w := newManagedWorld(t, func(t *testing.T, c *control.Control, st *sqlite.Store) {
		box, err := sealbox.New(sealbox.Key{Version: "k1", Secret: bytes.Repeat([]byte{7}, sealbox.KeyLen)})
		if err != nil {
			t.Fatal(err)
		}
		if keys, err = reqsig.NewKeys(st, box, reqsig.KeysOptions{}); err != nil {
			t.Fatal(err)
		}
		c.RequestKeys = keys
	})
	return w, keys
}

// verifies signs a request with key and reports whether the kernel's verifier accepts it: the
// secret the API returned is the one the kernel verifies with.
func verifies(t *testing.T, keys *reqsig.Keys, key reqsig.SignerKey) error {
	t.Helper()
	v, err := reqsig.NewVerifier(keys, &reqsig.MemoryNonces{}, reqsig.Config{})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"in_flight":1}`)
	r := httptest.NewRequest("POST", "http://kernel.example/v1/agents/agt_1/heartbeat", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if err := reqsig.Sign(r, body, key, time.Now(), ""); err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(t.Context(), r, body)
	return err
}

func TestRequestKeys(t *testing.T) {
	w, keys := newKeysWorld(t)
	admin := w.keys["ADMIN"]
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))

	// Refusals first: roles, input, tenancy.
	w.must(403, "GET", "/v1/request-keys", w.keys["VIEWER"], nil)
	w.must(403, "POST", "/v1/request-keys", w.keys["OPERATOR"], map[string]any{"alg": "hmac-sha256"})
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"alg": "hmac-sha512"}, "body.alg"},
		{map[string]any{"alg": "ed25519"}, "body.public_key"},
		{map[string]any{"alg": "ed25519", "public_key": "bm90IGEga2V5"}, "body.public_key"},
		{map[string]any{"alg": "ed25519", "public_key": base64.StdEncoding.EncodeToString(make([]byte, 32))}, "body.public_key"},
		{map[string]any{"alg": "hmac-sha256", "public_key": base64.RawURLEncoding.EncodeToString(pub)}, "body.public_key"},
		{map[string]any{"alg": "hmac-sha256", "agent_id": "agt_01jz8y3w6v6r3b5q8x9k2m4n7a"}, "body.agent_id"},
		{map[string]any{"alg": "hmac-sha256", "expires_at": "2001-01-01T00:00:00Z"}, "body.expires_at"},
		{map[string]any{"alg": "hmac-sha256", "secret": "mine"}, "body"},
	} {
		_, bad := w.must(400, "POST", "/v1/request-keys", admin, tc.body)
		if names := fieldNames(bad); len(names) != 1 || !strings.HasPrefix(names[0], tc.field) {
			t.Fatalf("%v: fields %v, want %s", tc.body, names, tc.field)
		}
	}
	_, bad := w.must(400, "POST", "/v1/request-keys", w.admin, map[string]any{"alg": "hmac-sha256"})
	wantFields(t, bad, "query.tenant")
	w.must(404, "POST", "/v1/request-keys?tenant="+w.b, admin, map[string]any{"alg": "hmac-sha256"})

	// An HMAC key: its secret once, then never again.
	_, k := w.must(201, "POST", "/v1/request-keys", admin, map[string]any{"alg": "hmac-sha256", "name": "edge"})
	hid, secret := k["id"].(string), k["secret"].(string)
	if !strings.HasPrefix(hid, "rk_") || k["tenant"] != w.a || k["status"] != "active" || k["generation"] != float64(1) || k["public_key"] != nil {
		t.Fatalf("created %v", k)
	}
	raw, err := reqsig.DecodeSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifies(t, keys, reqsig.SignerKey{ID: hid, Alg: reqsig.AlgHMACSHA256, Secret: raw}); err != nil {
		t.Fatalf("a request signed with the returned secret: %v", err)
	}
	_, got := w.must(200, "GET", "/v1/request-keys/"+hid, w.keys["OPERATOR"], nil)
	_, list := w.must(200, "GET", "/v1/request-keys?limit=500", admin, nil)
	for _, shown := range append([]any{got}, list["items"].([]any)...) {
		if _, leaked := shown.(map[string]any)["secret"]; leaked {
			t.Fatalf("a read shows the secret: %v", shown)
		}
	}
	if ids := itemIDs(list, "id"); len(ids) != 1 || ids[0] != hid {
		t.Fatalf("list %v", ids)
	}

	// An Ed25519 key, bound to an agent, the public key in PEM; it is shown in base64url.
	_, agent := w.must(201, "POST", "/v1/agents", admin, map[string]any{"name": "edge-agent", "version": "1.0.0", "endpoint": "https://edge.example"})
	_, e := w.must(201, "POST", "/v1/request-keys", admin, map[string]any{"alg": "ed25519", "public_key": pemKey, "agent_id": agent["id"]})
	eid := e["id"].(string)
	if _, ok := e["secret"]; ok || e["public_key"] != base64.RawURLEncoding.EncodeToString(pub) || e["agent_id"] != agent["id"] {
		t.Fatalf("created %v", e)
	}
	if err := verifies(t, keys, reqsig.SignerKey{ID: eid, Alg: reqsig.AlgEd25519, PrivateKey: priv}); err != nil {
		t.Fatalf("a request signed with the private key: %v", err)
	}

	// Another tenant sees none of them.
	other := w.otherAdmin
	w.must(404, "GET", "/v1/request-keys/"+hid, other, nil)
	w.must(404, "POST", "/v1/request-keys/"+hid+"/rotate", other, nil)
	w.must(404, "DELETE", "/v1/request-keys/"+hid, other, nil)
	w.must(404, "GET", "/v1/request-keys/"+hid+"?tenant="+w.a, other, nil)
	w.must(404, "GET", "/v1/request-keys/"+hid+"?tenant="+w.b, w.admin, nil)
	w.must(200, "GET", "/v1/request-keys/"+hid+"?tenant="+w.a, w.admin, nil)
	_, list = w.must(200, "GET", "/v1/request-keys", other, nil)
	if len(list["items"].([]any)) != 0 {
		t.Fatalf("tenant b lists %v", list)
	}

	// Rotation: a new secret once; the old one keeps verifying for the grace period.
	_, bad = w.must(400, "POST", "/v1/request-keys/"+hid+"/rotate", admin, map[string]any{"grace_period": "soon"})
	wantFields(t, bad, "body.grace_period")
	_, bad = w.must(400, "POST", "/v1/request-keys/"+hid+"/rotate", admin, map[string]any{"grace_period": "721h"})
	wantFields(t, bad, "body.grace_period")
	_, rot := w.must(200, "POST", "/v1/request-keys/"+hid+"/rotate", admin, map[string]any{"grace_period": "1h"})
	if rot["secret"] == nil || rot["secret"] == secret || rot["generation"] != float64(2) || rot["previous_valid_until"] == nil {
		t.Fatalf("rotated %v", rot)
	}
	newRaw, err := reqsig.DecodeSecret(rot["secret"].(string))
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string][]byte{"new": newRaw, "previous (in grace)": raw} {
		if err := verifies(t, keys, reqsig.SignerKey{ID: hid, Alg: reqsig.AlgHMACSHA256, Secret: s}); err != nil {
			t.Fatalf("the %s secret after a rotation: %v", name, err)
		}
	}
	_, bad = w.must(400, "POST", "/v1/request-keys/"+eid+"/rotate", admin, nil)
	wantFields(t, bad, "body.public_key")
	pub2, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, rot = w.must(200, "POST", "/v1/request-keys/"+eid+"/rotate", admin, map[string]any{"public_key": base64.StdEncoding.EncodeToString(pub2), "grace_period": "0s"})
	if _, ok := rot["secret"]; ok || rot["public_key"] != base64.RawURLEncoding.EncodeToString(pub2) {
		t.Fatalf("rotated %v", rot)
	}

	// Revocation: at once, once.
	w.must(204, "DELETE", "/v1/request-keys/"+hid, admin, nil)
	_, got = w.must(200, "GET", "/v1/request-keys/"+hid, admin, nil)
	if got["status"] != "revoked" || got["revoked_at"] == nil {
		t.Fatalf("after revocation %v", got)
	}
	if err := verifies(t, keys, reqsig.SignerKey{ID: hid, Alg: reqsig.AlgHMACSHA256, Secret: newRaw}); errs.CodeOf(err) != errs.Unauthenticated {
		t.Fatalf("a revoked key verifies: %v", err)
	}
	w.must(409, "DELETE", "/v1/request-keys/"+hid, admin, nil)
	w.must(409, "POST", "/v1/request-keys/"+hid+"/rotate", admin, nil)

	for action, want := range map[string]int{"requestkey.create": 2, "requestkey.rotate": 2, "requestkey.revoke": 1} {
		if got := w.auditOf(admin, action); len(got) != want {
			t.Errorf("%s records %q, want %d", action, got, want)
		}
	}
	// No secret reached the audit trail.
	_, page := w.must(200, "GET", "/v1/audit?limit=500", admin, nil)
	all, err := json.Marshal(page)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(all), secret) || strings.Contains(string(all), base64.StdEncoding.EncodeToString(newRaw)) {
		t.Fatal("the audit trail holds a secret")
	}
}
