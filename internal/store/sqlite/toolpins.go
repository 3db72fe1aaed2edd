// MCP tool approvals (toolpin.Store), table mcp_tool_approvals of migration 00021.

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/toolpin"
)

var _ toolpin.Store = (*Store)(nil)

const toolApprovalColumns = `tenant_id, tool, hash, approved_by, approved_at, withheld_hash`

// ToolApprovals returns every approval of the tenant, by tool name.
func (s *Store) ToolApprovals(ctx context.Context, tenantID string) ([]toolpin.Approval, error) {
	rows, err := s.r(ctx).QueryContext(ctx, `SELECT `+toolApprovalColumns+` FROM mcp_tool_approvals WHERE tenant_id = ? ORDER BY tool`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("list tool approvals of tenant %s: %w", tenantID, err)
	}
	defer rows.Close()
	var out []toolpin.Approval
	for rows.Next() {
		a, err := scanToolApproval(rows)
		if err != nil {
			return nil, fmt.Errorf("list tool approvals of tenant %s: %w", tenantID, err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tool approvals of tenant %s: %w", tenantID, err)
	}
	return out, nil
}

// ToolApproval returns one approval, or an errs.NotFound.
func (s *Store) ToolApproval(ctx context.Context, tenantID, tool string) (toolpin.Approval, error) {
	a, err := scanToolApproval(s.r(ctx).QueryRowContext(ctx, `SELECT `+toolApprovalColumns+` FROM mcp_tool_approvals WHERE tenant_id = ? AND tool = ?`, tenantID, tool))
	if errors.Is(err, sql.ErrNoRows) {
		return toolpin.Approval{}, errs.New(errs.NotFound, "tool %s of tenant %s is not approved", tool, tenantID)
	}
	if err != nil {
		return toolpin.Approval{}, fmt.Errorf("get tool approval %s of tenant %s: %w", tool, tenantID, err)
	}
	return a, nil
}

// PutToolApproval creates or replaces the approval of a.Tool, resetting its withheld hash; an
// errs.NotFound when the tenant does not exist.
func (s *Store) PutToolApproval(ctx context.Context, a toolpin.Approval) error {
	_, err := s.w(ctx).ExecContext(ctx,
		`INSERT INTO mcp_tool_approvals (`+toolApprovalColumns+`) VALUES (?, ?, ?, ?, ?, '')
		 ON CONFLICT (tenant_id, tool) DO UPDATE SET hash = excluded.hash, approved_by = excluded.approved_by,
		 approved_at = excluded.approved_at, withheld_hash = ''`,
		a.TenantID, a.Tool, a.Hash, a.ApprovedBy, formatTime(a.ApprovedAt))
	switch {
	case isForeignKeyViolation(err):
		return errs.Wrap(errs.NotFound, err, "tenant %s not found", a.TenantID)
	case err != nil:
		return fmt.Errorf("put tool approval %s of tenant %s: %w", a.Tool, a.TenantID, err)
	}
	return nil
}

// MarkToolWithheld records hash as the approved tool's withheld definition unless it is the
// approved one or already recorded, and reports whether it did.
func (s *Store) MarkToolWithheld(ctx context.Context, tenantID, tool, hash string) (bool, error) {
	res, err := s.w(ctx).ExecContext(ctx,
		`UPDATE mcp_tool_approvals SET withheld_hash = ? WHERE tenant_id = ? AND tool = ? AND hash <> ? AND withheld_hash <> ?`,
		hash, tenantID, tool, hash, hash)
	if err != nil {
		return false, fmt.Errorf("mark tool %s of tenant %s withheld: %w", tool, tenantID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("mark tool %s of tenant %s withheld: %w", tool, tenantID, err)
	}
	return n == 1, nil
}

func scanToolApproval(row rowScanner) (toolpin.Approval, error) {
	var a toolpin.Approval
	var at string
	if err := row.Scan(&a.TenantID, &a.Tool, &a.Hash, &a.ApprovedBy, &at, &a.WithheldHash); err != nil {
		return toolpin.Approval{}, err
	}
	var err error
	if a.ApprovedAt, err = parseTime(at); err != nil {
		return toolpin.Approval{}, fmt.Errorf("tool approval %s approved_at: %w", a.Tool, err)
	}
	return a, nil
}
