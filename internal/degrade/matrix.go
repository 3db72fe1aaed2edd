package degrade

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/nops-kernel/nops/internal/middleware"
)

// Class is how much something matters when the kernel degrades: middleware.Critical,
// middleware.Essential or middleware.BestEffort. It is the perimeter's load-shedding class, so
// the matrix and the in-flight gates speak one language.
type Class = middleware.Criticality

// The classes, for the table below.
const (
	Critical   = middleware.Critical
	Essential  = middleware.Essential
	BestEffort = middleware.BestEffort
)

// Route is one operation's row of the matrix.
type Route struct {
	Class Class
	// Write is true when the operation changes the database: refused (503, Retry-After) in
	// read_only mode. Reads, and the few POSTs that only read (a login), are false.
	Write bool
	// Why explains a class that is not the default one of its kind, for docs/criticality.md.
	Why string
}

// rd and wr shorten the table.
func rd(c Class, why string) Route { return Route{Class: c, Why: why} }
func wr(c Class, why string) Route { return Route{Class: c, Write: true, Why: why} }

// Routes classifies every operation of api/kernel.yaml, keyed by its "METHOD /path" pattern. A
// test fails when an operation of the spec is missing here, or when a row names no operation.
//
// The rules: probes, token verification, heartbeats and invocations are critical (an agent
// missing heartbeats is taken out of routing; invocations are the product and carry billing);
// logins, changes to the registry and to security objects are essential; reads of consoles,
// statistics and the event tooling are best effort.
var Routes = map[string]Route{
	"GET /.well-known/jwks.json": rd(Critical, "other services verify the kernel's tokens with it"),
	"GET /_readyz":               rd(Critical, "probe"),
	"GET /health":                rd(Critical, "probe"),
	"GET /healthz":               rd(Critical, "probe; shows the degraded modes"),
	"GET /metrics":               rd(Critical, "scrape: alerts depend on it"),
	"GET /openapi.json":          rd(BestEffort, ""),
	"GET /v1/status":             rd(Critical, "the status board operators watch during an incident"),

	"GET /.well-known/oauth-protected-resource": rd(Essential, "MCP clients discover how to authenticate with it"),
	"POST /mcp":                                     wr(Critical, "MCP tools/call is an invocation (billing.usage, audit); tools/list only reads"),
	"GET /v1/mcp/tools":                             rd(BestEffort, ""),
	"POST /v1/mcp/tools/{tool}/approval":            wr(Essential, ""),
	"GET /v1/admin/api-keys/expiring":               rd(Essential, "key-compromise and rotation runbooks read it"),
	"POST /v1/admin/api-keys/{key_id}/force-rotate": wr(Essential, "a leaked key must be refused at once"),
	"GET /v1/admin/secrets/status":                  rd(Essential, "key-compromise runbooks read it"),
	"GET /v1/admin/chaos":                           rd(Essential, "game days read the faults in force"),
	"PUT /v1/admin/chaos":                           wr(Critical, "lifts a game day's faults: never shed"),
	"GET /v1/admin/signing-keys":                    rd(Essential, "key-compromise runbooks read it"),
	"POST /v1/admin/signing-keys/rotate":            wr(Essential, ""),
	"GET /v1/agents":                                rd(BestEffort, ""),
	"POST /v1/agents":                               wr(Essential, ""),
	"DELETE /v1/agents/{agent_id}":                  wr(Essential, ""),
	"GET /v1/agents/{agent_id}":                     rd(BestEffort, ""),
	"PUT /v1/agents/{agent_id}":                     wr(Essential, ""),
	"POST /v1/agents/{agent_id}/heartbeat":          wr(Critical, "an agent missing heartbeats is taken out of routing"),
	"GET /v1/api-keys":                              rd(BestEffort, ""),
	"POST /v1/api-keys":                             wr(Essential, ""),
	"DELETE /v1/api-keys/{key_id}":                  wr(Essential, "revoking a leaked key must not wait"),
	"GET /v1/api-keys/{key_id}":                     rd(BestEffort, ""),
	"POST /v1/api-keys/{key_id}/rotate":             wr(Essential, ""),

	"GET /v1/audit":                   rd(BestEffort, ""),
	"GET /v1/audit/checkpoint":        rd(Essential, "auditors verify the trail with it"),
	"GET /v1/audit/proof/consistency": rd(Essential, "auditors verify the trail with it"),
	"GET /v1/audit/proof/inclusion":   rd(Essential, "auditors verify the trail with it"),
	"GET /v1/audit/verify":            rd(BestEffort, "walks the whole trail: expensive"),

	"POST /v1/auth/token":      rd(Essential, "a login only reads (failed logins are audited when the database takes writes)"),
	"GET /v1/auth/whoami":      rd(BestEffort, ""),
	"GET /v1/dlq":              rd(BestEffort, ""),
	"POST /v1/dlq/reprocess":   wr(BestEffort, "bulk event work; publishes through the bus"),
	"GET /v1/events/consumers": rd(BestEffort, ""),
	"POST /v1/events/replay":   wr(BestEffort, "bulk event work"),
	"GET /v1/events/stats":     rd(BestEffort, ""),

	"GET /v1/flags":                  rd(BestEffort, ""),
	"DELETE /v1/flags/{key}":         wr(Essential, "manual degradation toggles are flags"),
	"GET /v1/flags/{key}":            rd(BestEffort, ""),
	"PUT /v1/flags/{key}":            wr(Essential, "manual degradation toggles are flags"),
	"GET /v1/flags/{key}/evaluation": rd(Essential, "add-ons branch on flags"),

	"GET /v1/identity/bundle":       rd(Critical, "every mTLS peer verifies with it"),
	"POST /v1/identity/ca/rotate":   wr(Essential, ""),
	"GET /v1/identity/revocations":  rd(Essential, ""),
	"POST /v1/identity/revocations": wr(Essential, "revoking a compromised identity must not wait"),
	"POST /v1/identity/svid":        wr(Critical, "agents renew their SVIDs before they expire"),

	"GET /v1/invocations/{invocation_id}": rd(Essential, "callers poll async results"),
	"POST /v1/invoke/{capability}":        wr(Critical, "the product; every call emits billing.usage"),

	"GET /v1/policies":                     rd(BestEffort, ""),
	"POST /v1/policies":                    wr(Essential, ""),
	"DELETE /v1/policies/{policy_id}":      wr(Essential, ""),
	"GET /v1/policies/{policy_id}":         rd(BestEffort, ""),
	"PUT /v1/policies/{policy_id}":         wr(Essential, ""),
	"GET /v1/rate-limits":                  rd(BestEffort, ""),
	"POST /v1/rate-limits":                 wr(Essential, ""),
	"DELETE /v1/rate-limits/{override_id}": wr(Essential, ""),
	"GET /v1/rate-limits/{override_id}":    rd(BestEffort, ""),

	"GET /v1/request-keys":                  rd(BestEffort, ""),
	"POST /v1/request-keys":                 wr(Essential, ""),
	"DELETE /v1/request-keys/{key_id}":      wr(Essential, ""),
	"GET /v1/request-keys/{key_id}":         rd(BestEffort, ""),
	"POST /v1/request-keys/{key_id}/rotate": wr(Essential, ""),

	"GET /v1/routes":                 rd(BestEffort, ""),
	"DELETE /v1/routes/{capability}": wr(Essential, ""),
	"GET /v1/routes/{capability}":    rd(BestEffort, ""),
	"PUT /v1/routes/{capability}":    wr(Essential, ""),
	"GET /v1/system/config":          rd(BestEffort, ""),

	"GET /v1/tenants":                       rd(BestEffort, ""),
	"POST /v1/tenants":                      wr(Essential, ""),
	"DELETE /v1/tenants/{tenant_id}":        wr(Essential, ""),
	"GET /v1/tenants/{tenant_id}":           rd(BestEffort, ""),
	"GET /v1/tenants/{tenant_id}/perimeter": rd(BestEffort, ""),
	"PUT /v1/tenants/{tenant_id}/perimeter": wr(Essential, ""),
	"POST /v1/tenants/{tenant_id}/resume":   wr(Essential, ""),
	"POST /v1/tenants/{tenant_id}/suspend":  wr(Essential, "suspending an abusive tenant must not wait"),
}

