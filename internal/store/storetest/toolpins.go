package storetest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/tenant"
	"github.com/nops-kernel/nops/internal/toolpin"
)

// ToolPinStore is what RunToolPins needs: the approvals, and the tenant store (approvals belong
// to tenants and go with them).
type ToolPinStore interface {
	toolpin.Store
	tenant.Store
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// RunToolPins runs the toolpin.Store suite. open must return a fresh store with every migration
// applied, on a database no other test uses, and close it through t.Cleanup.
func RunToolPins(t *testing.T, open func(t *testing.T) ToolPinStore) {
	t.Run("round trip and replace", func(t *testing.T) { t.Parallel(); testToolPinRoundTrip(t, open) })
	t.Run("withheld recorded once per hash", func(t *testing.T) { t.Parallel(); testToolPinWithheld(t, open) })
	t.Run("tenant isolation and deletion", func(t *testing.T) { t.Parallel(); testToolPinTenants(t, open) })
}

func toolPinStore(t *testing.T, open func(t *testing.T) ToolPinStore) ToolPinStore {
	t.Helper()
	s := open(t)
	for _, tn := range []tenant.Tenant{domTenant("ten_a", "a", base), domTenant("ten_b", "b", base)} {
		if err := s.CreateTenant(t.Context(), tn); err != nil {
			t.Fatalf("CreateTenant(%s): %v", tn.ID, err)
		}
	}
	return s
}

func pinHash(c byte) string { return strings.Repeat(string(c), 64) }

func testToolPinRoundTrip(t *testing.T, open func(t *testing.T) ToolPinStore) {
	s := toolPinStore(t, open)
	ctx := t.Context()
	if _, err := s.ToolApproval(ctx, "ten_a", "text.echo"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("ToolApproval of none: %v, want not found", err)
	}
	a := toolpin.Approval{TenantID: "ten_a", Tool: "text.echo", Hash: pinHash('a'), ApprovedBy: "usr_1", ApprovedAt: base}
	if err := s.PutToolApproval(ctx, a); err != nil {
		t.Fatalf("PutToolApproval: %v", err)
	}
	got, err := s.ToolApproval(ctx, "ten_a", "text.echo")
	if err != nil {
		t.Fatalf("ToolApproval: %v", err)
	}
	want := a
	want.ApprovedAt = stored(base)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	// A new approval replaces the old one.
	b := toolpin.Approval{TenantID: "ten_a", Tool: "text.echo", Hash: pinHash('b'), ApprovedBy: "usr_2", ApprovedAt: base.Add(time.Hour)}
	if err := s.PutToolApproval(ctx, b); err != nil {
		t.Fatalf("PutToolApproval again: %v", err)
	}
	if err := s.PutToolApproval(ctx, toolpin.Approval{TenantID: "ten_a", Tool: "text.alpha", Hash: pinHash('c'), ApprovedBy: "usr_1", ApprovedAt: base}); err != nil {
		t.Fatalf("PutToolApproval: %v", err)
	}
	all, err := s.ToolApprovals(ctx, "ten_a")
	if err != nil {
		t.Fatalf("ToolApprovals: %v", err)
	}
	if len(all) != 2 || all[0].Tool != "text.alpha" || all[1].Tool != "text.echo" || all[1].Hash != pinHash('b') || all[1].ApprovedBy != "usr_2" || !all[1].ApprovedAt.Equal(stored(b.ApprovedAt)) {
		t.Fatalf("ToolApprovals = %+v", all)
	}
	if err := s.PutToolApproval(ctx, toolpin.Approval{TenantID: "ten_missing", Tool: "x", Hash: pinHash('a'), ApprovedBy: "u", ApprovedAt: base}); !errs.Is(err, errs.NotFound) {
		t.Fatalf("PutToolApproval of a missing tenant: %v, want not found", err)
	}
	// Inside a transaction that rolls back, nothing stays.
	boom := errs.New(errs.Internal, "roll back")
	err = s.InTx(ctx, func(ctx context.Context) error {
		if err := s.PutToolApproval(ctx, toolpin.Approval{TenantID: "ten_a", Tool: "text.rolled", Hash: pinHash('d'), ApprovedBy: "u", ApprovedAt: base}); err != nil {
			return err
		}
		return boom
	})
	if err != boom {
		t.Fatalf("InTx: %v", err)
	}
	if _, err := s.ToolApproval(ctx, "ten_a", "text.rolled"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("an approval of a rolled back transaction stayed: %v", err)
	}
}

func testToolPinWithheld(t *testing.T, open func(t *testing.T) ToolPinStore) {
	s := toolPinStore(t, open)
	ctx := t.Context()
	mark := func(tool, hash string, want bool) {
		t.Helper()
		got, err := s.MarkToolWithheld(ctx, "ten_a", tool, hash)
		if err != nil || got != want {
			t.Fatalf("MarkToolWithheld(%s, %s…) = %v, %v; want %v", tool, hash[:4], got, err, want)
		}
	}
	mark("text.echo", pinHash('b'), false) // never approved: nothing to record
	if err := s.PutToolApproval(ctx, toolpin.Approval{TenantID: "ten_a", Tool: "text.echo", Hash: pinHash('a'), ApprovedBy: "u", ApprovedAt: base}); err != nil {
		t.Fatalf("PutToolApproval: %v", err)
	}
	mark("text.echo", pinHash('a'), false) // the approved hash is not a change
	mark("text.echo", pinHash('b'), true)
	mark("text.echo", pinHash('b'), false) // recorded once
	mark("text.echo", pinHash('c'), true)  // another change is recorded
	got, err := s.ToolApproval(ctx, "ten_a", "text.echo")
	if err != nil || got.WithheldHash != pinHash('c') {
		t.Fatalf("ToolApproval = %+v, %v", got, err)
	}
	// Approving again resets it.
	if err := s.PutToolApproval(ctx, toolpin.Approval{TenantID: "ten_a", Tool: "text.echo", Hash: pinHash('c'), ApprovedBy: "u", ApprovedAt: base}); err != nil {
		t.Fatalf("PutToolApproval: %v", err)
	}
	if got, _ := s.ToolApproval(ctx, "ten_a", "text.echo"); got.WithheldHash != "" {
		t.Fatalf("withheld hash after a new approval: %q", got.WithheldHash)
	}
	mark("text.echo", pinHash('b'), true)
}

func testToolPinTenants(t *testing.T, open func(t *testing.T) ToolPinStore) {
	s := toolPinStore(t, open)
	ctx := t.Context()
	for _, tn := range []string{"ten_a", "ten_b"} {
		if err := s.PutToolApproval(ctx, toolpin.Approval{TenantID: tn, Tool: "text.echo", Hash: pinHash('a'), ApprovedBy: "u", ApprovedAt: base}); err != nil {
			t.Fatalf("PutToolApproval(%s): %v", tn, err)
		}
	}
	if ok, err := s.MarkToolWithheld(ctx, "ten_b", "text.echo", pinHash('b')); err != nil || !ok {
		t.Fatalf("MarkToolWithheld: %v %v", ok, err)
	}
	if a, _ := s.ToolApproval(ctx, "ten_a", "text.echo"); a.WithheldHash != "" {
		t.Fatalf("another tenant's withheld mark leaked: %+v", a)
	}
	if err := s.DeleteTenant(ctx, "ten_b"); err != nil {
		t.Fatalf("DeleteTenant: %v", err)
	}
	if all, err := s.ToolApprovals(ctx, "ten_b"); err != nil || len(all) != 0 {
		t.Fatalf("approvals of a deleted tenant: %+v, %v", all, err)
	}
	if all, err := s.ToolApprovals(ctx, "ten_a"); err != nil || len(all) != 1 {
		t.Fatalf("approvals of the other tenant: %+v, %v", all, err)
	}
}
