package scope

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/nops-kernel/nops/internal/errs"
)

// Rule is what one API operation needs from a workload.
type Rule struct {
	// Service is the first segment of the needed scope ("registry").
	Service string
	// Operation is the second segment: a literal ("heartbeat") or a path value in braces
	// ("{capability}"), so that scopes can name single capabilities.
	Operation string
	// Self, when set, names a path value that must be the calling agent's own ID: a tenant-wide
	// scope does not let one agent act as another.
	Self string
}

// Routes maps ServeMux patterns ("POST /v1/agents/{agent_id}/heartbeat") to Rules. It is an
// allow-list: a pattern it does not hold is refused to workloads.
type Routes struct {
	rules map[string]Rule
}

// defaultRules are the operations open to workload identities. See docs/mtls.md.
var defaultRules = map[string]Rule{
	"GET /v1/auth/whoami":                  {Service: "identity", Operation: "read"},
	"POST /v1/identity/svid":               {Service: "identity", Operation: "renew"},
	"GET /v1/agents":                       {Service: "registry", Operation: "read"},
	"GET /v1/agents/{agent_id}":            {Service: "registry", Operation: "read"},
	"POST /v1/agents":                      {Service: "registry", Operation: "write"},
	"PUT /v1/agents/{agent_id}":            {Service: "registry", Operation: "write"},
	"DELETE /v1/agents/{agent_id}":         {Service: "registry", Operation: "write"},
	"POST /v1/agents/{agent_id}/heartbeat": {Service: "registry", Operation: "heartbeat", Self: "agent_id"},
	"POST /v1/invoke/{capability}":         {Service: "invoke", Operation: "{capability}"},
	"GET /v1/invocations/{invocation_id}":  {Service: "invocations", Operation: "read"},
	"GET /v1/routes":                       {Service: "routing", Operation: "read"},
	"GET /v1/routes/{capability}":          {Service: "routing", Operation: "read"},
	"PUT /v1/routes/{capability}":          {Service: "routing", Operation: "write"},
	"DELETE /v1/routes/{capability}":       {Service: "routing", Operation: "write"},
}

// DefaultRoutes returns the default table.
func DefaultRoutes() *Routes {
	rs, err := NewRoutes(defaultRules)
	if err != nil {
		panic(err) // the default table is covered by a test
	}
	return rs
}

// NewRoutes checks and copies rules: patterns are "METHOD /path", services and literal operations
// valid non-wildcard segments, a path-value operation or Self a name the pattern declares.
func NewRoutes(rules map[string]Rule) (*Routes, error) {
	out := make(map[string]Rule, len(rules))
	for pattern, r := range rules {
		method, path, ok := strings.Cut(pattern, " ")
		if !ok || method == "" || !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("scope routes: pattern %q: want \"METHOD /path\"", pattern)
		}
		if err := literalSegment(r.Service); err != nil {
			return nil, fmt.Errorf("scope routes: %s: service: %w", pattern, err)
		}
		if name, isParam := pathParam(r.Operation); isParam {
			if !strings.Contains(path, "{"+name+"}") {
				return nil, fmt.Errorf("scope routes: %s: operation names path value %q the pattern lacks", pattern, name)
			}
		} else if err := literalSegment(r.Operation); err != nil {
			return nil, fmt.Errorf("scope routes: %s: operation: %w", pattern, err)
		}
		if r.Self != "" && !strings.Contains(path, "{"+r.Self+"}") {
			return nil, fmt.Errorf("scope routes: %s: self names path value %q the pattern lacks", pattern, r.Self)
		}
		out[pattern] = r
	}
	return &Routes{rules: out}, nil
}

func literalSegment(s string) error {
	if s == Wildcard {
		return fmt.Errorf("a rule needs a concrete segment, not %q", Wildcard)
	}
	return ValidSegment(s)
}

func pathParam(op string) (string, bool) {
	if len(op) > 2 && op[0] == '{' && op[len(op)-1] == '}' {
		return op[1 : len(op)-1], true
	}
	return "", false
}

// Patterns returns the patterns of the table, sorted (for docs and tests).
func (rs *Routes) Patterns() []string { return slices.Sorted(maps.Keys(rs.rules)) }

// Rule returns the rule of pattern.
func (rs *Routes) Rule(pattern string) (Rule, bool) {
	r, ok := rs.rules[pattern]
	return r, ok
}

// Need returns the scope the operation of pattern needs for a caller of tenantID ("" for a
// tenant-less caller, which then needs the tenant wildcard). pathValue supplies the request's path
// values (http.Request.PathValue). ok is false when the pattern is not in the table; err is an
// errs.Invalid when the path value that becomes the operation is not a valid segment.
func (rs *Routes) Need(pattern, tenantID string, pathValue func(string) string) (need Scope, ok bool, err error) {
	r, ok := rs.rules[pattern]
	if !ok {
		return Scope{}, false, nil
	}
	op := r.Operation
	if name, isParam := pathParam(op); isParam {
		op = pathValue(name)
		// A path value of "*" would need, and so match, only wildcard grants; refusing it keeps
		// needed scopes concrete and the error clear.
		if err := literalSegment(op); err != nil {
			return Scope{}, true, errs.Field("path."+name, "not usable in a scope: "+err.Error())
		}
	}
	if tenantID == "" {
		tenantID = Wildcard
	}
	return Scope{Service: r.Service, Operation: op, Tenant: tenantID}, true, nil
}

// Check authorises r, which the ServeMux has routed (r.Pattern is set), for workload w granted
// granted. It returns the scope the operation needs (for the audit record; zero when the
// operation is not open to workloads) and nil, or an *errs.Error: Forbidden when the operation is
// not in the table (cause ErrNotOpen), when the scope is not granted (naming the scope; cause
// ErrMissingScope) or when a Self path value names another agent (cause ErrNotSelf); Invalid when a path value cannot become a
// scope segment. Every Forbidden must be audited by the caller.
func (rs *Routes) Check(r *http.Request, w Workload, granted []Scope) (Scope, error) {
	need, ok, err := rs.Need(r.Pattern, w.Tenant, r.PathValue)
	switch {
	case err != nil:
		return Scope{}, err
	case !ok:
		return Scope{}, errs.Wrap(errs.Forbidden, fmt.Errorf("%w: %s", ErrNotOpen, r.Pattern),
			"this operation is not open to workload identities")
	}
	if err := Check(granted, need); err != nil {
		return need, err
	}
	if self := rs.rules[r.Pattern].Self; self != "" {
		if w.Kind != KindAgent || r.PathValue(self) != w.Agent {
			return need, errs.Wrap(errs.Forbidden, fmt.Errorf("%w: path value %s is not the caller %s", ErrNotSelf, self, w.ID),
				"an agent may perform this operation for itself only")
		}
	}
	return need, nil
}
