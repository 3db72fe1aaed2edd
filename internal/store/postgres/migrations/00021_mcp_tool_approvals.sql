-- MCP tool pinning (internal/toolpin, docs/mcp.md): per tenant and tool (a capability name), the
-- SHA-256 (hex) of the tool definition an administrator approved, who approved it and when, and
-- the last changed definition hash recorded in the audit trail as withheld ('' none since the
-- approval). An approval goes with its tenant (ON DELETE CASCADE). A tenant's approvals are read
-- together through the primary key. Keys collate as bytes ("C").
-- +goose Up
CREATE TABLE mcp_tool_approvals (
    tenant_id     text COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    tool          text COLLATE "C" NOT NULL,
    hash          text NOT NULL CHECK (length(hash) = 64),
    approved_by   text NOT NULL,
    approved_at   timestamptz NOT NULL,
    withheld_hash text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, tool)
);

-- +goose Down
DROP TABLE mcp_tool_approvals;
