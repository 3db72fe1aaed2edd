package apikey

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/user"
)

// memStore is an in-memory Store that keeps the documented contract, with failure hooks.
type memStore struct {
	mu     sync.Mutex
	keys   map[string]Key
	agents map[string]string // agent ID → tenant ID
	// err, when set, is returned by every method.
	err error
	// staleGet, when set, is returned by APIKey instead of the stored key: a read that a
	// concurrent writer has since overtaken.
	staleGet *Key
	touches  [][]Use
}

var _ Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{keys: map[string]Key{}, agents: map[string]string{"agt_a1": "ten_a"}}
}

func cloneKey(k Key) Key {
	k.Scopes = slices.Clone(k.Scopes)
	k.Hash = slices.Clone(k.Hash)
	k.PrevHash = slices.Clone(k.PrevHash)
	return k
}

func (m *memStore) CreateAPIKey(_ context.Context, k Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	if _, ok := m.keys[k.ID]; ok {
		return errs.New(errs.Conflict, "api key %s exists", k.ID)
	}
	if k.AgentID != "" && m.agents[k.AgentID] != k.TenantID {
		return errs.New(errs.NotFound, "agent not found")
	}
	m.keys[k.ID] = cloneKey(k)
	return nil
}

func (m *memStore) APIKey(_ context.Context, id string) (Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return Key{}, m.err
	}
	if m.staleGet != nil {
		return cloneKey(*m.staleGet), nil
	}
	k, ok := m.keys[id]
	if !ok {
		return Key{}, errs.New(errs.NotFound, "api key not found")
	}
	return cloneKey(k), nil
}

