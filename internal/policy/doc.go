// Package policy is the kernel's attribute-based access control (ABAC): policies written as CEL
// expressions (cel.dev/cel-go) over the request, compiled once when written or loaded, evaluated
// with a cost limit on every request that RBAC has already allowed. Policies come from the store
// (per tenant, through /v1/policies; Service) and from YAML files (LoadDir); the Engine merges
// both. `nops policy test <dir>` runs the test cases of policy files with the same Engine
// (RunTests). docs/policies.md is the guide for tenants.
//
// Who imports it: internal/control (audited create, update, delete), internal/httpapi and the
// perimeter middleware (Evaluate), internal/kernel (wiring, Refresh and Run), cmd/nops (the test
// command), and the storage adapters (they implement Store). policy imports errs, principal,
// rbac and tenant of the project.
//
// # Input
//
// A policy sees five variables, declared with types so that a misspelt field or a comparison of
// mismatched types is refused when the policy is written, not discovered on a request:
//
//	principal  policy.Principal{subject, role, roles, tenant, scopes, labels, kind}
//	resource   policy.Resource{tenant, type, id, labels, criticality}
//	action     string  ("agents.update", or the API operation)
//	capability string  ("" when none)
//	request    policy.Request{time (timestamp), ip, method, path, mtls_id ("" when none), signed (bool)}
//
// labels are map(string, string); roles and scopes are list(string). The objects are the Go
// structs of this package exposed through cel-go's ext.NativeTypes (field names from their `cel`
// tags): unlike maps of dyn, this gives the checker every field and its type. Besides standard
// CEL (timestamps with time zones: request.time.getHours("Europe/Paris")), expressions may use
// cel-go's strings extension, its network extension (ip("…"), cidr("10.0.0.0/8").containsIP(
// request.ip)) and optional values (principal.labels.?team.orValue("")).
//
// # Decisions
//
// Evaluate decides a request RBAC has allowed. The policies that apply are the enabled global
// policies (TenantID "") and the enabled policies of the principal's tenant. A principal above
// tenants (SUPER_ADMIN) answers to the global policies only, so a tenant's policies can never
// lock the operator out of that tenant. Then:
//
//  1. If a deny policy evaluates to true, the request is denied, naming that policy: deny
//     overrides allow.
//  2. Otherwise, if at least one allow policy applies, one of them must evaluate to true (the
//     decision names it); if none does, the request is denied: "no allow policy matched".
//  3. Otherwise the request is allowed.
//
// Failures fail closed. A deny policy whose evaluation fails (a missing map key, a bad value)
// denies, naming it; an allow policy whose evaluation fails does not match. A policy of either
// effect cut off by the cost limit denies: "policy pol_x exceeded its cost limit". A stored
// policy that no longer compiles (after a kernel upgrade) stays in force as a failing policy.
// An engine backed by a store denies everything until its first successful Refresh. Deny policies
// are evaluated before allow policies, global before tenant, in ID order, and evaluation stops
// at the first decision.
//
// # Cost
//
// Each evaluation of a policy runs under Options.CostLimit (default 10000 cel-go cost units;
// typical policies cost under 50) with context interruption checks inside comprehensions. At
// write and load time a policy whose estimated worst-case cost exceeds Options.EstimatedCostLimit
// (default: CostLimit) is refused. The estimate assumes inputs at these bounds (see sizeHints):
// 64 scopes of 128 bytes, 8 roles, 64 labels per map with 317-byte keys and 63-byte values,
// 2048-byte request paths and mTLS IDs, 256-byte subjects; larger inputs are still evaluated, and
// the runtime limit bounds them.
//
// # Compilation
//
// Compile, Service and SetFilePolicies accept an expression only if it parses, type-checks, is a
// bool and fits the estimated cost. A refusal is a *CompileError whose messages are the
// compiler's, each "line:column: message"; Service returns it as errs.Field("body.expression").
// Programs are planned once (constant arguments such as cidr('10.0.0.0/8') or a regular
// expression are evaluated, and checked, at that point) and shared by every evaluation.
//
// # Files
//
// LoadDir and ReadDir read every *.yaml / *.yml file directly in a directory. A file holds
// policies, test cases, or both; unknown keys are errors:
//
//	policies:
//	  - name: no-deletes-of-critical-agents   # required; unique per tenant
//	    id: critical-agents                   # optional; default "file:<name>"; never "pol_…"
//	    tenant: ten_01…                       # optional; absent: a global policy
//	    effect: deny                          # allow | deny
//	    enabled: true                         # optional; default true
//	    description: Critical agents are changed through change management only.
//	    expression: |
//	      action == "agents.delete" && resource.criticality == "critical"
//	tests:
//	  - name: an operator cannot delete a critical agent
//	    input:                                # Input, with the CEL field names
//	      principal: {subject: usr_1, role: OPERATOR, tenant: ten_01…, scopes: [agents:write]}
//	      resource: {tenant: ten_01…, type: agent, id: agt_1, criticality: critical}
//	      action: agents.delete
//	      request: {time: 2026-01-05T10:00:00Z, ip: 192.0.2.10, method: DELETE, path: /v1/agents/agt_1}
//	    expect: deny                          # allow | deny
//	    policy: no-deletes-of-critical-agents # optional: ID or name of the deciding policy
//
// A file that does not parse, or a policy that does not compile, refuses the whole directory
// with "file:policy-name: message" for each problem, and the engine keeps what it had. Omitted
// input fields are empty (request.time: the zero timestamp, 0001-01-01T00:00:00Z).
//
// # Replicas
//
// Stored policies carry a store-wide generation, bumped by every write (a trigger, so a tenant's
// deletion counts too). Refresh reads it, and reads every policy only when it changed; Run
// refreshes every interval (default 2 s), so replicas converge within one interval, and Service
// Refresh after a committed change makes the replica that made it see it at once.
//
// # Concurrency
//
// Evaluate takes no lock: it reads an immutable snapshot (programs, per-tenant index) through an
// atomic pointer, and a request with no applicable policy costs one map lookup. Rebuilds
// (Refresh, LoadDir, SetFilePolicies) are serialised by a mutex and reuse the programs of
// unchanged policies. Engine, Service and compiled programs are safe for concurrent use.
package policy
