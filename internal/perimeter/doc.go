// Package perimeter holds each tenant's perimeter settings: whether every request of the tenant
// must carry a verified RFC 9421 signature (RequireSignatures), and from which networks its agents
// may use the Zero Agent Gateway (GatewayOrigins, CIDR prefixes). The settings are managed through
// PUT /v1/tenants/{id}/perimeter and read on every request by the HTTP perimeter.
//
// Who may import it: internal/control (the audited update), internal/httpapi (the handlers and
// the request chain, which calls Lookup), internal/kernel (wiring, Refresh and Run) and the
// storage adapters (they implement Store). It imports errs and tenant of the project.
//
// # Defaults
//
// A tenant that never set its perimeter has the zero Settings: signatures not required, no
// gateway origins (the gateway refuses the tenant), Version 0. Get and Lookup return those defaults when there is no row, so
// callers never need to tell "unset" from "set to the defaults". The first Put stores version 1.
//
// # Origins
//
// GatewayOrigins holds at most MaxGatewayOrigins prefixes. Each is given as a CIDR prefix
// ("10.0.0.0/8", "2001:db8::/32") or a bare address (a /32 or /128); a prefix with host bits
// set, an IPv4-mapped IPv6 prefix or an address with a zone is refused with an errs.Field naming
// "body.gateway_origins[i]". Stored prefixes are canonical, sorted and without duplicates. The
// gateway is opt-in: an empty list admits no address (Settings.AllowsOrigin).
//
// # Concurrency and replicas
//
// Lookup is the request path: it reads an immutable map through an atomic pointer, with no lock
// and no I/O. Refresh replaces the map whole, only when the store's generation (a counter that
// triggers bump on every change, a tenant's cascading deletion included) moved; refreshes are
// serialised so an older read never replaces a newer one. Run refreshes every interval (default
// DefaultRefreshInterval, 2 s), so replicas converge within it; internal/control refreshes this
// replica at once after a committed Put. Until the first successful Refresh, Lookup answers the
// defaults for every tenant: the kernel calls Refresh before it serves (Loaded tells).
//
// Put is a compare-and-set on Version. With an If-Match value it fails with
// errs.PreconditionFailed when the settings changed since that ETag; without one, a write that
// lost a race re-reads and retries a few times. Service is safe for concurrent use.
package perimeter
