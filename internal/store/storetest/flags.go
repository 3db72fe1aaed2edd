package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/flags"
)

// FlagStore is what RunFlags needs: the flag store and InTx.
type FlagStore interface {
	flags.Store
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
}

// RunFlags runs the flags.Store suite. open must return a fresh store with every migration
// applied, on a database no other test uses, and close it through t.Cleanup.
func RunFlags(t *testing.T, open func(t *testing.T) FlagStore) {
	t.Run("round trip", func(t *testing.T) { t.Parallel(); testFlagRoundTrip(t, open) })
	t.Run("list order and paging", func(t *testing.T) { t.Parallel(); testFlagList(t, open) })
	t.Run("update and delete compare-and-set", func(t *testing.T) { t.Parallel(); testFlagCAS(t, open) })
	t.Run("transactions", func(t *testing.T) { t.Parallel(); testFlagTransactions(t, open) })
}

// fl returns a boolean flag at revision 1.
func fl(key string) flags.Flag {
	return flags.Flag{Key: key, Type: flags.TypeBoolean, Variants: []string{"false", "true"}, DefaultVariant: "false",
		Revision: 1, CreatedAt: base, UpdatedAt: base}
}

func storedFlag(f flags.Flag) flags.Flag {
	f.CreatedAt, f.UpdatedAt = stored(f.CreatedAt), stored(f.UpdatedAt)
	return f
}

func testFlagRoundTrip(t *testing.T, open func(t *testing.T) FlagStore) {
	s, ctx := open(t), t.Context()
	full := flags.Flag{
		Key: "checkout.new-flow", Type: flags.TypeVariant, Description: "new checkout ✓",
		Variants: []string{"off", "blue", "green"}, DefaultVariant: "off", Enabled: true,
		Rules: []flags.Rule{
			{Expression: `tenant.name == "acme"`, Variant: "blue"},
			{Expression: `tenant.id.startsWith("ten_")`, Variant: "green"},
		},
		Revision: 1, CreatedAt: base, UpdatedAt: base.Add(time.Second),
	}
	for _, f := range []flags.Flag{full, fl("minimal")} {
		if err := s.CreateFlag(ctx, f); err != nil {
			t.Fatalf("CreateFlag(%s): %v", f.Key, err)
		}
		got, err := s.Flag(ctx, f.Key)
		if err != nil {
			t.Fatalf("Flag(%s): %v", f.Key, err)
		}
		if d := cmp.Diff(storedFlag(f), got); d != "" {
			t.Errorf("Flag(%s) (-want +got):\n%s", f.Key, d)
		}
	}
	if err := s.CreateFlag(ctx, fl("minimal")); !errs.Is(err, errs.Conflict) || !errors.Is(err, flags.ErrRevisionConflict) {
		t.Errorf("CreateFlag of an existing key = %v, want a conflict wrapping ErrRevisionConflict", err)
	}
	if _, err := s.Flag(ctx, "absent"); !errs.Is(err, errs.NotFound) {
		t.Errorf("Flag(absent) = %v, want not found", err)
	}
}

func testFlagList(t *testing.T, open func(t *testing.T) FlagStore) {
	s, ctx := open(t), t.Context()
	keys := []string{"b", "a.z", "a", "c-1", "a_b"}
	for _, k := range keys {
		if err := s.CreateFlag(ctx, fl(k)); err != nil {
			t.Fatalf("CreateFlag(%s): %v", k, err)
		}
	}
	var got []string
	after := ""
	for range 10 {
		page, err := s.ListFlags(ctx, after, 2)
		if err != nil {
			t.Fatalf("ListFlags: %v", err)
		}
		for _, f := range page {
			got = append(got, f.Key)
		}
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].Key
	}
	// Byte order: '-' < '.' < '_'.
	if d := cmp.Diff([]string{"a", "a.z", "a_b", "b", "c-1"}, got); d != "" {
		t.Errorf("keys in list order (-want +got):\n%s", d)
	}
}

func testFlagCAS(t *testing.T, open func(t *testing.T) FlagStore) {
	s, ctx := open(t), t.Context()
	f := fl("k")
	if err := s.CreateFlag(ctx, f); err != nil {
		t.Fatal(err)
	}
	next := f
	next.Type, next.Variants, next.DefaultVariant, next.Enabled = flags.TypeVariant, []string{"x", "y"}, "y", true
	next.Rules = []flags.Rule{{Expression: "true", Variant: "x"}}
	next.Revision, next.UpdatedAt = 2, base.Add(time.Minute)
	if err := s.UpdateFlag(ctx, next, 1); err != nil {
		t.Fatalf("UpdateFlag: %v", err)
	}
	got, err := s.Flag(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(storedFlag(next), got); d != "" {
		t.Errorf("after UpdateFlag (-want +got):\n%s", d)
	}
	if err := s.UpdateFlag(ctx, next, 1); !errs.Is(err, errs.Conflict) || !errors.Is(err, flags.ErrRevisionConflict) {
		t.Errorf("UpdateFlag at a stale revision = %v, want a conflict", err)
	}
	gone := fl("gone")
	if err := s.UpdateFlag(ctx, gone, 1); !errs.Is(err, errs.NotFound) {
		t.Errorf("UpdateFlag of a missing flag = %v, want not found", err)
	}
	if err := s.DeleteFlag(ctx, "k", 1); !errs.Is(err, errs.Conflict) || !errors.Is(err, flags.ErrRevisionConflict) {
		t.Errorf("DeleteFlag at a stale revision = %v, want a conflict", err)
	}
	if err := s.DeleteFlag(ctx, "k", 2); err != nil {
		t.Fatalf("DeleteFlag: %v", err)
	}
	if err := s.DeleteFlag(ctx, "k", 2); !errs.Is(err, errs.NotFound) {
		t.Errorf("DeleteFlag again = %v, want not found", err)
	}
}

func testFlagTransactions(t *testing.T, open func(t *testing.T) FlagStore) {
	s, ctx := open(t), t.Context()
	boom := fmt.Errorf("boom")
	err := s.InTx(ctx, func(ctx context.Context) error {
		if err := s.CreateFlag(ctx, fl("rolled-back")); err != nil {
			return err
		}
		if _, err := s.Flag(ctx, "rolled-back"); err != nil {
			return fmt.Errorf("read own write: %w", err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want boom", err)
	}
	if _, err := s.Flag(ctx, "rolled-back"); !errs.Is(err, errs.NotFound) {
		t.Errorf("flag of a rolled-back transaction = %v, want not found", err)
	}
}
