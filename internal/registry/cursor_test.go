package registry_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/registry"
)

const someAgentID = "agt_01jz8y3w6v6r3b5q8x9k2m4n7q"

// The encoding is internal/pagecursor's (tested there); here: the registry wrapper checks the ID kind.
func TestCursorIDKind(t *testing.T) {
	x := registry.Agent{ID: someAgentID, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)}
	got, err := registry.DecodeCursor(registry.EncodeCursor(registry.CursorOf(x)))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(registry.Cursor{CreatedAt: x.CreatedAt, ID: x.ID}, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	foreign := registry.EncodeCursor(registry.Cursor{CreatedAt: x.CreatedAt, ID: "ten_01jz8y3w6v6r3b5q8x9k2m4n7q"})
	if _, err := registry.DecodeCursor(foreign); err == nil {
		t.Fatal("a cursor naming another kind of ID was accepted")
	}
}
