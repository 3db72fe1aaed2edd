-- MCP tool pinning (internal/toolpin, docs/mcp.md): per tenant and tool (a capability name), the
-- SHA-256 (hex) of the tool definition an administrator approved, who approved it and when, and
-- the last changed definition hash recorded in the audit trail as withheld ('' none since the
-- approval). An approval goes with its tenant (ON DELETE CASCADE). A tenant's approvals are read
-- together through the primary key. Times are RFC 3339 UTC text with a fixed nine-digit fraction.
-- +goose Up
CREATE TABLE mcp_tool_approvals (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    tool          TEXT NOT NULL,
    hash          TEXT NOT NULL CHECK (length(hash) = 64),
    approved_by   TEXT NOT NULL,
    approved_at   TEXT NOT NULL,
    withheld_hash TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, tool)
) STRICT;

-- +goose Down
DROP TABLE mcp_tool_approvals;
