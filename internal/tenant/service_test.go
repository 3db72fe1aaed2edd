package tenant_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/tenant"
)

// clock is a manual clock; every reading advances it by step so creation order is strict.
type clock struct {
	mu   sync.Mutex
	now  time.Time
	step time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.now
	c.now = c.now.Add(c.step)
	return t
}

func newService(t *testing.T) (*tenant.Service, *fakeStore, *clock) {
	t.Helper()
	// A local zone and nanoseconds show the service stores UTC at microsecond precision.
	clk := &clock{now: time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("x", 7200)), step: time.Second}
	store := newFakeStore()
	svc, err := tenant.NewService(store, tenant.Config{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return svc, store, clk
}

func mustCreate(t *testing.T, svc *tenant.Service, name string) tenant.Tenant {
	t.Helper()
	tn, err := svc.Create(t.Context(), tenant.CreateInput{Name: name, DisplayName: "Tenant " + name})
	if err != nil {
		t.Fatalf("Create(%s): %v", name, err)
	}
	return tn
}

func requireCode(t *testing.T, err error, code errs.Code) {
	t.Helper()
	if got := errs.CodeOf(err); got != code {
		t.Fatalf("err = %v (code %q), want code %q", err, got, code)
	}
}

func TestNewServiceNilStore(t *testing.T) {
	if _, err := tenant.NewService(nil, tenant.Config{}); err == nil {
		t.Fatal("NewService(nil) succeeded")
	}
}

func TestCreateAndGet(t *testing.T) {
	svc, _, _ := newService(t)
	got := mustCreate(t, svc, "acme")
	if !tenant.ValidID(got.ID) {
		t.Errorf("ID %q is not a tenant ID", got.ID)
	}
	want := tenant.Tenant{
		ID:          got.ID,
		Name:        "acme",
		DisplayName: "Tenant acme",
		Status:      tenant.StatusActive,
		CreatedAt:   time.Date(2026, 3, 1, 10, 0, 0, 123456000, time.UTC),
		UpdatedAt:   time.Date(2026, 3, 1, 10, 0, 0, 123456000, time.UTC),
		Version:     1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Create (-want +got):\n%s", diff)
	}
	if got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt in %v, want UTC", got.CreatedAt.Location())
	}
	read, err := svc.Get(t.Context(), got.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, read); diff != "" {
		t.Errorf("Get (-created +read):\n%s", diff)
	}
}

func TestCreateRejects(t *testing.T) {
	svc, store, _ := newService(t)
	mustCreate(t, svc, "acme")

	_, err := svc.Create(t.Context(), tenant.CreateInput{Name: "acme"})
	requireCode(t, err, errs.Conflict)
	if e := errs.As(err); e.Message != `a tenant named "acme" already exists` {
		t.Errorf("message = %q", e.Message)
	}

	_, err = svc.Create(t.Context(), tenant.CreateInput{Name: "Bad Name"})
	if diff := cmp.Diff([]string{"body.name"}, fieldNames(t, err)); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
	if len(store.tenants) != 1 {
		t.Errorf("store holds %d tenants, want 1", len(store.tenants))
	}
}

func TestGetNotFound(t *testing.T) {
	svc, _, _ := newService(t)
	for _, id := range []string{someTenantID, "nope", "ten_' OR 1=1 --"} {
		_, err := svc.Get(t.Context(), id)
		requireCode(t, err, errs.NotFound)
	}
}

func TestList(t *testing.T) {
	svc, _, _ := newService(t)
	var all []tenant.Tenant
	for i := range 7 {
		all = append(all, mustCreate(t, svc, fmt.Sprintf("t%d", i)))
	}

	t.Run("pages of three", func(t *testing.T) {
		var got []tenant.Tenant
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 3 {
				t.Fatal("more pages than tenants")
			}
			p, err := svc.List(t.Context(), cursor, 3)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, p.Tenants...)
			if p.NextCursor == "" {
				break
			}
			cursor = p.NextCursor
		}
		if diff := cmp.Diff(all, got); diff != "" {
			t.Errorf("pages (-want +got):\n%s", diff)
		}
	})

	t.Run("exact page has no next cursor", func(t *testing.T) {
		p, err := svc.List(t.Context(), "", 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Tenants) != 7 || p.NextCursor != "" {
			t.Errorf("got %d tenants, cursor %q; want 7 and none", len(p.Tenants), p.NextCursor)
		}
	})

	t.Run("default limit", func(t *testing.T) {
		p, err := svc.List(t.Context(), "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Tenants) != 7 {
			t.Errorf("got %d tenants, want 7", len(p.Tenants))
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, tt := range []struct {
			cursor string
			limit  int
			field  string
		}{
			{"", -1, "query.limit"},
			{"", tenant.MaxLimit + 1, "query.limit"},
			{"garbage!", 10, "query.cursor"},
		} {
			_, err := svc.List(t.Context(), tt.cursor, tt.limit)
			if diff := cmp.Diff([]string{tt.field}, fieldNames(t, err)); diff != "" {
				t.Errorf("List(%q, %d) fields (-want +got):\n%s", tt.cursor, tt.limit, diff)
			}
		}
		if _, err := svc.List(t.Context(), "", tenant.MaxLimit); err != nil {
			t.Errorf("List with MaxLimit: %v", err)
		}
	})
}

