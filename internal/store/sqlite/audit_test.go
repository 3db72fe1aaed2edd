package sqlite

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/store"
	"github.com/nops-kernel/nops/internal/store/storetest"
)

func TestAudit(t *testing.T) {
	storetest.RunAudit(t, func(t *testing.T) storetest.AuditStore { return openMigrated(t, Config{}) })
}

// rawDB runs SQL on the database file directly, as anyone who can write the file could.
type rawDB struct{ db *sql.DB }

func (r rawDB) ExecRaw(ctx context.Context, query string, args ...any) error {
	_, err := r.db.ExecContext(ctx, query, args...)
	return err
}

func TestAuditTamper(t *testing.T) {
	storetest.RunAuditTamper(t, func(t *testing.T) (storetest.AuditStore, storetest.Tamperer) {
		s := openMigrated(t, Config{})
		return s, rawDB{s.writer}
	})
}

// TestAuditQueryPlans checks that the audit statements whose cost would otherwise grow with the
// number of records seek the indexes meant for them and never scan a whole table of records,
// hashes or checkpoints.
func TestAuditQueryPlans(t *testing.T) {
	s := openMigrated(t, Config{})
	denied := false
	type plan struct {
		query string
		args  []any
	}
	planOf := func(q string, args ...any) plan { return plan{q, args} }
	list := func(f store.AuditFilter) plan {
		f.AfterSeq, f.Limit = -1, 10
		q, args := auditListQuery("ten_x", f)
		return plan{q, args}
	}
	tests := []struct {
		name string
		plan plan
		want []string
	}{
		{"read hashes", planOf(readAuditHashesQuery, "ten_x", "[1,5,9]"), []string{"SEARCH audit_hashes USING PRIMARY KEY (tree=? AND idx=?)"}},
		{"trees", planOf(auditTreesQuery), []string{
			"SEARCH a USING COVERING INDEX sqlite_autoindex_audit_records_1 (tree>?)",
			"SEARCH a USING COVERING INDEX sqlite_autoindex_audit_checkpoints_1 (tree>?)",
		}},
		{"list", list(store.AuditFilter{}), []string{"SEARCH audit_records USING INDEX sqlite_autoindex_audit_records_1 (tree=? AND seq>?)"}},
		{"list by action", list(store.AuditFilter{Action: "agent.create"}), []string{"SEARCH audit_records USING INDEX audit_records_action (tree=? AND action=? AND seq>?)"}},
		{"list by principal", list(store.AuditFilter{Principal: "usr_1"}), []string{"SEARCH audit_records USING INDEX audit_records_principal (tree=? AND principal=? AND seq>?)"}},
		{"list denials", list(store.AuditFilter{Allowed: &denied}), []string{"SEARCH audit_records USING INDEX audit_records_denied (tree=? AND seq>?)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			details := queryPlan(t, s, tt.plan.query, tt.plan.args...)
			for _, w := range tt.want {
				if !slices.Contains(details, w) {
					t.Errorf("plan lacks %q:\n%s", w, strings.Join(details, "\n"))
				}
			}
			for _, d := range details {
				if strings.HasPrefix(d, "SCAN audit_records") || strings.HasPrefix(d, "SCAN audit_hashes") ||
					strings.HasPrefix(d, "SCAN audit_checkpoints") || strings.HasPrefix(d, "SCAN a ") || d == "SCAN a" {
					t.Errorf("plan scans a table: %q in\n%s", d, strings.Join(details, "\n"))
				}
			}
		})
	}
}
