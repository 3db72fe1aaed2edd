package tenant_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/tenant"
)

const someTenantID = "ten_01jz8y3w6v6r3b5q8x9k2m4n7q"

// The encoding is internal/pagecursor's (tested there); here: the tenant wrapper checks the ID kind.
func TestCursorIDKind(t *testing.T) {
	x := tenant.Tenant{ID: someTenantID, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)}
	got, err := tenant.DecodeCursor(tenant.EncodeCursor(tenant.CursorOf(x)))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tenant.Cursor{CreatedAt: x.CreatedAt, ID: x.ID}, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	foreign := tenant.EncodeCursor(tenant.Cursor{CreatedAt: x.CreatedAt, ID: "agt_01jz8y3w6v6r3b5q8x9k2m4n7q"})
	if _, err := tenant.DecodeCursor(foreign); err == nil {
		t.Fatal("a cursor naming another kind of ID was accepted")
	}
}
