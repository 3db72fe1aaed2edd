package control_test

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/tenant"
)

// lastRecord returns the last record of tree.
func lastRecord(t *testing.T, st *faultyStore, tree string) audit.Record {
	t.Helper()
	n := treeSize(t, st, tree)
	if n == 0 {
		t.Fatalf("tree %s is empty", tree)
	}
	entries, err := st.Records(t.Context(), tree, n-1, n, 1)
	if err != nil || len(entries) != 1 {
		t.Fatalf("records of %s: %v %v", tree, entries, err)
	}
	rec, err := entries[0].Record()
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestRecordActionInTheTenantsTree(t *testing.T) {
	var appended []string
	c, st, ctx := setupWith(t, control.Options{Appended: func(tree string, size int64) {
		appended = append(appended, fmt.Sprintf("%s:%d", tree, size))
	}})
	ten, err := c.CreateTenant(ctx, tenant.CreateInput{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	before := treeSize(t, st, ten.ID)
	err = c.RecordAction(ctx, control.Action{Tenant: ten.ID, Action: control.ActionDLQReprocess, Resource: "dlq",
		Reason: "by ids: matched 2, reprocessed 2, remaining 0", IDs: []string{"dlq_a", "dlq_b"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := treeSize(t, st, ten.ID); got != before+1 {
		t.Fatalf("tenant tree grew from %d to %d, want one record", before, got)
	}
	rec := lastRecord(t, st, ten.ID)
	if rec.Action != control.ActionDLQReprocess || rec.Resource != "dlq" || !rec.Decision.Allowed ||
		rec.Decision.Reason != "by ids: matched 2, reprocessed 2, remaining 0; ids: dlq_a, dlq_b" ||
		rec.Actor.Principal != "usr_test" || rec.Actor.RequestID != "req_test" {
		t.Fatalf("record %+v", rec)
	}
	if want := fmt.Sprintf("%s:%d", ten.ID, before+1); appended[len(appended)-1] != want {
		t.Fatalf("checkpointer told %v, want %s last", appended, want)
	}
}

func TestRecordActionOnEveryTenantGoesToTheGlobalTree(t *testing.T) {
	c, st, ctx := setup(t)
	before := treeSize(t, st, audit.GlobalTree)
	if err := c.RecordAction(ctx, control.Action{Action: control.ActionEventsReplayDryRun, Resource: "events/event-stats", Reason: "matched 0"}); err != nil {
		t.Fatal(err)
	}
	if got := treeSize(t, st, audit.GlobalTree); got != before+1 {
		t.Fatalf("global tree grew from %d to %d", before, got)
	}
	if rec := lastRecord(t, st, audit.GlobalTree); rec.Action != control.ActionEventsReplayDryRun || rec.Decision.Reason != "matched 0" {
		t.Fatalf("record %+v", rec)
	}
}

// TestRecordActionReasonFitsTheRecord lists as many ids as the audit record's reason holds and
// counts the rest, whatever the lengths; an oversized or invalid reason never fails the append.
func TestRecordActionReasonFitsTheRecord(t *testing.T) {
	c, st, ctx := setup(t)
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprintf("dlq_%032x", i)
	}
	tests := []struct {
		name   string
		reason string
		ids    []string
		check  func(t *testing.T, reason string)
	}{
		{"a thousand ids", "by ids: matched 1000", ids, func(t *testing.T, reason string) {
			listed := strings.Count(reason, "dlq_")
			if !strings.HasPrefix(reason, "by ids: matched 1000; ids: dlq_") || listed < 10 ||
				!strings.HasSuffix(reason, fmt.Sprintf(" … and %d more", 1000-listed)) {
				t.Fatalf("reason %q lists %d ids", reason, listed)
			}
		}},
		{"ids that just fit", "x", ids[:2], func(t *testing.T, reason string) {
			if reason != "x; ids: "+ids[0]+", "+ids[1] {
				t.Fatalf("reason %q", reason)
			}
		}},
		{"a long reason with ids", strings.Repeat("é", 2000), ids[:3], func(t *testing.T, reason string) {
			if !strings.Contains(reason, "; ids: "+ids[0]) {
				t.Fatalf("reason %q lost its ids", reason)
			}
		}},
		{"a long invalid reason", strings.Repeat("\xff", 3000), nil, func(t *testing.T, reason string) {
			if reason == "" {
				t.Fatal("empty reason")
			}
		}},
		{"no reason", "", nil, func(t *testing.T, reason string) {
			if reason != "allowed" {
				t.Fatalf("reason %q", reason)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.RecordAction(ctx, control.Action{Action: control.ActionDLQReprocess, Resource: "dlq", Reason: tt.reason, IDs: tt.ids}); err != nil {
				t.Fatal(err)
			}
			reason := lastRecord(t, st, audit.GlobalTree).Decision.Reason
			if len(reason) > 1024 || !utf8.ValidString(reason) {
				t.Fatalf("reason of %d bytes, valid UTF-8 %v", len(reason), utf8.ValidString(reason))
			}
			tt.check(t, reason)
		})
	}
}
