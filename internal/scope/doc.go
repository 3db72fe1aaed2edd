// Package scope is the authorization of service-to-service calls: hierarchical scopes of the form
// service:operation:tenant ("registry:heartbeat:ten_x", "invoke:*:ten_x", "*:*:*"), the default
// scopes a workload identity (an agent's or a kernel's SPIFFE ID) is granted, and the table that
// says which scope each API operation needs.
//
// Who may import it: internal/httpapi (the admission of requests authenticated by an X.509-SVID on
// the mTLS listener), internal/kernel (configuration of the tables) and tests. It imports only
// errs, principal and the ID prefixes of tenant and registry, plus go-spiffe's spiffeid.
//
// # Scopes
//
// A scope has exactly three segments separated by ':'. A segment is either the wildcard "*" or
// 1 to MaxSegmentLen bytes of [A-Za-z0-9._-] (the characters of tenant IDs, capability names and
// SPIFFE path segments, so no escaping is ever needed). Partial wildcards ("reg*") are refused: a
// prefix match on tenant IDs would be a cross-tenant hole waiting to happen.
//
// A granted scope covers a needed one when every segment is "*" or equal. Coverage is plain set
// inclusion, so a needed scope that itself contains "*" is covered only by a grant with "*" in the
// same place: a tenant-less caller (a kernel) needs "invoke:x:*" and therefore a grant for every
// tenant.
//
// # Workloads and their default scopes
//
// ParseWorkload reads what a SPIFFE ID of the kernel's trust domain names:
//
//	spiffe://<td>/tenant/<ten_…>/agent/<agt_…>   an agent of a tenant
//	spiffe://<td>/kernel/<node>                  a kernel replica
//
// Any other path names nothing and is granted nothing. Table maps each kind to scope templates in
// which "{tenant}" is replaced by the workload's tenant; DefaultTable is documented in docs/mtls.md.
//
// # Operations
//
// Routes maps a ServeMux pattern ("POST /v1/agents/{agent_id}/heartbeat") to a Rule: the service
// and the operation (a literal or a path value such as "{capability}"), and optionally a path
// value that must name the calling agent itself (an agent heartbeats for itself only). The tenant
// segment of the needed scope is the caller's tenant, never one named by the request. An
// operation missing from the table is refused to workload identities: the table is an allow-list.
//
// Usage inside the ServeMux (where r.Pattern and the path values are set):
//
//	w, err := scope.ParseWorkload(id, td)            // id from mtls.PeerID(r)
//	granted, err := table.For(w)
//	need, err := routes.Check(r, w, granted)         // errs.Forbidden naming need; audit it
//
// # Concurrency
//
// Scope, Workload, Table and Routes are values that are not modified after construction; all are
// safe for concurrent use.
package scope