func (m *memStore) ListAPIKeys(_ context.Context, tenantID, after string, limit int) ([]Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	var out []Key
	for _, k := range m.keys {
		if k.TenantID == tenantID && k.ID > after {
			out = append(out, cloneKey(k))
		}
	}
	slices.SortFunc(out, func(a, b Key) int { return strings.Compare(a.ID, b.ID) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (m *memStore) RotateAPIKey(_ context.Context, id string, expectHash []byte, r Rotation) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	k, ok := m.keys[id]
	switch {
	case !ok:
		return errs.New(errs.NotFound, "api key not found")
	case !bytes.Equal(k.Hash, expectHash):
		return errs.New(errs.Conflict, "api key %s changed", id)
	}
	k.Hash, k.PepperVersion = slices.Clone(r.Hash), r.PepperVersion
	k.PrevHash, k.PrevPepperVersion, k.PrevValidUntil = slices.Clone(r.PrevHash), r.PrevPepperVersion, r.PrevValidUntil
	k.RotateBy = time.Time{}
	m.keys[id] = k
	return nil
}

func (m *memStore) RevokeAPIKey(_ context.Context, id string, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	k, ok := m.keys[id]
	switch {
	case !ok:
		return errs.New(errs.NotFound, "api key not found")
	case !k.RevokedAt.IsZero():
		return errs.New(errs.Conflict, "api key %s already revoked", id)
	}
	k.RevokedAt = at
	m.keys[id] = k
	return nil
}

func (m *memStore) RequireAPIKeyRotation(_ context.Context, id string, by time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	k, ok := m.keys[id]
	switch {
	case !ok:
		return errs.New(errs.NotFound, "api key not found")
	case !k.RevokedAt.IsZero():
		return errs.New(errs.Conflict, "api key %s is revoked", id)
	case k.RotateBy.IsZero() || k.RotateBy.After(by):
		k.RotateBy = by
		m.keys[id] = k
	}
	return nil
}

func (m *memStore) ListAPIKeysDue(_ context.Context, tenantID string, before time.Time, after string, limit int) ([]Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	var out []Key
	for _, k := range m.keys {
		due := (!k.ExpiresAt.IsZero() && k.ExpiresAt.Before(before)) || (!k.RotateBy.IsZero() && k.RotateBy.Before(before))
		if (tenantID == "" || k.TenantID == tenantID) && k.ID > after && k.RevokedAt.IsZero() && due {
			out = append(out, cloneKey(k))
		}
	}
	slices.SortFunc(out, func(a, b Key) int { return strings.Compare(a.ID, b.ID) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (m *memStore) TouchAPIKeys(_ context.Context, uses []Use) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	m.touches = append(m.touches, slices.Clone(uses))
	for _, u := range uses {
		if k, ok := m.keys[u.ID]; ok && u.At.After(k.LastUsedAt) {
			k.LastUsedAt = u.At
			m.keys[u.ID] = k
		}
	}
	return nil
}

func (m *memStore) get(t *testing.T, id string) Key {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.keys[id]
	if !ok {
		t.Fatalf("key %s not stored", id)
	}
	return cloneKey(k)
}

func (m *memStore) setErr(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logBuffer is a log sink safe for concurrent writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Principals used by the tests.
var (
	adminA = principal.Principal{Subject: "usr_admin_a", Tenant: "ten_a", Roles: []string{user.RoleAdmin},
		Scopes: []string{"agents:read", "agents:write", "keys:write"}}
	viewerA = principal.Principal{Subject: "usr_viewer_a", Tenant: "ten_a", Roles: []string{user.RoleViewer},
		Scopes: []string{"agents:read"}}
	adminB = principal.Principal{Subject: "usr_admin_b", Tenant: "ten_b", Roles: []string{user.RoleAdmin},
		Scopes: []string{"agents:read", "agents:write"}}
	superAdmin = principal.Principal{Subject: "usr_root", Roles: []string{user.RoleSuperAdmin},
		Scopes: []string{"agents:read", "agents:write", "system:read", "system:write"}}
)

func as(t testing.TB, p principal.Principal) context.Context {
	return principal.NewContext(t.Context(), p)
}

func testPepper(t testing.TB, version string) Pepper {
	t.Helper()
	p, err := PepperFromConfig(version, strings.Repeat(version[len(version)-1:], 8)+"-pepper-for-tests-"+version+"-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func peppersOf(t testing.TB, current Pepper, older ...Pepper) Peppers {
	t.Helper()
	ps, err := NewPeppers(current, older...)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

// harness is a Service on a memStore with a settable clock and a captured log.
type harness struct {
	svc   *Service
	store *memStore
	clk   *clock
	log   *logBuffer
}

func newHarness(t testing.TB, peppers ...Pepper) *harness {
	t.Helper()
	if len(peppers) == 0 {
		peppers = []Pepper{testPepper(t, "v1")}
	}
	h := &harness{store: newMemStore(), clk: newClock(), log: &logBuffer{}}
	h.svc = h.service(t, peppersOf(t, peppers[0], peppers[1:]...), Options{})
	return h
}

// service returns another Service on the same store, clock and log.
func (h *harness) service(t testing.TB, ps Peppers, opts Options) *Service {
	t.Helper()
	svc, err := NewService(h.store, ps, h.clk.Now, h.log.logger(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func (h *harness) create(t testing.TB, in CreateInput) (Key, string) {
	t.Helper()
	if in.Name == "" {
		in.Name = "ci deploy"
	}
	if in.Role == "" {
		in.Role = user.RoleOperator
	}
	k, raw, err := h.svc.Create(as(t, adminA), in)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return k, raw
}

// requireRejected fails unless err is the one uniform verification error.
func requireRejected(t testing.TB, err error) {
	t.Helper()
	e := errs.As(err)
	if e == nil || e.Code != errs.Unauthenticated || e.Message != invalidKey || len(e.Fields) != 0 {
		t.Fatalf("error = %#v, want errs.Unauthenticated %q without fields", err, invalidKey)
	}
}

// requireField fails unless err is an errs.Invalid naming exactly field.
func requireField(t testing.TB, err error, field string) {
	t.Helper()
	e := errs.As(err)
	if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != field {
		t.Fatalf("error = %v, want an invalid %s", err, field)
	}
}

func requireCode(t testing.TB, err error, code errs.Code) {
	t.Helper()
	if got := errs.CodeOf(err); got != code {
		t.Fatalf("error = %v (code %q), want code %q", err, got, code)
	}
}