// Capabilities is the matrix row of each agent criticality (the registry's agent field
// "criticality", default best_effort, which invocations inherit): what each degraded mode does
// to calls of agents of that class. The invoke route itself is critical (the edge never sheds it);
// Monitor.AdmitAgent sheds the best-effort agents inside the call.
var Capabilities = map[Class]string{
	Critical:   "invocations served in bus_down and shed_best_effort; refused (503) in read_only, where their billing.usage event could not be written",
	Essential:  "as critical",
	BestEffort: "as critical, except in shed_best_effort: the call goes only to the capability's critical and essential agents, and is refused (503 with Retry-After) when it has none — best-effort work is shed first",
}

// Consumers classifies the event consumers the kernel runs, by name (a name ending in "-" is a
// prefix: one consumer per replica).
var Consumers = map[string]Route{
	"event-stats": wr(BestEffort, "a projection for the console; in read_only its writes fail and are retried (then dead-lettered: replay after recovery)"),
	"invocations": wr(Critical, "runs accepted async invocations and records their billing.usage"),
	"flags-":      rd(Essential, "reloads feature flags (and so the manual degradation toggles) on every replica"),
}

// Matrix finds the row of a request before the router runs, with the same patterns.
type Matrix struct {
	mux *http.ServeMux
}

// NewMatrix builds the lookup over Routes.
func NewMatrix() (*Matrix, error) {
	mux := http.NewServeMux()
	noop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	for _, p := range slices.Sorted(maps.Keys(Routes)) {
		if err := register(mux, p, noop); err != nil {
			return nil, err
		}
	}
	return &Matrix{mux: mux}, nil
}

func register(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("degrade: pattern %q: %v", pattern, p)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// Lookup returns the pattern and row of r's operation; ok is false for a request that matches
// no operation (it will be a 404 or 405): such requests are best effort and not writes.
func (m *Matrix) Lookup(r *http.Request) (pattern string, row Route, ok bool) {
	_, pattern = m.mux.Handler(r)
	row, ok = Routes[pattern]
	if !ok {
		return "", Route{Class: BestEffort}, false
	}
	return pattern, row, true
}

// Consumer returns the row of the consumer named name.
func Consumer(name string) (Route, bool) {
	if r, ok := Consumers[name]; ok {
		return r, true
	}
	for prefix, r := range Consumers {
		if strings.HasSuffix(prefix, "-") && strings.HasPrefix(name, prefix) {
			return r, true
		}
	}
	return Route{}, false
}
