package auth

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/token"
	"github.com/nops-kernel/nops/internal/user"
)

// fakeKeys verifies the raw keys it holds; any other is refused the way apikey.Service refuses.
type fakeKeys struct {
	keys map[string]apikey.Key
	err  error // returned for every call when set: a failing store
}

func (f fakeKeys) Verify(_ context.Context, raw string) (apikey.Key, error) {
	if f.err != nil {
		return apikey.Key{}, f.err
	}
	k, ok := f.keys[raw]
	if !ok {
		return apikey.Key{}, errs.New(errs.Unauthenticated, "invalid or expired API key")
	}
	return k, nil
}

const rawKey = "nops_ak01jq0000000000000000000000_secret"

func newKeyService(t *testing.T, keys APIKeyVerifier) (*Service, *recordingIssuer) {
	t.Helper()
	issuer := &recordingIssuer{}
	svc, err := New(newMemUsers(), issuer, Options{BcryptCost: bcrypt.MinCost, APIKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return svc, issuer
}

func operatorKey() apikey.Key {
	return apikey.Key{ID: "ak01jq0000000000000000000000", TenantID: "ten_1", Role: user.RoleOperator,
		Scopes: []string{"agents:read", "agents:write"}}
}

func TestLoginAPIKeyIssuesTheKeysPrincipal(t *testing.T) {
	svc, issuer := newKeyService(t, fakeKeys{keys: map[string]apikey.Key{rawKey: operatorKey()}})
	tok, err := svc.LoginAPIKey(context.Background(), rawKey, "")
	if err != nil {
		t.Fatal(err)
	}
	want := token.Claims{Subject: "ak01jq0000000000000000000000", Tenant: "ten_1", Roles: []string{user.RoleOperator},
		Scopes: []string{"agents:read", "agents:write"}}
	if diff := cmp.Diff(want, issuer.last); diff != "" {
		t.Fatalf("claims (-want +got):\n%s", diff)
	}
	if tok.AccessToken != "signed-ak01jq0000000000000000000000" {
		t.Fatalf("token %q", tok.AccessToken)
	}
	if diff := cmp.Diff(want.Scopes, tok.Scopes); diff != "" {
		t.Fatalf("token scopes (-want +got):\n%s", diff)
	}
}

func TestLoginAPIKeyNarrowsScope(t *testing.T) {
	svc, issuer := newKeyService(t, fakeKeys{keys: map[string]apikey.Key{rawKey: operatorKey()}})
	tok, err := svc.LoginAPIKey(context.Background(), rawKey, " agents:read  agents:read ")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"agents:read"}, tok.Scopes); diff != "" {
		t.Fatal(diff)
	}
	if diff := cmp.Diff([]string{"agents:read"}, issuer.last.Scopes); diff != "" {
		t.Fatal(diff)
	}
	_, err = svc.LoginAPIKey(context.Background(), rawKey, "agents:read system:write")
	if e := errs.As(err); e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != "body.scope" {
		t.Fatalf("scope the key lacks: %v", err)
	}
}

func TestLoginAPIKeyRefusalsAreUniform(t *testing.T) {
	svc, issuer := newKeyService(t, fakeKeys{keys: map[string]apikey.Key{rawKey: operatorKey()}})
	var msgs []string
	for _, raw := range []string{"", "nops_garbage", rawKey + "x", "nops_ak01jq0000000000000000000001_secret"} {
		_, err := svc.LoginAPIKey(context.Background(), raw, "")
		e := errs.As(err)
		if e == nil || e.Code != errs.Unauthenticated {
			t.Fatalf("%q: %v", raw, err)
		}
		msgs = append(msgs, e.Message)
	}
	for _, m := range msgs {
		if m != msgs[0] {
			t.Fatalf("messages differ: %q", msgs)
		}
	}
	if issuer.last.Subject != "" {
		t.Fatalf("a token was issued for a refused key: %+v", issuer.last)
	}
}

func TestLoginAPIKeyStoreFailureIsNotARefusal(t *testing.T) {
	cause := errors.New("database is down")
	svc, _ := newKeyService(t, fakeKeys{err: errs.Wrap(errs.Unavailable, cause, "store unavailable")})
	_, err := svc.LoginAPIKey(context.Background(), rawKey, "")
	if errs.CodeOf(err) != errs.Unavailable || !errors.Is(err, cause) {
		t.Fatalf("got %v, want the store's unavailable error", err)
	}
}

func TestLoginAPIKeyWithoutVerifier(t *testing.T) {
	svc, _ := newKeyService(t, nil)
	_, err := svc.LoginAPIKey(context.Background(), rawKey, "")
	if !errors.Is(err, errNoAPIKeys) || errs.CodeOf(err) != errs.Internal {
		t.Fatalf("got %v, want an internal wiring error", err)
	}
}
