package policy

import (
	"slices"
	"time"

	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/rbac"
)

// Input is what a policy sees of one request: the CEL variables principal, resource, action,
// capability and request. The HTTP perimeter builds it after authentication and RBAC.
//
// The struct types are exposed to CEL as typed objects (cel-go's ext.NativeTypes, field names from
// the `cel` tags), so a misspelt field is a compile-time error, not a runtime one. The yaml tags
// are the spelling of test-case files (see the package documentation); they are the same names.
type Input struct {
	Principal  Principal `yaml:"principal"`
	Resource   Resource  `yaml:"resource"`
	Action     string    `yaml:"action"`     // the operation: "agents.update", or the HTTP operation id
	Capability string    `yaml:"capability"` // the capability invoked, "" when none
	Request    Request   `yaml:"request"`
}

// Principal is the authenticated caller. Its Tenant selects the tenant policies that apply (see
// Engine.Evaluate).
type Principal struct {
	Subject string            `cel:"subject" yaml:"subject"`
	Role    string            `cel:"role" yaml:"role"`     // the most powerful of Roles
	Roles   []string          `cel:"roles" yaml:"roles"`   // every RBAC role held
	Tenant  string            `cel:"tenant" yaml:"tenant"` // "" for principals above tenants
	Scopes  []string          `cel:"scopes" yaml:"scopes"`
	Labels  map[string]string `cel:"labels" yaml:"labels"`
	Kind    string            `cel:"kind" yaml:"kind"` // "user", "api_key", "spiffe", …
}

// Resource is what the request acts on.
type Resource struct {
	Tenant      string            `cel:"tenant" yaml:"tenant"`
	Type        string            `cel:"type" yaml:"type"` // "agent", "api_key", "tenant", …
	ID          string            `cel:"id" yaml:"id"`     // "" for collections
	Labels      map[string]string `cel:"labels" yaml:"labels"`
	Criticality string            `cel:"criticality" yaml:"criticality"` // "critical", "essential", "best_effort" or ""
}

// Request is the request's context.
type Request struct {
	Time   time.Time `cel:"time" yaml:"time"` // a CEL timestamp; UTC
	IP     string    `cel:"ip" yaml:"ip"`     // the client IP as the perimeter resolved it
	Method string    `cel:"method" yaml:"method"`
	Path   string    `cel:"path" yaml:"path"`
	MTLSID string    `cel:"mtls_id" yaml:"mtls_id"` // the SPIFFE ID of a verified client certificate, "" when none
	Signed bool      `cel:"signed" yaml:"signed"`   // an RFC 9421 signature was verified
}

// Principal kinds the kernel sets.
const (
	KindUser   = "user"
	KindAPIKey = "api_key"
	KindSPIFFE = "spiffe"
)

// PrincipalOf returns the policy view of an authenticated principal: Role is the most powerful of
// its roles (in rbac.Roles order), kind says which credential it came with, labels are optional.
func PrincipalOf(p principal.Principal, kind string, labels map[string]string) Principal {
	out := Principal{
		Subject: p.Subject, Roles: slices.Clone(p.Roles), Tenant: p.Tenant,
		Scopes: slices.Clone(p.Scopes), Labels: labels, Kind: kind,
	}
	for _, r := range rbac.Roles {
		if slices.Contains(p.Roles, r) {
			out.Role = r
			break
		}
	}
	if out.Role == "" && len(p.Roles) > 0 {
		out.Role = p.Roles[0]
	}
	return out
}

// Size bounds the cost estimate assumes for the inputs (see the package documentation, "Cost").
// Larger inputs are still evaluated; the runtime cost limit is what bounds them.
var sizeHints = map[string]uint64{
	"principal.subject":        256,
	"principal.role":           32,
	"principal.roles":          8,
	"principal.roles.@items":   32,
	"principal.tenant":         64,
	"principal.scopes":         64,
	"principal.scopes.@items":  128,
	"principal.labels":         64,
	"principal.labels.@keys":   317, // a DNS-subdomain prefix, "/", a 63-byte name
	"principal.labels.@values": 63,
	"principal.kind":           32,
	"resource.tenant":          64,
	"resource.type":            64,
	"resource.id":              128,
	"resource.labels":          64,
	"resource.labels.@keys":    317,
	"resource.labels.@values":  63,
	"resource.criticality":     32,
	"action":                   128,
	"capability":               128,
	"request.ip":               45,
	"request.method":           16,
	"request.path":             2048,
	"request.mtls_id":          2048,
	"request.time":             1,
	"request.signed":           1,
}
