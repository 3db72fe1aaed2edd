package events

import (
	"math"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// Sources of a BillingUsage record: which part of the kernel served the metered call.
const (
	UsageSourceGateway    = "gateway"    // an HTTP call accepted by the Zero Agent Gateway (issue 5)
	UsageSourceInvocation = "invocation" // a completed POST /v1/invoke/{capability} call (issue 6)
)

// Limits of the BillingUsage fields that hold free text; the schema states the same.
const (
	MaxUsageRouteLength      = 256 // characters of Route
	MaxUsageCapabilityLength = 128 // characters of Capability (registry.MaxCapabilityNameLen)
	MaxUsageRequestIDLength  = 128 // characters of RequestID (the request id middleware's limit)
)

// BillingUsage is the data of nops.billing.usage.v1: one metered call, for add-on billing and
// scorecard services. The kernel emits one per accepted gateway call and per completed
// invocation. Its subject is UsageSubject(Tenant). It holds sizes and times only: never a
// header, a body, a credential or a client address. Consumers dedupe on the event id (a record
// may be delivered twice, never written twice with two ids).
type BillingUsage struct {
	Tenant  string `json:"tenant"`             // the tenant billed
	AgentID string `json:"agent_id,omitempty"` // the agent that called (gateway) or was called (invocation)
	Source  string `json:"source"`             // UsageSourceGateway | UsageSourceInvocation
	// Route is the matched route pattern, method and path template ("POST
	// /v1/agents/{agent_id}/heartbeat"), never the concrete path: required for the gateway.
	Route string `json:"route,omitempty"`
	// Capability is the invoked capability: required for an invocation.
	Capability    string    `json:"capability,omitempty"`
	RequestID     string    `json:"request_id,omitempty"` // the X-Request-ID the call was served under
	Status        int       `json:"status"`               // the HTTP status answered, 100..599
	RequestBytes  int64     `json:"request_bytes"`        // body bytes read from the caller, ≥ 0
	ResponseBytes int64     `json:"response_bytes"`       // body bytes written to the caller, ≥ 0
	DurationMs    float64   `json:"duration_ms"`          // from StartedAt to the last byte, ≥ 0
	StartedAt     time.Time `json:"started_at"`           // when the call was accepted, UTC
}

// EventType implements Payload.
func (BillingUsage) EventType() Type { return TypeBillingUsage }

// EventTenant implements Payload.
func (p BillingUsage) EventTenant() string { return p.Tenant }

// EventSubject implements Payload.
func (p BillingUsage) EventSubject() string { return UsageSubject(p.Tenant) }

// Validate implements Payload. It checks what api/events/nops.billing.usage.v1.json does, field
// for field.
func (p BillingUsage) Validate() error {
	if err := checkID("data.tenant", p.Tenant); err != nil {
		return err
	}
	if p.AgentID != "" {
		if err := checkID("data.agent_id", p.AgentID); err != nil {
			return err
		}
	}
	if err := checkEnum("data.source", p.Source, UsageSourceGateway, UsageSourceInvocation); err != nil {
		return err
	}
	if p.Route != "" || p.Source == UsageSourceGateway {
		if !asciiText(p.Route, MaxUsageRouteLength, true) {
			return errs.Field("data.route", "must be 1 to 256 printable ASCII characters (required for the gateway)")
		}
	}
	if p.Capability != "" || p.Source == UsageSourceInvocation {
		if !asciiText(p.Capability, MaxUsageCapabilityLength, false) {
			return errs.Field("data.capability", "must be 1 to 128 printable ASCII characters without spaces (required for an invocation)")
		}
	}
	if p.RequestID != "" && !requestIDToken(p.RequestID) {
		return errs.Field("data.request_id", "must be 1 to 128 characters from A-Z, a-z, 0-9, '.', '_', ':' and '-'")
	}
	if p.Status < 100 || p.Status > 599 {
		return errs.Field("data.status", "must be an HTTP status from 100 to 599")
	}
	if p.RequestBytes < 0 {
		return errs.Field("data.request_bytes", "must not be negative")
	}
	if p.ResponseBytes < 0 {
		return errs.Field("data.response_bytes", "must not be negative")
	}
	if !(p.DurationMs >= 0) || math.IsInf(p.DurationMs, 1) {
		return errs.Field("data.duration_ms", "must be a finite number that is not negative")
	}
	return checkTime("data.started_at", p.StartedAt)
}

// asciiText reports whether s is 1 to max characters of printable ASCII (space included when
// space is set): the schema's patterns "^[ -~]{1,256}$" and "^[!-~]{1,128}$".
func asciiText(s string, max int, space bool) bool {
	if s == "" || len(s) > max {
		return false
	}
	lo := byte('!')
	if space {
		lo = ' '
	}
	for i := 0; i < len(s); i++ {
		if s[i] < lo || s[i] > '~' {
			return false
		}
	}
	return true
}

// requestIDToken reports whether s is a request id the request id middleware would keep: 1 to
// 128 characters from [A-Za-z0-9._:-].
func requestIDToken(s string) bool {
	if s == "" || len(s) > MaxUsageRequestIDLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') &&
			c != '.' && c != '_' && c != ':' && c != '-' {
			return false
		}
	}
	return true
}
