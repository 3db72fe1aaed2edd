package httpapi

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/store/sqlite"
	"github.com/nops-kernel/nops/internal/token"
)

// newRotationWorld is a world whose control manages an EdDSA token service (not the one the world
// logs in with, which has a configured HS256 secret) and a built-in CA, on the world's store.
func newRotationWorld(t *testing.T) (*managedWorld, *identity.CA) {
	t.Helper()
	var ca *identity.CA
	w := newManagedWorld(t, func(t *testing.T, c *control.Control, st *sqlite.Store) {
		secret := make([]byte, sealbox.KeyLen)
		if _, err := rand.Read(secret); err != nil {
			t.Fatal(err)
		}
		box, err := sealbox.New(sealbox.Key{Version: "k1", Secret: secret})
		if err != nil {
			t.Fatal(err)
		}
		tokens, err := token.New(context.Background(), st, token.Config{Issuer: "nops", Audience: "nops", Algorithm: token.AlgEdDSA,
			TTL: time.Hour, Sealer: box}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.SigningKeys = tokens
		if ca, err = identity.LoadOrCreate(context.Background(), st, box, identity.Config{TrustDomain: "nops.test"}); err != nil {
			t.Fatal(err)
		}
		c.CA = ca
	})
	return w, ca
}

func TestSigningKeyRotation(t *testing.T) {
	w, _ := newRotationWorld(t)

	// Only a SUPER_ADMIN: a tenant's ADMIN, OPERATOR or VIEWER is refused, and nothing changes.
	for _, role := range []string{"ADMIN", "OPERATOR", "VIEWER"} {
		w.must(403, "GET", "/v1/admin/signing-keys", w.keys[role], nil)
		w.must(403, "POST", "/v1/admin/signing-keys/rotate", w.keys[role], nil)
	}
	w.must(403, "POST", "/v1/admin/signing-keys/rotate", w.otherAdmin, map[string]any{})
	_, list := w.must(200, "GET", "/v1/admin/signing-keys", w.admin, nil)
	items := list["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("keys after refused rotations: %v", list)
	}
	old := items[0].(map[string]any)
	if old["state"] != "signing" || old["source"] != "store" || old["algorithm"] != "EdDSA" || old["retires_at"] != nil {
		t.Fatalf("key before the rotation %v", old)
	}
	for _, k := range []string{"private", "private_key", "d", "secret"} {
		if _, ok := old[k]; ok {
			t.Fatalf("the listing shows key material (%s): %v", k, old)
		}
	}

	// Bad input names its field; nothing is recorded.
	_, bad := w.must(400, "POST", "/v1/admin/signing-keys/rotate", w.admin, map[string]any{"algorithm": "RS256"})
	wantFields(t, bad, "body.algorithm")
	w.must(400, "POST", "/v1/admin/signing-keys/rotate", w.admin, map[string]any{"alg": "EdDSA"})
	if reasons := w.auditOf(w.admin, control.ActionSigningKeyRotate); len(reasons) != 0 {
		t.Fatalf("refused rotations were recorded: %v", reasons)
	}

	_, r := w.must(200, "POST", "/v1/admin/signing-keys/rotate", w.admin, map[string]any{"algorithm": "EdDSA"})
	key := r["key"].(map[string]any)
	if key["state"] != "pending" || key["kid"] == old["kid"] || key["activates_at"] == nil || strs(r["superseded"])[0] != old["kid"] || r["retires_at"] == nil {
		t.Fatalf("rotation %v", r)
	}
	_, list = w.must(200, "GET", "/v1/admin/signing-keys", w.admin, nil)
	if ids := itemIDs(list, "kid"); len(ids) != 2 || ids[1] != key["kid"] {
		t.Fatalf("keys after the rotation %v", ids)
	}
	if got := list["items"].([]any)[0].(map[string]any); got["state"] != "signing" || got["retires_at"] != r["retires_at"] {
		t.Fatalf("the superseded key %v, want signing until the activation and retiring at %v", got, r["retires_at"])
	}
	// Without a body: the configured algorithm.
	w.must(200, "POST", "/v1/admin/signing-keys/rotate", w.admin, nil)
	reasons := w.auditOf(w.admin, control.ActionSigningKeyRotate)
	if len(reasons) != 2 || !strings.Contains(reasons[0], "EdDSA key activates") || !strings.Contains(reasons[0], "supersedes "+old["kid"].(string)) {
		t.Fatalf("audit of the rotations %q", reasons)
	}
}

// With the HS256 secret of the configuration there is nothing to rotate here: 409.
func TestSigningKeyRotationRefusedForConfiguredSecret(t *testing.T) {
	w := newEventsWorld(t, func(d *Deps) { d.Control.SigningKeys = d.Keys.(*token.Service) })
	_, p := w.must(409, "POST", "/v1/admin/signing-keys/rotate", w.admin, nil)
	if detail, _ := p["detail"].(string); !strings.Contains(detail, "auth.hs256_secret") {
		t.Fatalf("problem %v, want it to name auth.hs256_secret", p)
	}
	_, list := w.must(200, "GET", "/v1/admin/signing-keys", w.admin, nil)
	if items := list["items"].([]any); len(items) != 1 || items[0].(map[string]any)["source"] != "config" || items[0].(map[string]any)["created_at"] != nil {
		t.Fatalf("keys %v, want the configured secret only", list)
	}
}

func TestCARotation(t *testing.T) {
	w, ca := newRotationWorld(t)
	for _, cred := range []string{w.keys["ADMIN"], w.keys["OPERATOR"], w.otherAdmin} {
		w.must(403, "POST", "/v1/identity/ca/rotate", cred, nil)
	}
	if n := len(ca.Bundle().X509Authorities()); n != 1 {
		t.Fatalf("refused rotations changed the bundle: %d roots", n)
	}
	if reasons := w.auditOf(w.admin, control.ActionCARotate); len(reasons) != 0 {
		t.Fatalf("refused rotations were recorded: %v", reasons)
	}

	_, r := w.must(200, "POST", "/v1/identity/ca/rotate", w.admin, nil)
	root, inter := r["root"].(map[string]any), r["intermediate"].(map[string]any)
	retiring := r["retiring"].([]any)
	if r["trust_domain"] != "nops.test" || r["sequence"] != float64(2) || root["kind"] != "root" || inter["kind"] != "intermediate" ||
		inter["parent_id"] != root["id"] || inter["activates_at"] == nil || len(retiring) != 1 || retiring[0].(map[string]any)["retires_at"] == nil {
		t.Fatalf("rotation %v", r)
	}
	if n := len(ca.Bundle().X509Authorities()); n != 2 {
		t.Fatalf("bundle after the rotation holds %d roots, want 2", n)
	}
	if reasons := w.auditOf(w.admin, control.ActionCARotate); len(reasons) != 1 || !strings.Contains(reasons[0], "root "+root["id"].(string)) {
		t.Fatalf("audit of the rotation %q", reasons)
	}
}
