package auth

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/rbac"
	"github.com/nops-kernel/nops/internal/token"
	"github.com/nops-kernel/nops/internal/user"
)

// memUsers is an in-memory user.Store.
type memUsers struct {
	mu    sync.Mutex
	users map[string]user.User
}

func newMemUsers() *memUsers { return &memUsers{users: map[string]user.User{}} }

func (m *memUsers) CreateUser(_ context.Context, u user.User) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.users[u.Username]; ok {
		return errs.New(errs.Conflict, "user %s exists", u.Username)
	}
	m.users[u.Username] = u
	return nil
}

func (m *memUsers) UserByUsername(_ context.Context, name string) (user.User, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.users[name]
	if !ok {
		return user.User{}, errs.New(errs.NotFound, "user not found")
	}
	return u, nil
}

// recordingIssuer returns the claims it was asked to sign as the "token".
type recordingIssuer struct{ last token.Claims }

func (r *recordingIssuer) Issue(_ context.Context, c token.Claims) (string, time.Time, error) {
	r.last = c
	return "signed-" + c.Subject, time.Now().Add(time.Hour), nil
}

type harness struct {
	svc    *Service
	users  *memUsers
	issuer *recordingIssuer
	delays []time.Duration
	now    time.Time
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{users: newMemUsers(), issuer: &recordingIssuer{}, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	hash, err := HashPassword("right-password-123", bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	_ = h.users.CreateUser(context.Background(), user.User{ID: "usr_1", Username: "admin", PasswordHash: hash, Roles: []string{user.RoleSuperAdmin}})
	h.svc, err = New(h.users, h.issuer, Options{
		BcryptCost: bcrypt.MinCost,
		Now:        func() time.Time { return h.now },
		Sleep:      func(_ context.Context, d time.Duration) { h.delays = append(h.delays, d) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestLoginGrantsRoleScopes(t *testing.T) {
	h := newHarness(t)
	tok, err := h.svc.Login(context.Background(), "admin", "right-password-123", "")
	if err != nil {
		t.Fatal(err)
	}
	want := token.Claims{Subject: "usr_1", Roles: []string{user.RoleSuperAdmin}, Scopes: rbac.ScopesFor([]string{user.RoleSuperAdmin})}
	if diff := cmp.Diff(want, h.issuer.last); diff != "" {
		t.Fatalf("claims (-want +got):\n%s", diff)
	}
	if tok.AccessToken != "signed-usr_1" {
		t.Fatalf("token %q", tok.AccessToken)
	}
}

func TestLoginNarrowsScope(t *testing.T) {
	h := newHarness(t)
	tok, err := h.svc.Login(context.Background(), "admin", "right-password-123", "system:read system:read")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{rbac.ScopeSystemRead}, tok.Scopes); diff != "" {
		t.Fatal(diff)
	}
	_, err = h.svc.Login(context.Background(), "admin", "right-password-123", "system:read tenants:admin")
	if e := errs.As(err); e == nil || e.Code != errs.Invalid || e.Fields[0].Name != "body.scope" {
		t.Fatalf("ungranted scope: %v", err)
	}
}

func TestFailedLoginsAreUniformSlowedAndGrow(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	var msgs []string
	for _, c := range []struct{ user, pass string }{
		{"admin", "wrong"}, {"admin", "wrong"}, {"admin", "wrong"}, {"ghost", "whatever"},
	} {
		_, err := h.svc.Login(ctx, c.user, c.pass, "")
		e := errs.As(err)
		if e == nil || e.Code != errs.Unauthenticated {
			t.Fatalf("%s/%s: %v", c.user, c.pass, err)
		}
		msgs = append(msgs, e.Message)
	}
	for _, m := range msgs {
		if m != msgs[0] {
			t.Fatalf("messages differ, revealing which usernames exist: %q", msgs)
		}
	}
	base := 200 * time.Millisecond
	if diff := cmp.Diff([]time.Duration{base, 2 * base, 4 * base, base}, h.delays); diff != "" {
		t.Fatalf("delays (-want +got):\n%s", diff)
	}
	// A success clears the record; failures after the window start over.
	if _, err := h.svc.Login(ctx, "admin", "right-password-123", ""); err != nil {
		t.Fatal(err)
	}
	_, _ = h.svc.Login(ctx, "admin", "wrong", "")
	h.now = h.now.Add(time.Hour)
	_, _ = h.svc.Login(ctx, "ghost", "x", "")
	_, _ = h.svc.Login(ctx, "ghost", "x", "")
	if diff := cmp.Diff([]time.Duration{base, base, 2 * base}, h.delays[4:]); diff != "" {
		t.Fatalf("delays after reset (-want +got):\n%s", diff)
	}
}

func TestDelayIsCapped(t *testing.T) {
	h := newHarness(t)
	if d := h.svc.delay(50); d != 5*time.Second {
		t.Fatalf("delay(50) = %s", d)
	}
}

func TestLoginRejectsOverlongPassword(t *testing.T) {
	h := newHarness(t)
	_, err := h.svc.Login(context.Background(), "admin", strings.Repeat("x", 73), "")
	if e := errs.As(err); e == nil || e.Code != errs.Invalid {
		t.Fatalf("err = %v", err)
	}
}

func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	t.Run("configured password", func(t *testing.T) {
		users := newMemUsers()
		var out bytes.Buffer
		if err := Bootstrap(ctx, users, "configured-password", bcrypt.MinCost, &out, log, time.Now()); err != nil {
			t.Fatal(err)
		}
		u, err := users.UserByUsername(ctx, "admin")
		if err != nil {
			t.Fatal(err)
		}
		if bcrypt.CompareHashAndPassword(u.PasswordHash, []byte("configured-password")) != nil {
			t.Fatal("stored hash does not match the configured password")
		}
		if bytes.Contains(u.PasswordHash, []byte("configured-password")) || out.Len() != 0 {
			t.Fatal("password stored or printed in clear")
		}
		if diff := cmp.Diff([]string{user.RoleSuperAdmin}, u.Roles); diff != "" {
			t.Fatal(diff)
		}
	})
	t.Run("generated password printed once", func(t *testing.T) {
		users := newMemUsers()
		var out bytes.Buffer
		if err := Bootstrap(ctx, users, "", bcrypt.MinCost, &out, log, time.Now()); err != nil {
			t.Fatal(err)
		}
		fields := strings.Fields(out.String())
		var pw string
		for i, f := range fields {
			if f == "password" && i+1 < len(fields) {
				pw = fields[i+1]
			}
		}
		u, _ := users.UserByUsername(ctx, "admin")
		if pw == "" || bcrypt.CompareHashAndPassword(u.PasswordHash, []byte(pw)) != nil {
			t.Fatalf("printed password does not log in: %q", out.String())
		}
		out.Reset()
		if err := Bootstrap(ctx, users, "", bcrypt.MinCost, &out, log, time.Now()); err != nil {
			t.Fatal(err)
		}
		if out.Len() != 0 {
			t.Fatal("second start printed a password again")
		}
		u2, _ := users.UserByUsername(ctx, "admin")
		if !bytes.Equal(u.PasswordHash, u2.PasswordHash) {
			t.Fatal("second start changed the admin password")
		}
	})
}
