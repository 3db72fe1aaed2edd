// Package toolpin pins the MCP tools a tenant's agents offer: a tool's definition (name,
// description, input schema) comes from an agent and is untrusted, so an administrator approves
// it by its hash, and a definition whose hash differs from the approved one is withheld from MCP
// clients until it is approved again (internal/mcpserver, docs/mcp.md). This package holds the
// canonical hash and the stored approvals; both stores implement Store. Imported by
// internal/mcpserver, the stores and their conformance suite.
package toolpin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Approval is an administrator's approval of one tool of a tenant, by the hash of its definition.
type Approval struct {
	TenantID   string
	Tool       string    // the tool's name: a capability name
	Hash       string    // Hash of the approved definition, lower-case hex
	ApprovedBy string    // the approving principal's subject
	ApprovedAt time.Time // UTC
	// WithheldHash is the last definition hash that differed from Hash and was recorded in the
	// audit trail as withheld ("" none since the approval): each changed definition is audited
	// once, however many clients list the tools.
	WithheldHash string
}

// Store keeps the approvals. Both stores implement it (migration 00021).
type Store interface {
	// ToolApprovals returns every approval of the tenant, by tool name.
	ToolApprovals(ctx context.Context, tenantID string) ([]Approval, error)
	// ToolApproval returns one approval, or an errs.NotFound.
	ToolApproval(ctx context.Context, tenantID, tool string) (Approval, error)
	// PutToolApproval creates or replaces the approval of a.Tool (its WithheldHash is reset); an
	// errs.NotFound when the tenant does not exist.
	PutToolApproval(ctx context.Context, a Approval) error
	// MarkToolWithheld records hash as the tool's withheld definition when the tool is approved
	// under another hash and hash is not already recorded; it reports whether it recorded it (the
	// caller audits exactly then).
	MarkToolWithheld(ctx context.Context, tenantID, tool, hash string) (bool, error)
}

// Definition is what a tool's hash covers.
type Definition struct {
	Name        string
	Description string
	InputSchema json.RawMessage // a JSON document; empty means no schema
}

// Hash returns the SHA-256 of def's canonical form, lower-case hex. The canonical form is the
// JSON object {"description":…,"input_schema":…,"name":…}, its keys in byte order at every depth,
// no insignificant whitespace, numbers as written, strings escaped as encoding/json escapes them;
// an empty schema is null. Two definitions that differ only in key order or whitespace of their
// schema hash the same; any other change of the name, description or schema changes the hash.
func Hash(def Definition) (string, error) {
	schema := any(nil)
	if len(bytes.TrimSpace(def.InputSchema)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(def.InputSchema))
		dec.UseNumber()
		if err := dec.Decode(&schema); err != nil {
			return "", fmt.Errorf("input schema of tool %s: %w", def.Name, err)
		}
		if dec.More() {
			return "", fmt.Errorf("input schema of tool %s: trailing data", def.Name)
		}
	}
	// encoding/json writes map keys sorted and json.Number as written.
	b, err := json.Marshal(map[string]any{"name": def.Name, "description": def.Description, "input_schema": schema})
	if err != nil {
		return "", fmt.Errorf("canonical form of tool %s: %w", def.Name, err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// ValidHash reports whether s has the form of a Hash.
func ValidHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
