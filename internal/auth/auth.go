// Package auth turns credentials into tokens: password logins for users (bcrypt, slowed and
// counted on failure), narrowing a token to the scopes asked for, and the bootstrap SUPER_ADMIN
// created at first start. Which scopes each role grants is internal/rbac's matrix; token signing
// and verification live in internal/token. Imported by internal/httpapi and internal/kernel.
//
// Concurrency: Service is safe for concurrent use; the failure tracker is guarded by its own mutex.
package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"golang.org/x/crypto/bcrypt"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/rbac"
	"github.com/nops-kernel/nops/internal/token"
	"github.com/nops-kernel/nops/internal/user"
)

// Issuer signs tokens; *token.Service implements it.
type Issuer interface {
	Issue(ctx context.Context, c token.Claims) (string, time.Time, error)
}

// Options are Service's optional settings; the zero value works.
type Options struct {
	Logger     *slog.Logger
	Meter      metric.Meter  // nil: failures are not exported as metrics
	BcryptCost int           // 0: bcrypt.DefaultCost
	BaseDelay  time.Duration // first failed-login delay; 0: 200ms
	MaxDelay   time.Duration // delay cap; 0: 5s
	Window     time.Duration // how long a failure counts; 0: 15m
	Now        func() time.Time
	// Sleep waits d or until ctx ends; nil: a timer. Tests replace it to observe delays.
	Sleep func(ctx context.Context, d time.Duration)
	// APIKeys verifies the API keys LoginAPIKey exchanges; nil: API-key logins fail.
	APIKeys APIKeyVerifier
}

// Service logs users in.
type Service struct {
	users    user.Store
	issuer   Issuer
	opts     Options
	dummy    []byte // a bcrypt hash compared against for unknown users, so timing does not tell them apart
	failures metric.Int64Counter

	mu     sync.Mutex
	recent map[string]failureRecord // by username
}

type failureRecord struct {
	count int
	last  time.Time
}

// maxTracked bounds the failure tracker so a flood of usernames cannot grow it without limit.
const maxTracked = 10000

// New returns a Service.
func New(users user.Store, issuer Issuer, opts Options) (*Service, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BcryptCost == 0 {
		opts.BcryptCost = bcrypt.DefaultCost
	}
	if opts.BaseDelay == 0 {
		opts.BaseDelay = 200 * time.Millisecond
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = 5 * time.Second
	}
	if opts.Window == 0 {
		opts.Window = 15 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = sleepCtx
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("nops-dummy-password"), opts.BcryptCost)
	if err != nil {
		return nil, fmt.Errorf("prepare dummy hash: %w", err)
	}
	s := &Service{users: users, issuer: issuer, opts: opts, dummy: dummy, recent: map[string]failureRecord{}}
	if opts.Meter != nil {
		s.failures, err = opts.Meter.Int64Counter("nops.auth.login.failures",
			metric.WithDescription("Failed password logins."), metric.WithUnit("{failure}"))
		if err != nil {
			return nil, fmt.Errorf("create login failure counter: %w", err)
		}
	}
	return s, nil
}

// Token is an issued access token.
type Token struct {
	AccessToken string
	ExpiresAt   time.Time
	Scopes      []string
}

// errBadLogin is the one answer to every failed login, so callers cannot tell an unknown user
// from a wrong password.
func errBadLogin(cause error) error {
	return errs.Wrap(errs.Unauthenticated, cause, "invalid username or password")
}

// Login checks a username and password and issues a token. scope, when not empty, is a
// space-separated subset of the scopes the user's roles grant.
func (s *Service) Login(ctx context.Context, username, password, scope string) (Token, error) {
	if len(password) > 72 {
		return Token{}, errs.Field("body.password", "must be at most 72 bytes")
	}
	u, err := s.users.UserByUsername(ctx, username)
	switch {
	case errs.Is(err, errs.NotFound):
		_ = bcrypt.CompareHashAndPassword(s.dummy, []byte(password))
		return Token{}, s.fail(ctx, username, "unknown_user", err)
	case err != nil:
		return Token{}, fmt.Errorf("login %q: %w", username, err)
	}
	if err := bcrypt.CompareHashAndPassword(u.PasswordHash, []byte(password)); err != nil {
		return Token{}, s.fail(ctx, username, "bad_password", err)
	}
	granted := rbac.ScopesFor(u.Roles)
	scopes := granted
	if strings.TrimSpace(scope) != "" {
		scopes = nil
		for _, sc := range strings.Fields(scope) {
			if !slices.Contains(granted, sc) {
				return Token{}, errs.Field("body.scope", fmt.Sprintf("scope %q is not granted to this user", sc))
			}
			if !slices.Contains(scopes, sc) {
				scopes = append(scopes, sc)
			}
		}
	}
	s.forget(username)
	raw, exp, err := s.issuer.Issue(ctx, token.Claims{Subject: u.ID, Tenant: u.TenantID, Roles: u.Roles, Scopes: scopes})
	if err != nil {
		return Token{}, fmt.Errorf("issue token for %s: %w", u.ID, err)
	}
	s.opts.Logger.InfoContext(ctx, "login succeeded", "subject", u.ID)
	return Token{AccessToken: raw, ExpiresAt: exp, Scopes: scopes}, nil
}

