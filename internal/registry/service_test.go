package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/tenant"
)

const (
	tenantA = "ten_01jz8y3w6v6r3b5q8x9k2m4naa"
	tenantB = "ten_01jz8y3w6v6r3b5q8x9k2m4nbb"
)

// clock is a manual clock. Every reading advances it by a millisecond so registrations are
// strictly ordered; advance moves it further.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.now
	c.now = c.now.Add(time.Millisecond)
	return t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type env struct {
	svc   *registry.Service
	store *fakeStore
	clk   *clock
}

func newEnv(t *testing.T) env {
	t.Helper()
	// Nanoseconds and a local zone show the service stores UTC at microsecond precision.
	clk := &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 999, time.FixedZone("x", 3600))}
	store := newFakeStore(tenantA, tenantB)
	svc, err := registry.NewService(store, registry.Config{TTL: testTTL, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return env{svc: svc, store: store, clk: clk}
}

func (e env) register(t *testing.T, tenantID, name string, mutate ...func(*registry.AgentInput)) registry.Agent {
	t.Helper()
	in := validInput()
	in.Name = name
	for _, m := range mutate {
		m(&in)
	}
	a, err := e.svc.Register(t.Context(), tenantID, in)
	if err != nil {
		t.Fatalf("Register(%s, %s): %v", tenantID, name, err)
	}
	return a
}

func requireCode(t *testing.T, err error, code errs.Code) {
	t.Helper()
	if got := errs.CodeOf(err); got != code {
		t.Fatalf("err = %v (code %q), want %q", err, got, code)
	}
}

// agentsEqual compares agents, treating schemas as JSON values rather than bytes (the store
// compacts them, as a database may).
var agentsEqual = cmp.Options{
	cmp.Comparer(func(a, b json.RawMessage) bool {
		if len(a) == 0 || len(b) == 0 {
			return len(a) == len(b)
		}
		var x, y any
		return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && cmp.Equal(x, y)
	}),
}

func TestNewService(t *testing.T) {
	store := newFakeStore()
	if _, err := registry.NewService(nil, registry.Config{}); err == nil {
		t.Error("nil store accepted")
	}
	if _, err := registry.NewService(store, registry.Config{TTL: registry.TTLs{Stale: time.Minute, Zombie: time.Second}}); err == nil {
		t.Error("zombie TTL below stale TTL accepted")
	}
	if _, err := registry.NewService(store, registry.Config{MaxRoutable: -1}); err == nil {
		t.Error("negative MaxRoutable accepted")
	}
	svc, err := registry.NewService(store, registry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.TTLs() != registry.DefaultTTLs() {
		t.Errorf("zero Config TTLs = %+v, want defaults", svc.TTLs())
	}
}

func TestRegister(t *testing.T) {
	e := newEnv(t)
	in := validInput()
	in.Version = "v1.2.3+build.9"
	got, err := e.svc.Register(t.Context(), tenantA, in)
	if err != nil {
		t.Fatal(err)
	}
	if !registry.ValidID(got.ID) {
		t.Errorf("ID %q is not an agent ID", got.ID)
	}
	now := time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC)
	want := registry.Agent{
		ID:           got.ID,
		TenantID:     tenantA,
		Name:         in.Name,
		Version:      "1.2.3",
		Capabilities: in.Capabilities,
		Endpoint:     in.Endpoint,
		Labels:       in.Labels,
		Metadata:     in.Metadata,
		Criticality:  registry.CriticalityEssential,
		Status:       registry.StatusHealthy,
		HeartbeatAt:  now,
		CreatedAt:    now,
		UpdatedAt:    now,
		Revision:     1,
	}
	if diff := cmp.Diff(want, got, agentsEqual); diff != "" {
		t.Errorf("Register (-want +got):\n%s", diff)
	}
	stored, ok := e.store.stored(tenantA, got.ID)
	if !ok {
		t.Fatal("agent not stored")
	}
	if diff := cmp.Diff(got, stored, agentsEqual); diff != "" {
		t.Errorf("stored (-returned +stored):\n%s", diff)
	}
	read, err := e.svc.Get(t.Context(), tenantA, got.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, read, agentsEqual); diff != "" {
		t.Errorf("Get (-registered +read):\n%s", diff)
	}
}

func TestRegisterRejects(t *testing.T) {
	e := newEnv(t)
	first := e.register(t, tenantA, "dup")

	t.Run("duplicate name in the tenant", func(t *testing.T) {
		_, err := e.svc.Register(t.Context(), tenantA, func() registry.AgentInput { in := validInput(); in.Name = "dup"; return in }())
		requireCode(t, err, errs.Conflict)
		if m := errs.As(err).Message; m != `an agent named "dup" already exists in this tenant` {
			t.Errorf("message = %q", m)
		}
	})
	t.Run("same name in another tenant is fine", func(t *testing.T) {
		b := e.register(t, tenantB, "dup")
		if b.ID == first.ID || b.TenantID != tenantB {
			t.Errorf("agent in tenant B = %+v", b)
		}
	})
	t.Run("invalid input writes nothing", func(t *testing.T) {
		writes := e.store.writes
		in := validInput()
		in.Endpoint = "https://u:p@example.com"
		_, err := e.svc.Register(t.Context(), tenantA, in)
		if diff := cmp.Diff([]string{"body.endpoint"}, fieldNames(t, err)); diff != "" {
			t.Errorf("fields (-want +got):\n%s", diff)
		}
		if e.store.writes != writes {
			t.Error("store written")
		}
	})
	t.Run("unknown tenant", func(t *testing.T) {
		_, err := e.svc.Register(t.Context(), "ten_01jz8y3w6v6r3b5q8x9k2m4ncc", validInput())
		requireCode(t, err, errs.NotFound)
	})
	t.Run("missing or malformed tenant", func(t *testing.T) {
		for _, ten := range []string{"", "acme", "agt_01jz8y3w6v6r3b5q8x9k2m4naa"} {
			_, err := e.svc.Register(t.Context(), ten, validInput())
			requireCode(t, err, errs.Invalid)
		}
	})
}

func TestTenantIsolation(t *testing.T) {
	e := newEnv(t)
	a := e.register(t, tenantA, "secret")
	ctx := t.Context()

	// Every operation by tenant B on tenant A's agent ID is NotFound, and changes nothing.
	ops := map[string]func() error{
		"get": func() error { _, err := e.svc.Get(ctx, tenantB, a.ID); return err },
		"update": func() error {
			_, err := e.svc.Update(ctx, tenantB, a.ID, a.ETag(), validInput())
			return err
		},
		"update with *": func() error {
			_, err := e.svc.Update(ctx, tenantB, a.ID, "*", validInput())
			return err
		},
		"delete":           func() error { _, err := e.svc.Delete(ctx, tenantB, a.ID, ""); return err },
		"delete with etag": func() error { _, err := e.svc.Delete(ctx, tenantB, a.ID, a.ETag()); return err },
		"heartbeat": func() error {
			_, err := e.svc.Heartbeat(ctx, tenantB, a.ID, registry.HeartbeatInput{})
			return err
		},
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			err := op()
			requireCode(t, err, errs.NotFound)
			if m := errs.As(err).Message; m != "agent not found" && m != fmt.Sprintf("agent %s not found", a.ID) {
				t.Errorf("message %q says more than not found", m)
			}
		})
	}
	stored, _ := e.store.stored(tenantA, a.ID)
	if diff := cmp.Diff(a, stored, agentsEqual); diff != "" {
		t.Errorf("tenant A's agent changed (-before +after):\n%s", diff)
	}
	p, err := e.svc.List(ctx, tenantB, registry.Filter{})
	if err != nil || len(p.Agents) != 0 {
		t.Errorf("tenant B lists %v, %v; want nothing", p.Agents, err)
	}
	r, err := e.svc.Routable(ctx, tenantB, "text.summarize")
	if err != nil || len(r) != 0 {
		t.Errorf("tenant B routes to %v, %v; want nothing", r, err)
	}

	t.Run("a store that ignores the tenant still leaks nothing", func(t *testing.T) {
		e.store.leak = true
		defer func() { e.store.leak = false }()
		_, err := e.svc.Get(ctx, tenantB, a.ID)
		requireCode(t, err, errs.NotFound)
		p, err := e.svc.List(ctx, tenantB, registry.Filter{})
		if err != nil || len(p.Agents) != 0 {
			t.Errorf("List = %v, %v; want nothing", p.Agents, err)
		}
		r, err := e.svc.Routable(ctx, tenantB, "text.summarize")
		if err != nil || len(r) != 0 {
			t.Errorf("Routable = %v, %v; want nothing", r, err)
		}
	})

	t.Run("malformed ids are not found without asking the store", func(t *testing.T) {
		for _, id := range []string{"", "x", "../" + a.ID, a.ID + "x", "ten_01jz8y3w6v6r3b5q8x9k2m4naa"} {
			_, err := e.svc.Get(ctx, tenantA, id)
			requireCode(t, err, errs.NotFound)
		}
	})
}

