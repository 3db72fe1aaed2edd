// MCP tool approvals (toolpin.Store), table mcp_tool_approvals of migration 00021.

package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/toolpin"
)

var _ toolpin.Store = (*Store)(nil)

const toolApprovalColumns = `tenant_id, tool, hash, approved_by, approved_at, withheld_hash`

// ToolApprovals returns every approval of the tenant, by tool name.
func (s *Store) ToolApprovals(ctx context.Context, tenantID string) ([]toolpin.Approval, error) {
	rows, err := s.q(ctx).Query(ctx, `SELECT `+toolApprovalColumns+` FROM mcp_tool_approvals WHERE tenant_id = $1 ORDER BY tool`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("list tool approvals of tenant %s: %w", tenantID, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (toolpin.Approval, error) { return scanToolApproval(row) })
	if err != nil {
		return nil, fmt.Errorf("list tool approvals of tenant %s: %w", tenantID, err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// ToolApproval returns one approval, or an errs.NotFound.
func (s *Store) ToolApproval(ctx context.Context, tenantID, tool string) (toolpin.Approval, error) {
	a, err := scanToolApproval(s.q(ctx).QueryRow(ctx, `SELECT `+toolApprovalColumns+` FROM mcp_tool_approvals WHERE tenant_id = $1 AND tool = $2`, tenantID, tool))
	if errors.Is(err, pgx.ErrNoRows) {
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
	_, err := s.q(ctx).Exec(ctx,
		`INSERT INTO mcp_tool_approvals (`+toolApprovalColumns+`) VALUES ($1, $2, $3, $4, $5, '')
		 ON CONFLICT (tenant_id, tool) DO UPDATE SET hash = excluded.hash, approved_by = excluded.approved_by,
		 approved_at = excluded.approved_at, withheld_hash = ''`,
		a.TenantID, a.Tool, a.Hash, a.ApprovedBy, a.ApprovedAt.UTC())
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
	tag, err := s.q(ctx).Exec(ctx,
		`UPDATE mcp_tool_approvals SET withheld_hash = $1 WHERE tenant_id = $2 AND tool = $3 AND hash <> $1 AND withheld_hash <> $1`,
		hash, tenantID, tool)
	if err != nil {
		return false, fmt.Errorf("mark tool %s of tenant %s withheld: %w", tool, tenantID, err)
	}
	return tag.RowsAffected() == 1, nil
}

func scanToolApproval(row pgx.Row) (toolpin.Approval, error) {
	var a toolpin.Approval
	if err := row.Scan(&a.TenantID, &a.Tool, &a.Hash, &a.ApprovedBy, &a.ApprovedAt, &a.WithheldHash); err != nil {
		return toolpin.Approval{}, err
	}
	a.ApprovedAt = a.ApprovedAt.UTC()
	return a, nil
}