// fail records a failed login, waits the growing delay, and returns the uniform error.
func (s *Service) fail(ctx context.Context, username, reason string, cause error) error {
	n := s.record(username)
	if s.failures != nil {
		s.failures.Add(ctx, 1, metric.WithAttributeSet(reasonAttr(reason)))
	}
	s.opts.Logger.WarnContext(ctx, "login failed", "reason", reason, "recent_failures", n)
	s.opts.Sleep(ctx, s.delay(n))
	return errBadLogin(cause)
}

// delay doubles with each recent failure: base, 2·base, 4·base … up to MaxDelay.
func (s *Service) delay(failures int) time.Duration {
	d := s.opts.BaseDelay
	for i := 1; i < failures && d < s.opts.MaxDelay; i++ {
		d *= 2
	}
	return min(d, s.opts.MaxDelay)
}

func (s *Service) record(username string) int {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recent[username]
	if now.Sub(r.last) > s.opts.Window {
		r.count = 0
	}
	r.count++
	r.last = now
	if len(s.recent) >= maxTracked {
		for k, v := range s.recent {
			if now.Sub(v.last) > s.opts.Window {
				delete(s.recent, k)
			}
		}
		if len(s.recent) >= maxTracked {
			clear(s.recent) // better to forget than to grow without bound under a flood
		}
	}
	s.recent[username] = r
	return r.count
}

func (s *Service) forget(username string) {
	s.mu.Lock()
	delete(s.recent, username)
	s.mu.Unlock()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// HashPassword returns the bcrypt hash of password at cost (0: default).
func HashPassword(password string, cost int) ([]byte, error) {
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if len(password) > 72 {
		return nil, errors.New("password longer than 72 bytes")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	return h, nil
}

// Bootstrap makes sure the SUPER_ADMIN user "admin" exists. On first start it is created with
// password, or, when password is empty, with a random one written once to out (never to the log).
// When admin already exists nothing changes; a configured password that differs from the stored
// one is reported as a warning, since it has no effect after first start.
func Bootstrap(ctx context.Context, users user.Store, password string, cost int, out io.Writer, logger *slog.Logger, now time.Time) error {
	existing, err := users.UserByUsername(ctx, user.BootstrapAdmin)
	switch {
	case err == nil:
		if password != "" && bcrypt.CompareHashAndPassword(existing.PasswordHash, []byte(password)) != nil {
			logger.WarnContext(ctx, "NOPS_BOOTSTRAP_ADMIN_PASSWORD differs from the stored admin password and is ignored: it only applies at first start")
		}
		return nil
	case !errs.Is(err, errs.NotFound):
		return fmt.Errorf("look up bootstrap admin: %w", err)
	}
	generated := password == ""
	if generated {
		b := make([]byte, 18)
		if _, err := rand.Read(b); err != nil {
			return fmt.Errorf("generate admin password: %w", err)
		}
		password = base64.RawURLEncoding.EncodeToString(b)
	}
	hash, err := HashPassword(password, cost)
	if err != nil {
		return err
	}
	now = now.UTC()
	u := user.User{ID: NewUserID(), Username: user.BootstrapAdmin, PasswordHash: hash,
		Roles: []string{user.RoleSuperAdmin}, CreatedAt: now, UpdatedAt: now}
	if err := users.CreateUser(ctx, u); err != nil {
		if errs.Is(err, errs.Conflict) {
			return nil // another replica created it first
		}
		return fmt.Errorf("create bootstrap admin: %w", err)
	}
	logger.InfoContext(ctx, "bootstrap SUPER_ADMIN created", "username", user.BootstrapAdmin, "subject", u.ID, "generated", generated)
	if generated {
		fmt.Fprintf(out, "\nNOPS Kernel: created the SUPER_ADMIN user %q with the password\n\n    %s\n\nIt is shown this once only. Set NOPS_BOOTSTRAP_ADMIN_PASSWORD before the first start to choose it.\n\n", user.BootstrapAdmin, password)
	}
	return nil
}
