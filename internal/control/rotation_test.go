package control_test

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/token"
)

func newTokens(t *testing.T, st *faultyStore, secret []byte) *token.Service {
	t.Helper()
	alg := token.AlgEdDSA
	if secret != nil {
		alg = token.AlgHS256
	}
	kek, err := sealbox.LoadOrCreateFile(t.TempDir() + "/kek.json")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := token.New(t.Context(), st, token.Config{Issuer: "https://nops.test", Audience: "nops", Algorithm: alg, HS256Secret: secret,
		TTL: 15 * time.Minute, Leeway: 30 * time.Second, Sealer: kek}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func TestRotateSigningKey(t *testing.T) {
	c, st, ctx := setup(t)
	if _, err := c.RotateSigningKey(ctx, ""); errs.CodeOf(err) != errs.Unavailable {
		t.Fatalf("RotateSigningKey without the feature = %v, want unavailable", err)
	}
	if _, err := c.ListSigningKeys(ctx); errs.CodeOf(err) != errs.Unavailable {
		t.Fatalf("ListSigningKeys without the feature = %v, want unavailable", err)
	}

	// With the HS256 secret of the configuration: refused, nothing recorded.
	c.SigningKeys = newTokens(t, st, []byte("0123456789abcdef0123456789abcdef"))
	if _, err := c.RotateSigningKey(ctx, ""); errs.CodeOf(err) != errs.Conflict {
		t.Fatalf("RotateSigningKey with a configured secret = %v, want conflict", err)
	}
	if n := treeSize(t, st, audit.GlobalTree); n != 0 {
		t.Fatalf("a refused rotation left %d audit records", n)
	}

	tokens := newTokens(t, st, nil)
	c.SigningKeys = tokens
	before, err := c.ListSigningKeys(ctx)
	if err != nil || len(before) != 1 || before[0].State != token.StateSigning {
		t.Fatalf("ListSigningKeys before = %+v, %v", before, err)
	}
	r, err := c.RotateSigningKey(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	rec := rateLimitRecord(t, st, audit.GlobalTree, 1)
	if control.ActionSigningKeyRotate != "token.signing_key.rotate" || rec.Action != control.ActionSigningKeyRotate || rec.Resource != "signing-keys/"+r.Key.ID ||
		rec.Actor.Principal != "usr_test" || !rec.Decision.Allowed || !strings.Contains(rec.Decision.Reason, "supersedes "+before[0].ID) {
		t.Fatalf("audit record %+v", rec)
	}
	// This replica holds the new key at once (published, not yet signing).
	jwks, _ := tokens.JWKS(ctx)
	if !strings.Contains(string(jwks), r.Key.ID) {
		t.Errorf("the rotating replica does not publish the new key: %s", jwks)
	}
	after, err := c.ListSigningKeys(ctx)
	if err != nil || len(after) != 2 || after[1].ID != r.Key.ID || after[1].State != token.StatePending {
		t.Fatalf("ListSigningKeys after = %+v, %v", after, err)
	}

	// An algorithm the kernel does not sign with: refused, not recorded.
	if _, err := c.RotateSigningKey(ctx, token.AlgRS256); errs.CodeOf(err) != errs.Invalid {
		t.Fatalf("RotateSigningKey(RS256) = %v, want invalid", err)
	}
	if n := treeSize(t, st, audit.GlobalTree); n != 1 {
		t.Fatalf("a refused rotation was recorded (%d records)", n)
	}
}

func newCA(t *testing.T, st *faultyStore, onChange func(context.Context, identity.Change) error) *identity.CA {
	t.Helper()
	secret := make([]byte, sealbox.KeyLen)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	box, err := sealbox.New(sealbox.Key{Version: "k1", Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := identity.LoadOrCreate(t.Context(), st, box, identity.Config{TrustDomain: "nops.test", OnChange: onChange})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestRotateCA(t *testing.T) {
	c, st, ctx := setup(t)
	if _, err := c.RotateCA(ctx); errs.CodeOf(err) != errs.Unavailable {
		t.Fatalf("RotateCA without a CA = %v, want unavailable", err)
	}
	// The CA's own changes are recorded as the system's, in their transaction.
	ca := newCA(t, st, c.RecordCAChange)
	rec := rateLimitRecord(t, st, audit.GlobalTree, 1)
	if rec.Action != "identity.ca.create" || rec.Resource != "identity/ca/nops.test" || rec.Actor.Principal != control.SystemActor ||
		!strings.Contains(rec.Decision.Reason, "sequence 1") {
		t.Fatalf("audit record of the CA's creation %+v", rec)
	}

	c.CA = ca
	ch, err := c.RotateCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec = rateLimitRecord(t, st, audit.GlobalTree, 2)
	if rec.Action != control.ActionCARotate || rec.Resource != "identity/ca/nops.test" || rec.Actor.Principal != "usr_test" ||
		!strings.Contains(rec.Decision.Reason, "root "+ch.Added[0].ID) || !strings.Contains(rec.Decision.Reason, "retires") ||
		!strings.Contains(rec.Decision.Reason, "sequence 2") {
		t.Fatalf("audit record of the rotation %+v", rec)
	}
	// The rotating replica holds the new root at once.
	if n := len(ca.Bundle().X509Authorities()); n != 2 {
		t.Fatalf("bundle after RotateCA holds %d roots, want 2", n)
	}
}