func TestGetDerivesStatus(t *testing.T) {
	e := newEnv(t)
	a := e.register(t, tenantA, "ager")
	for _, step := range []struct {
		advance time.Duration
		want    registry.Status
	}{
		{0, registry.StatusHealthy},
		{testTTL.Stale, registry.StatusStale},
		{testTTL.Zombie, registry.StatusZombie},
	} {
		e.clk.advance(step.advance)
		got, err := e.svc.Get(t.Context(), tenantA, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != step.want {
			t.Errorf("after %v: Status = %q, want %q", step.advance, got.Status, step.want)
		}
	}
	// Reads do not write: the stored status stays what was last announced.
	if s, _ := e.store.stored(tenantA, a.ID); s.Status != registry.StatusHealthy {
		t.Errorf("stored status = %q, want healthy", s.Status)
	}
}

func names(as []registry.Agent) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Name)
	}
	return out
}

func TestList(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	var all []string
	for i := range 7 {
		name := fmt.Sprintf("a%d", i)
		all = append(all, name)
		e.register(t, tenantA, name, func(in *registry.AgentInput) {
			in.Labels = map[string]string{"idx": fmt.Sprint(i), "parity": []string{"even", "odd"}[i%2]}
			if i < 3 {
				in.Capabilities = []registry.Capability{{Name: "img.resize"}}
			}
		})
	}
	e.register(t, tenantB, "b0")

	listAll := func(t *testing.T, f registry.Filter) []string {
		t.Helper()
		var got []string
		for range 20 {
			p, err := e.svc.List(ctx, tenantA, f)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, names(p.Agents)...)
			if p.NextCursor == "" {
				return got
			}
			f.Cursor = p.NextCursor
		}
		t.Fatal("pagination does not end")
		return nil
	}

	t.Run("pages", func(t *testing.T) {
		for _, limit := range []int{1, 2, 3, 7, 8, 0} {
			if diff := cmp.Diff(all, listAll(t, registry.Filter{Limit: limit})); diff != "" {
				t.Errorf("limit %d (-want +got):\n%s", limit, diff)
			}
		}
		p, err := e.svc.List(ctx, tenantA, registry.Filter{Limit: 7})
		if err != nil || len(p.Agents) != 7 || p.NextCursor != "" {
			t.Errorf("exact page: %d agents, cursor %q, %v; want 7 and none", len(p.Agents), p.NextCursor, err)
		}
		p, err = e.svc.List(ctx, tenantA, registry.Filter{Limit: 3})
		if err != nil || len(p.Agents) != 3 || p.NextCursor == "" {
			t.Errorf("first page: %d agents, cursor %q, %v", len(p.Agents), p.NextCursor, err)
		}
		if e.store.lastListQuery.Limit != 4 {
			t.Errorf("unfiltered page of 3 read %d rows, want 4", e.store.lastListQuery.Limit)
		}
	})

	t.Run("capability", func(t *testing.T) {
		got := listAll(t, registry.Filter{Capability: "img.resize", Limit: 2})
		if diff := cmp.Diff([]string{"a0", "a1", "a2"}, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		if e.store.lastListQuery.Capability != "img.resize" {
			t.Error("capability filter not pushed to the store")
		}
		e.store.sloppy = true
		defer func() { e.store.sloppy = false }()
		if diff := cmp.Diff([]string{"a0", "a1", "a2"}, listAll(t, registry.Filter{Capability: "img.resize", Limit: 2})); diff != "" {
			t.Errorf("from a store ignoring the capability (-want +got):\n%s", diff)
		}
	})

	t.Run("selector", func(t *testing.T) {
		sel, err := registry.ParseSelector("parity=odd,idx!=3")
		if err != nil {
			t.Fatal(err)
		}
		got := listAll(t, registry.Filter{Selector: sel, Limit: 1})
		if diff := cmp.Diff([]string{"a1", "a5"}, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})

	t.Run("status", func(t *testing.T) {
		// Heartbeat a0 and a4 later, so only they are healthy once the rest have gone stale.
		e.clk.advance(testTTL.Stale / 2)
		for _, n := range []string{"a0", "a4"} {
			p, _ := e.svc.List(ctx, tenantA, registry.Filter{Limit: registry.MaxLimit})
			id := p.Agents[slices.IndexFunc(p.Agents, func(a registry.Agent) bool { return a.Name == n })].ID
			if _, err := e.svc.Heartbeat(ctx, tenantA, id, registry.HeartbeatInput{}); err != nil {
				t.Fatal(err)
			}
		}
		e.clk.advance(testTTL.Stale / 2)
		healthy := listAll(t, registry.Filter{Status: []registry.Status{registry.StatusHealthy}})
		if diff := cmp.Diff([]string{"a0", "a4"}, healthy); diff != "" {
			t.Errorf("healthy (-want +got):\n%s", diff)
		}
		stale := listAll(t, registry.Filter{Status: []registry.Status{registry.StatusStale, registry.StatusZombie}, Limit: 2})
		if diff := cmp.Diff([]string{"a1", "a2", "a3", "a5", "a6"}, stale); diff != "" {
			t.Errorf("stale or zombie (-want +got):\n%s", diff)
		}
		p, _ := e.svc.List(ctx, tenantA, registry.Filter{Status: []registry.Status{registry.StatusStale}, Limit: 1})
		if p.Agents[0].Status != registry.StatusStale {
			t.Errorf("listed agent carries status %q, want the derived stale", p.Agents[0].Status)
		}
	})

	t.Run("bad filter fields are all named", func(t *testing.T) {
		_, err := e.svc.List(ctx, tenantA, registry.Filter{
			Capability: "Bad Cap", Status: []registry.Status{"healthy", "dead"}, Limit: registry.MaxLimit + 1, Cursor: "%%",
		})
		want := []string{"query.limit", "query.capability", "query.status", "query.cursor"}
		if diff := cmp.Diff(want, fieldNames(t, err)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		_, err = e.svc.List(ctx, tenantA, registry.Filter{Limit: -1})
		if diff := cmp.Diff([]string{"query.limit"}, fieldNames(t, err)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
		_, err = e.svc.List(ctx, "", registry.Filter{})
		requireCode(t, err, errs.Invalid)
	})
}

// TestListScanBudget: a selective filter over many agents stops after MaxListScan rows with a
// short page and a cursor, and following the cursors finds every match.
func TestListScanBudget(t *testing.T) {
	e := newEnv(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	total := registry.MaxListScan + 300
	var want []string
	for i := range total {
		a := registry.Agent{
			ID:        fmt.Sprintf("agt_01jz8y3w6v6r3b5q8x%08d", i),
			TenantID:  tenantA,
			Name:      fmt.Sprintf("n%d", i),
			Labels:    map[string]string{},
			CreatedAt: base.Add(time.Duration(i) * time.Millisecond),
		}
		if i == 7 || i == total-5 {
			a.Labels["rare"] = "yes"
			want = append(want, a.Name)
		}
		e.store.put(a)
	}
	sel, _ := registry.ParseSelector("rare=yes")
	p, err := e.svc.List(t.Context(), tenantA, registry.Filter{Selector: sel, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want[:1], names(p.Agents)); diff != "" || p.NextCursor == "" {
		t.Fatalf("first page %v, cursor %q; want [%s] and a cursor (-want +got):\n%s", names(p.Agents), p.NextCursor, want[0], diff)
	}
	if calls := e.store.listCalls; calls > registry.MaxListScan/200+1 {
		t.Errorf("first page took %d store calls", calls)
	}
	p2, err := e.svc.List(t.Context(), tenantA, registry.Filter{Selector: sel, Limit: 10, Cursor: p.NextCursor})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want[1:], names(p2.Agents)); diff != "" || p2.NextCursor != "" {
		t.Errorf("second page %v, cursor %q (-want +got):\n%s", names(p2.Agents), p2.NextCursor, diff)
	}
}

func TestUpdate(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a := e.register(t, tenantA, "upd")
	e.register(t, tenantA, "taken")
	e.clk.advance(time.Second)
	// A heartbeat in between must neither change the ETag nor be undone by the update.
	if _, err := e.svc.Heartbeat(ctx, tenantA, a.ID, registry.HeartbeatInput{InFlight: ptr[int64](4)}); err != nil {
		t.Fatal(err)
	}
	hb, _ := e.store.stored(tenantA, a.ID)

	newInput := func() registry.AgentInput {
		in := a.Input()
		in.Version = "v1.3.0"
		in.Labels = map[string]string{"env": "staging"}
		return in
	}

	t.Run("If-Match is required", func(t *testing.T) {
		_, err := e.svc.Update(ctx, tenantA, a.ID, "", newInput())
		if !errors.Is(err, registry.ErrPreconditionRequired) {
			t.Fatalf("err = %v, want ErrPreconditionRequired", err)
		}
		if diff := cmp.Diff([]string{"header.If-Match"}, fieldNames(t, err)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("a stale If-Match fails the precondition", func(t *testing.T) {
		stale := registry.Agent{ID: a.ID, Revision: a.Revision + 5}.ETag()
		_, err := e.svc.Update(ctx, tenantA, a.ID, stale, newInput())
		requireCode(t, err, errs.PreconditionFailed)
		if !errors.Is(err, registry.ErrPreconditionFailed) {
			t.Errorf("err = %v, want ErrPreconditionFailed", err)
		}
	})
	t.Run("invalid input", func(t *testing.T) {
		in := newInput()
		in.Capabilities = []registry.Capability{{Name: "x"}, {Name: "y", InputSchema: json.RawMessage(`{"$ref":"http://169.254.169.254/"}`)}}
		_, err := e.svc.Update(ctx, tenantA, a.ID, a.ETag(), in)
		if diff := cmp.Diff([]string{"body.capabilities[1].input_schema"}, fieldNames(t, err)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("a taken name is a conflict, not a precondition failure", func(t *testing.T) {
		in := newInput()
		in.Name = "taken"
		_, err := e.svc.Update(ctx, tenantA, a.ID, a.ETag(), in)
		requireCode(t, err, errs.Conflict)
		if errors.Is(err, registry.ErrPreconditionFailed) || errs.As(err).Message != `an agent named "taken" already exists in this tenant` {
			t.Errorf("err = %v", err)
		}
	})
	if s, _ := e.store.stored(tenantA, a.ID); s.Revision != 1 {
		t.Fatalf("a failed update was written: revision %d", s.Revision)
	}

	var updated registry.Agent
	t.Run("success", func(t *testing.T) {
		writes := e.store.writes
		ch, err := e.svc.Update(ctx, tenantA, a.ID, a.ETag(), newInput())
		if err != nil {
			t.Fatal(err)
		}
		if !ch.Changed || e.store.writes != writes+1 {
			t.Errorf("Changed = %v, writes %d", ch.Changed, e.store.writes-writes)
		}
		wantBefore := hb
		if diff := cmp.Diff(wantBefore, ch.Before, agentsEqual); diff != "" {
			t.Errorf("Before (-want +got):\n%s", diff)
		}
		wantAfter := hb
		wantAfter.Version = "1.3.0"
		wantAfter.Labels = map[string]string{"env": "staging"}
		wantAfter.Revision = 2
		wantAfter.UpdatedAt = ch.After.UpdatedAt
		if diff := cmp.Diff(wantAfter, ch.After, agentsEqual); diff != "" {
			t.Errorf("After (-want +got):\n%s", diff)
		}
		if !ch.After.UpdatedAt.After(a.UpdatedAt) {
			t.Error("UpdatedAt not advanced")
		}
		if ch.After.ETag() == a.ETag() {
			t.Error("ETag unchanged by an update")
		}
		stored, _ := e.store.stored(tenantA, a.ID)
		if diff := cmp.Diff(ch.After, stored, agentsEqual); diff != "" {
			t.Errorf("stored (-after +stored):\n%s", diff)
		}
		// The old ETag is now stale.
		_, err = e.svc.Update(ctx, tenantA, a.ID, a.ETag(), newInput())
		if !errors.Is(err, registry.ErrPreconditionFailed) {
			t.Errorf("update with the old ETag: %v, want ErrPreconditionFailed", err)
		}
		updated = ch.After
	})

	t.Run("an unchanged registration writes nothing", func(t *testing.T) {
		writes := e.store.writes
		// Same content, different spelling: "v" prefix, schema white space, nil versus empty.
		in := updated.Input()
		in.Version = "v" + in.Version
		in.Capabilities[0].InputSchema = json.RawMessage(" " + string(in.Capabilities[0].InputSchema) + "\n")
		ch, err := e.svc.Update(ctx, tenantA, a.ID, updated.ETag(), in)
		if err != nil {
			t.Fatal(err)
		}
		if ch.Changed || e.store.writes != writes {
			t.Errorf("Changed = %v, %d writes; want an unchanged no-op", ch.Changed, e.store.writes-writes)
		}
		if diff := cmp.Diff(ch.Before, ch.After, agentsEqual); diff != "" {
			t.Errorf("Before and After differ:\n%s", diff)
		}
	})

	t.Run("If-Match * skips the version check", func(t *testing.T) {
		in := updated.Input()
		in.Criticality = registry.CriticalityCritical
		ch, err := e.svc.Update(ctx, tenantA, a.ID, "*", in)
		if err != nil || ch.After.Revision != 3 {
			t.Fatalf("Update(*) = %+v, %v", ch.After, err)
		}
		updated = ch.After
	})

	t.Run("a write that loses the race fails the precondition", func(t *testing.T) {
		e.store.beforeWrite = func() {
			e.store.beforeWrite = nil
			in := updated.Input()
			in.Endpoint = "https://racer.example.com"
			if _, err := e.svc.Update(context.WithoutCancel(ctx), tenantA, a.ID, updated.ETag(), in); err != nil {
				t.Error(err)
			}
		}
		in := updated.Input()
		in.Endpoint = "https://loser.example.com"
		_, err := e.svc.Update(ctx, tenantA, a.ID, updated.ETag(), in)
		if !errors.Is(err, registry.ErrPreconditionFailed) {
			t.Fatalf("err = %v, want ErrPreconditionFailed", err)
		}
		if s, _ := e.store.stored(tenantA, a.ID); s.Endpoint != "https://racer.example.com" {
			t.Errorf("endpoint = %q, want the winner's", s.Endpoint)
		}
	})

	t.Run("unknown agent", func(t *testing.T) {
		_, err := e.svc.Update(ctx, tenantA, someAgentID, "*", newInput())
		requireCode(t, err, errs.NotFound)
	})
}

func TestDelete(t *testing.T) {
	ctx := t.Context()

	t.Run("without If-Match", func(t *testing.T) {
		e := newEnv(t)
		a := e.register(t, tenantA, "del")
		got, err := e.svc.Delete(ctx, tenantA, a.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(a, got, agentsEqual); diff != "" {
			t.Errorf("deleted (-want +got):\n%s", diff)
		}
		if _, ok := e.store.stored(tenantA, a.ID); ok {
			t.Error("still stored")
		}
		_, err = e.svc.Delete(ctx, tenantA, a.ID, "")
		requireCode(t, err, errs.NotFound)
		_, err = e.svc.Get(ctx, tenantA, a.ID)
		requireCode(t, err, errs.NotFound)
	})

	t.Run("with If-Match", func(t *testing.T) {
		e := newEnv(t)
		a := e.register(t, tenantA, "del")
		stale := registry.Agent{ID: a.ID, Revision: 9}.ETag()
		_, err := e.svc.Delete(ctx, tenantA, a.ID, stale)
		if !errors.Is(err, registry.ErrPreconditionFailed) {
			t.Fatalf("stale If-Match: %v", err)
		}
		_, err = e.svc.Delete(ctx, tenantA, a.ID, "nonsense")
		requireCode(t, err, errs.Invalid)
		if _, ok := e.store.stored(tenantA, a.ID); !ok {
			t.Fatal("deleted despite the failed precondition")
		}
		if _, err := e.svc.Delete(ctx, tenantA, a.ID, a.ETag()); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a change during an unconditional delete is re-read", func(t *testing.T) {
		e := newEnv(t)
		a := e.register(t, tenantA, "del")
		e.store.beforeWrite = func() {
			e.store.beforeWrite = nil
			in := a.Input()
			in.Version = "9.9.9"
			if _, err := e.svc.Update(context.WithoutCancel(ctx), tenantA, a.ID, a.ETag(), in); err != nil {
				t.Error(err)
			}
		}
		got, err := e.svc.Delete(ctx, tenantA, a.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != "9.9.9" || got.Revision != 2 {
			t.Errorf("returned %s revision %d; want what was deleted: 9.9.9 revision 2", got.Version, got.Revision)
		}
	})

	t.Run("a change during a conditional delete fails it", func(t *testing.T) {
		e := newEnv(t)
		a := e.register(t, tenantA, "del")
		e.store.beforeWrite = func() {
			e.store.beforeWrite = nil
			in := a.Input()
			in.Version = "9.9.9"
			if _, err := e.svc.Update(context.WithoutCancel(ctx), tenantA, a.ID, a.ETag(), in); err != nil {
				t.Error(err)
			}
		}
		_, err := e.svc.Delete(ctx, tenantA, a.ID, a.ETag())
		if !errors.Is(err, registry.ErrPreconditionFailed) {
			t.Fatalf("err = %v, want ErrPreconditionFailed", err)
		}
	})

	t.Run("endless contention is a conflict", func(t *testing.T) {
		e := newEnv(t)
		a := e.register(t, tenantA, "del")
		// Every delete races with an update by someone else.
		e.store.beforeWrite = func() {
			cur, _ := e.store.stored(tenantA, a.ID)
			cur.Revision++
			e.store.put(cur)
		}
		_, err := e.svc.Delete(ctx, tenantA, a.ID, "")
		requireCode(t, err, errs.Conflict)
		if !errors.Is(err, registry.ErrPreconditionFailed) {
			t.Errorf("err = %v", err)
		}
	})
}

func TestHeartbeat(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a := e.register(t, tenantA, "hb")

	e.clk.advance(10 * time.Second)
	in := registry.HeartbeatInput{InFlight: ptr[int64](2), P50Ms: ptr(3.5), P95Ms: ptr(20.0), ErrorRate: ptr(0.0), FreeCapacity: ptr[int64](8)}
	r, err := e.svc.Heartbeat(ctx, tenantA, a.ID, in)
	if err != nil {
		t.Fatal(err)
	}
	at := a.CreatedAt.Add(10*time.Second + time.Millisecond)
	want := registry.HeartbeatResult{
		TenantID: tenantA, AgentID: a.ID, At: at, Load: in.Load(),
		Previous: registry.StatusHealthy, Current: registry.StatusHealthy,
	}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("Heartbeat (-want +got):\n%s", diff)
	}
	if _, changed := r.StatusChange(); changed {
		t.Error("healthy → healthy reported as a change")
	}
	stored, _ := e.store.stored(tenantA, a.ID)
	wantStored := a
	wantStored.HeartbeatAt = at
	wantStored.Load = in.Load()
	if diff := cmp.Diff(wantStored, stored, agentsEqual); diff != "" {
		t.Errorf("stored (-want +got):\n%s", diff)
	}
	if stored.ETag() != a.ETag() {
		t.Error("a heartbeat changed the ETag")
	}

	t.Run("reviving a zombie reports the change", func(t *testing.T) {
		e.clk.advance(testTTL.Zombie)
		changes, err := e.svc.Sweep(ctx, 10)
		if err != nil || len(changes) != 1 || changes[0].To != registry.StatusZombie {
			t.Fatalf("Sweep = %+v, %v; want one change to zombie", changes, err)
		}
		r, err := e.svc.Heartbeat(ctx, tenantA, a.ID, registry.HeartbeatInput{})
		if err != nil {
			t.Fatal(err)
		}
		c, changed := r.StatusChange()
		if !changed || c.From != registry.StatusZombie || c.To != registry.StatusHealthy {
			t.Errorf("StatusChange = %+v, %v; want zombie → healthy", c, changed)
		}
		stored, _ := e.store.stored(tenantA, a.ID)
		if stored.Status != registry.StatusHealthy || stored.Load != (registry.Load{}) {
			t.Errorf("stored status %q, load %+v; want healthy and the empty load just reported", stored.Status, stored.Load)
		}
	})

	t.Run("bad load", func(t *testing.T) {
		_, err := e.svc.Heartbeat(ctx, tenantA, a.ID, registry.HeartbeatInput{ErrorRate: ptr(1.5)})
		if diff := cmp.Diff([]string{"body.error_rate"}, fieldNames(t, err)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})

	t.Run("unknown agent", func(t *testing.T) {
		_, err := e.svc.Heartbeat(ctx, tenantA, someAgentID, registry.HeartbeatInput{})
		requireCode(t, err, errs.NotFound)
		_, err = e.svc.Heartbeat(ctx, tenantA, "bogus", registry.HeartbeatInput{})
		requireCode(t, err, errs.NotFound)
	})
}

func TestServiceRoutable(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	// Registered in this order, then aged differently.
	zombie := e.register(t, tenantA, "zombie")
	e.clk.advance(testTTL.Zombie - testTTL.Stale)
	stale := e.register(t, tenantA, "stale")
	e.clk.advance(testTTL.Stale)
	healthy := e.register(t, tenantA, "healthy")
	e.register(t, tenantA, "other-capability", func(in *registry.AgentInput) {
		in.Capabilities = []registry.Capability{{Name: "img.resize"}}
	})
	e.register(t, tenantB, "other-tenant")
	suspendedTenant := "ten_01jz8y3w6v6r3b5q8x9k2m4ndd"
	e.store.setTenantStatus(suspendedTenant, tenant.StatusActive)
	e.register(t, suspendedTenant, "suspended")
	e.store.setTenantStatus(suspendedTenant, tenant.StatusSuspended)

	check := func(t *testing.T) {
		t.Helper()
		got, err := e.svc.Routable(ctx, tenantA, "text.summarize")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"stale", "healthy"}, names(got)); diff != "" {
			t.Errorf("routable (-want +got):\n%s", diff)
		}
		for _, a := range got {
			if a.Status != registry.DeriveStatus(e.clk.now, a.HeartbeatAt, testTTL) && a.Status == registry.StatusZombie {
				t.Errorf("%s returned with status %q", a.Name, a.Status)
			}
		}
		if len(got) == 2 && (got[0].ID != stale.ID || got[1].ID != healthy.ID || got[0].Status != registry.StatusStale) {
			t.Errorf("routable agents = %+v", got)
		}
		r, err := e.svc.Routable(ctx, suspendedTenant, "text.summarize")
		if err != nil || len(r) != 0 {
			t.Errorf("suspended tenant routes to %v, %v", names(r), err)
		}
	}
	t.Run("from a correct store", check)
	t.Run("from a store that returns too much", func(t *testing.T) {
		e.store.sloppy = true
		defer func() { e.store.sloppy = false }()
		check(t)
	})

	t.Run("bad capability", func(t *testing.T) {
		_, err := e.svc.Routable(ctx, tenantA, "Bad/Cap")
		if diff := cmp.Diff([]string{"path.capability"}, fieldNames(t, err)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})

	t.Run("a heartbeat makes the zombie routable again", func(t *testing.T) {
		if _, err := e.svc.Heartbeat(ctx, tenantA, zombie.ID, registry.HeartbeatInput{}); err != nil {
			t.Fatal(err)
		}
		got, err := e.svc.Routable(ctx, tenantA, "text.summarize")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"zombie", "stale", "healthy"}, names(got)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})

	t.Run("MaxRoutable bounds the candidates", func(t *testing.T) {
		svc, err := registry.NewService(e.store, registry.Config{TTL: testTTL, Now: e.clk.Now, MaxRoutable: 1})
		if err != nil {
			t.Fatal(err)
		}
		got, err := svc.Routable(ctx, tenantA, "text.summarize")
		if err != nil || len(got) != 1 {
			t.Errorf("Routable with MaxRoutable 1 = %v, %v", names(got), err)
		}
	})
}

func TestSweep(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a1 := e.register(t, tenantA, "a1")
	a2 := e.register(t, tenantB, "a2")
	a3 := e.register(t, tenantA, "a3")

	if _, err := e.svc.Sweep(ctx, 0); err == nil {
		t.Error("Sweep(0) accepted")
	}
	if c, err := e.svc.Sweep(ctx, 10); err != nil || len(c) != 0 {
		t.Fatalf("fresh agents: Sweep = %+v, %v", c, err)
	}

	e.clk.advance(testTTL.Stale)
	// a3 heartbeats between the sweep's read and its write: its change must not be stored.
	e.store.beforeWrite = func() {
		e.store.beforeWrite = nil
		if _, err := e.svc.Heartbeat(context.WithoutCancel(ctx), tenantA, a3.ID, registry.HeartbeatInput{}); err != nil {
			t.Error(err)
		}
	}
	changes, err := e.svc.Sweep(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]registry.StatusChange{}
	for _, c := range changes {
		got[c.AgentID] = c
	}
	if len(changes) != 2 || got[a1.ID].To != registry.StatusStale || got[a2.ID].To != registry.StatusStale {
		t.Fatalf("Sweep = %+v; want a1 and a2 healthy → stale, a3 superseded by its heartbeat", changes)
	}
	if c := got[a2.ID]; c.TenantID != tenantB || c.From != registry.StatusHealthy || !c.HeartbeatAt.Equal(a2.HeartbeatAt) {
		t.Errorf("change of a2 = %+v", c)
	}
	for id, want := range map[string]registry.Status{a1.ID: registry.StatusStale, a3.ID: registry.StatusHealthy} {
		if s, _ := e.store.stored(tenantA, id); s.Status != want {
			t.Errorf("stored status of %s = %q, want %q", s.Name, s.Status, want)
		}
	}
	if c, err := e.svc.Sweep(ctx, 10); err != nil || len(c) != 0 {
		t.Errorf("second Sweep = %+v, %v; want nothing left", c, err)
	}

	e.clk.advance(testTTL.Zombie)
	changes, err = e.svc.Sweep(ctx, 2)
	if err != nil || len(changes) != 2 {
		t.Fatalf("limited Sweep = %+v, %v; want 2 changes", changes, err)
	}
	changes, err = e.svc.Sweep(ctx, 2)
	if err != nil || len(changes) != 1 {
		t.Fatalf("next Sweep = %+v, %v; want the third change", changes, err)
	}
	for _, c := range changes {
		if c.To != registry.StatusZombie {
			t.Errorf("change %+v, want to zombie", c)
		}
	}
}

// TestConcurrentUse runs every operation from many goroutines; under -race it shows the Service
// shares no unsynchronised state, and the registry ends consistent.
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			ten := []string{tenantA, tenantB}[g%2]
			for i := range 10 {
				a, err := e.svc.Register(ctx, ten, func() registry.AgentInput {
					in := validInput()
					in.Name = fmt.Sprintf("g%d-%d", g, i)
					return in
				}())
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := e.svc.Heartbeat(ctx, ten, a.ID, registry.HeartbeatInput{InFlight: ptr[int64](1)}); err != nil {
					t.Error(err)
				}
				in := a.Input()
				in.Version = "2.0.0"
				if _, err := e.svc.Update(ctx, ten, a.ID, a.ETag(), in); err != nil {
					t.Error(err)
				}
				if _, err := e.svc.List(ctx, ten, registry.Filter{Limit: 5}); err != nil {
					t.Error(err)
				}
				if _, err := e.svc.Routable(ctx, ten, "text.summarize"); err != nil {
					t.Error(err)
				}
				if _, err := e.svc.Sweep(ctx, 5); err != nil {
					t.Error(err)
				}
				if i%2 == 0 {
					if _, err := e.svc.Delete(ctx, ten, a.ID, ""); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	var total int
	for _, ten := range []string{tenantA, tenantB} {
		p, err := e.svc.List(ctx, ten, registry.Filter{Limit: registry.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range p.Agents {
			if a.Version != "2.0.0" || a.Revision != 2 || a.TenantID != ten {
				t.Errorf("agent %s: version %s revision %d tenant %s", a.Name, a.Version, a.Revision, a.TenantID)
			}
		}
		total += len(p.Agents)
	}
	if total != 8*5 {
		t.Errorf("%d agents left, want 40", total)
	}
}