func TestSuspendResume(t *testing.T) {
	svc, store, _ := newService(t)
	tn := mustCreate(t, svc, "acme")

	tr, err := svc.Suspend(t.Context(), tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantAfter := tn
	wantAfter.Status = tenant.StatusSuspended
	wantAfter.Version = 2
	wantAfter.UpdatedAt = tn.UpdatedAt.Add(time.Second)
	if diff := cmp.Diff(tenant.Transition{Before: tn, After: wantAfter, Changed: true}, tr); diff != "" {
		t.Errorf("Suspend (-want +got):\n%s", diff)
	}

	// Idempotent: no write, no version bump, Changed false.
	again, err := svc.Suspend(t.Context(), tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tenant.Transition{Before: wantAfter, After: wantAfter}, again); diff != "" {
		t.Errorf("second Suspend (-want +got):\n%s", diff)
	}
	if store.updates != 1 {
		t.Errorf("store updated %d times, want 1", store.updates)
	}

	res, err := svc.Resume(t.Context(), tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.After.Status != tenant.StatusActive || res.After.Version != 3 || res.Before.Version != 2 {
		t.Errorf("Resume = %+v", res)
	}
	res, err = svc.Resume(t.Context(), tn.ID)
	if err != nil || res.Changed {
		t.Errorf("second Resume = %+v, %v; want unchanged", res, err)
	}

	for _, op := range []func(context.Context, string) (tenant.Transition, error){svc.Suspend, svc.Resume} {
		_, err := op(t.Context(), someTenantID)
		requireCode(t, err, errs.NotFound)
		_, err = op(t.Context(), "not-an-id")
		requireCode(t, err, errs.NotFound)
	}
}

func TestSuspendRetriesAfterLostRace(t *testing.T) {
	svc, store, _ := newService(t)
	tn := mustCreate(t, svc, "acme")
	other, err := tenant.NewService(store, tenant.Config{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a concurrent change is re-read and the rule re-applied", func(t *testing.T) {
		// Someone else suspends the tenant between our read and our write: we lose the
		// compare-and-set, re-read, find it suspended and report no change.
		store.beforeUpdate = func() {
			store.beforeUpdate = nil
			if _, err := other.Suspend(t.Context(), tn.ID); err != nil {
				t.Error(err)
			}
		}
		tr, err := svc.Suspend(t.Context(), tn.ID)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Changed || tr.After.Status != tenant.StatusSuspended || tr.After.Version != 2 {
			t.Errorf("Suspend after lost race = %+v; want unchanged suspended version 2", tr)
		}
	})

	t.Run("endless contention is a conflict", func(t *testing.T) {
		// Every write races with a status flip by someone else.
		store.beforeUpdate = func() {
			store.mu.Lock()
			cur := store.tenants[tn.ID]
			cur.Version++
			store.tenants[tn.ID] = cur
			store.mu.Unlock()
		}
		defer func() { store.beforeUpdate = nil }()
		_, err := svc.Resume(t.Context(), tn.ID)
		requireCode(t, err, errs.Conflict)
		if !errors.Is(err, tenant.ErrVersionConflict) {
			t.Errorf("err = %v, want it to wrap ErrVersionConflict", err)
		}
	})
}

func TestDelete(t *testing.T) {
	t.Run("without agents", func(t *testing.T) {
		svc, store, _ := newService(t)
		tn := mustCreate(t, svc, "acme")
		d, err := svc.Delete(t.Context(), tn.ID, false)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tenant.Deletion{Tenant: tn}, d); diff != "" {
			t.Errorf("Delete (-want +got):\n%s", diff)
		}
		if _, ok := store.tenants[tn.ID]; ok {
			t.Error("tenant still stored")
		}
		_, err = svc.Delete(t.Context(), tn.ID, false)
		requireCode(t, err, errs.NotFound)
	})

	t.Run("refused with agents", func(t *testing.T) {
		svc, store, _ := newService(t)
		tn := mustCreate(t, svc, "acme")
		store.addAgents(tn.ID, 2)
		_, err := svc.Delete(t.Context(), tn.ID, false)
		requireCode(t, err, errs.Conflict)
		if _, ok := store.tenants[tn.ID]; !ok {
			t.Error("tenant deleted despite its agents")
		}
		if n, _ := store.CountAgents(t.Context(), tn.ID); n != 2 {
			t.Errorf("%d agents left, want 2", n)
		}
	})

	t.Run("cascade deletes the agents and names them", func(t *testing.T) {
		svc, store, _ := newService(t)
		tn := mustCreate(t, svc, "acme")
		keep := mustCreate(t, svc, "other")
		ids := store.addAgents(tn.ID, 3)
		store.addAgents(keep.ID, 1)
		d, err := svc.Delete(t.Context(), tn.ID, true)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tenant.Deletion{Tenant: tn, DeletedAgentIDs: ids}, d); diff != "" {
			t.Errorf("Delete (-want +got):\n%s", diff)
		}
		if _, ok := store.tenants[tn.ID]; ok {
			t.Error("tenant still stored")
		}
		if n, _ := store.CountAgents(t.Context(), keep.ID); n != 1 {
			t.Errorf("other tenant lost its agents: %d left", n)
		}
	})

	t.Run("an agent registered during the deletion makes it a conflict", func(t *testing.T) {
		svc, store, _ := newService(t)
		tn := mustCreate(t, svc, "acme")
		store.beforeDelete = func() { store.addAgents(tn.ID, 1) }
		_, err := svc.Delete(t.Context(), tn.ID, false)
		requireCode(t, err, errs.Conflict)
		if _, ok := store.tenants[tn.ID]; !ok {
			t.Error("tenant deleted")
		}
	})

	t.Run("malformed id", func(t *testing.T) {
		svc, _, _ := newService(t)
		_, err := svc.Delete(t.Context(), "../etc", true)
		requireCode(t, err, errs.NotFound)
	})
}
