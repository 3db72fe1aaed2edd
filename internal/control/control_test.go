package control_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/store/sqlite"
	"github.com/nops-kernel/nops/internal/tenant"
	"github.com/nops-kernel/nops/internal/user"
)

// faultyStore is the real SQLite store with one injected failure: the outbox write.
type faultyStore struct {
	*sqlite.Store
	failOutbox bool
}

func (f *faultyStore) AddToOutbox(ctx context.Context, r events.OutboxRecord) error {
	if f.failOutbox {
		return errors.New("injected outbox failure")
	}
	return f.Store.AddToOutbox(ctx, r)
}

func setup(t *testing.T) (*control.Control, *faultyStore, context.Context) {
	t.Helper()
	return setupWith(t, control.Options{})
}

func setupWith(t *testing.T, opts control.Options) (*control.Control, *faultyStore, context.Context) {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "nops.db")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.MigrateUp(ctx); err != nil {
		t.Fatal(err)
	}
	fs := &faultyStore{Store: st}
	tenants, err := tenant.NewService(fs, tenant.Config{})
	if err != nil {
		t.Fatal(err)
	}
	agents, err := registry.NewService(fs, registry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	pepper, err := apikey.PepperFromConfig("v1", "0123456789abcdef0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	peppers, err := apikey.NewPeppers(pepper)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := apikey.NewService(fs, peppers, time.Now, slog.New(slog.DiscardHandler), apikey.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := control.New(fs, tenants, agents, keys, opts)
	ctx = principal.NewContext(ctx, principal.Principal{Subject: "usr_test", Roles: []string{user.RoleSuperAdmin}})
	ctx = control.WithRequest(ctx, control.Request{IP: "192.0.2.7", RequestID: "req_test"})
	return c, fs, ctx
}

func treeSize(t *testing.T, st *faultyStore, tree string) int64 {
	t.Helper()
	n, err := st.TreeSize(t.Context(), tree)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMutationCommitsChangeEventAndAuditTogether(t *testing.T) {
	c, st, ctx := setup(t)
	ten, err := c.CreateTenant(ctx, tenant.CreateInput{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.RegisterAgent(ctx, ten.ID, registry.AgentInput{Name: "a", Version: "1.0.0", Endpoint: "https://a.example"})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := st.Records(ctx, ten.ID, 0, 1, 10)
	if err != nil || len(entries) != 1 {
		t.Fatalf("tenant tree: %v %v", entries, err)
	}
	rec, err := entries[0].Record()
	if err != nil {
		t.Fatal(err)
	}
	if rec.Action != control.ActionAgentRegister || rec.Resource != "agents/"+a.ID || rec.Actor.Principal != "usr_test" ||
		rec.Actor.IP != "192.0.2.7" || rec.Actor.RequestID != "req_test" || !rec.Decision.Allowed {
		t.Fatalf("audit record %+v", rec)
	}
	pending, err := st.PendingOutbox(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 2 || pending[0].Type != events.TypeTenantCreated || pending[1].Type != events.TypeAgentRegistered {
		t.Fatalf("outbox %+v", pending)
	}
}

// TestFailedBookkeepingRollsBackTheChange injects a failure after the domain write: the agent
// must not exist, and no audit record may be left behind.
func TestFailedBookkeepingRollsBackTheChange(t *testing.T) {
	c, st, ctx := setup(t)
	ten, err := c.CreateTenant(ctx, tenant.CreateInput{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	st.failOutbox = true
	_, err = c.RegisterAgent(ctx, ten.ID, registry.AgentInput{Name: "doomed", Version: "1.0.0", Endpoint: "https://a.example"})
	if err == nil {
		t.Fatal("RegisterAgent succeeded although its event could not be written")
	}
	st.failOutbox = false
	page, err := c.Agents.List(ctx, ten.ID, registry.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Agents) != 0 {
		t.Fatalf("the agent survived the failed transaction: %+v", page.Agents)
	}
	if n := treeSize(t, st, ten.ID); n != 0 {
		t.Fatalf("tenant audit tree has %d records, want 0", n)
	}
}

func TestDenyRecordsARefusal(t *testing.T) {
	c, st, _ := setup(t)
	ctx := control.WithRequest(t.Context(), control.Request{RequestID: "req_anon"})
	if err := c.Deny(ctx, "", control.ActionAuthenticate, "GET /v1/agents", "invalid credential"); err != nil {
		t.Fatal(err)
	}
	entries, err := st.Records(ctx, audit.GlobalTree, 0, 1, 10)
	if err != nil || len(entries) != 1 {
		t.Fatalf("global tree: %v %v", entries, err)
	}
	rec, _ := entries[0].Record()
	if rec.Decision.Allowed || rec.Actor.Principal != "" || rec.Actor.RequestID != "req_anon" {
		t.Fatalf("denial record %+v: want a refusal with no principal", rec)
	}
	// Domain errors pass through unchanged.
	_, err = c.RegisterAgent(principal.NewContext(ctx, principal.Principal{Subject: "x"}), "ten_01hzzzzzzzzzzzzzzzzzzzzzzz", registry.AgentInput{Name: "a", Version: "1.0.0", Endpoint: "https://a.example"})
	if errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("register in an unknown tenant: %v", err)
	}
}

// TestEnqueuedAfterCommitOnly: the relay is woken after a committed change with an event (a
// mutation, a heartbeat), and not after one that rolled back.
func TestEnqueuedAfterCommitOnly(t *testing.T) {
	var woken atomic.Int64
	c, st, ctx := setupWith(t, control.Options{Enqueued: func() { woken.Add(1) }})
	ten, err := c.CreateTenant(ctx, tenant.CreateInput{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if n := woken.Load(); n != 1 {
		t.Fatalf("after a committed mutation Enqueued ran %d times, want 1", n)
	}
	a, err := c.RegisterAgent(ctx, ten.ID, registry.AgentInput{Name: "a", Version: "1.0.0", Endpoint: "https://a.example"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Heartbeat(ctx, ten.ID, a.ID, registry.HeartbeatInput{}); err != nil {
		t.Fatal(err)
	}
	if n := woken.Load(); n != 3 {
		t.Fatalf("after a registration and a heartbeat Enqueued ran %d times in all, want 3", n)
	}
	st.failOutbox = true
	if _, err := c.RegisterAgent(ctx, ten.ID, registry.AgentInput{Name: "b", Version: "1.0.0", Endpoint: "https://b.example"}); err == nil {
		t.Fatal("registration with a failing outbox succeeded")
	}
	if n := woken.Load(); n != 3 {
		t.Fatalf("a rolled-back mutation ran Enqueued (%d calls)", n)
	}
}
