package events

import (
	"math"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// Outcomes of a completed invocation (InvocationCompleted.Outcome); internal/invoke uses the same
// strings and the schema lists them.
const (
	InvocationOK          = "ok"           // the agent answered 1xx–3xx
	InvocationClientError = "client_error" // the agent answered 4xx
	InvocationError       = "error"        // the agent answered 5xx, or the call failed in transport
	InvocationTimeout     = "timeout"      // no answer within the call's deadline
	InvocationRejected    = "rejected"     // no agent could take the call
)

// InvocationSubject returns the subject of a tenant's invocation events: "tenants/<id>/invocations".
// Like UsageSubject it is apart from TenantSubject, so that a consumer can select invocations by
// subject and a held-back invocation record never delays the tenant's state changes.
func InvocationSubject(tenant string) string { return "tenants/" + tenant + "/invocations" }

// InvocationRequested is the data of nops.invocation.requested.v1: an async invocation was
// accepted (POST /v1/invoke/{capability} with Prefer: respond-async) and waits to be run. The
// kernel's "invocations" consumer runs it; the request itself (body, headers) stays in the
// database, never in the event.
type InvocationRequested struct {
	InvocationID string    `json:"invocation_id"`
	Tenant       string    `json:"tenant"`
	Capability   string    `json:"capability"`
	CreatedAt    time.Time `json:"created_at"` // when the invocation was accepted, UTC
}

// EventType implements Payload.
func (InvocationRequested) EventType() Type { return TypeInvocationRequested }

// EventTenant implements Payload.
func (p InvocationRequested) EventTenant() string { return p.Tenant }

// EventSubject implements Payload.
func (p InvocationRequested) EventSubject() string { return InvocationSubject(p.Tenant) }

// Validate implements Payload; it checks what api/events/nops.invocation.requested.v1.json does.
func (p InvocationRequested) Validate() error {
	if err := checkID("data.invocation_id", p.InvocationID); err != nil {
		return err
	}
	if err := checkID("data.tenant", p.Tenant); err != nil {
		return err
	}
	if !asciiText(p.Capability, MaxUsageCapabilityLength, false) {
		return errs.Field("data.capability", "must be 1 to 128 printable ASCII characters without spaces")
	}
	return checkTime("data.created_at", p.CreatedAt)
}

// InvocationCompleted is the data of nops.invocation.completed.v1: one call of a capability
// ended, synchronous or async, for add-on billing, scorecard and workflow services. Like
// BillingUsage it holds sizes, times and the outcome only: never a body, a header or a
// credential. Consumers dedupe on the event id.
type InvocationCompleted struct {
	InvocationID string `json:"invocation_id"`
	Tenant       string `json:"tenant"`
	Capability   string `json:"capability"`
	AgentID      string `json:"agent_id,omitempty"` // the agent that answered; absent when none did
	// Status is the HTTP status the caller got (sync) or that the invocation's result records
	// (async): the agent's, or the kernel's error status when no agent answered.
	Status        int       `json:"status"`
	Outcome       string    `json:"outcome"`              // one of the Invocation* outcomes
	Attempts      int       `json:"attempts"`             // requests sent to agents (retries and hedges included), ≥ 0
	RequestBytes  int64     `json:"request_bytes"`        // body bytes sent, ≥ 0
	ResponseBytes int64     `json:"response_bytes"`       // body bytes of the answer, ≥ 0
	DurationMs    float64   `json:"duration_ms"`          // from StartedAt to the end of the call, ≥ 0
	StartedAt     time.Time `json:"started_at"`           // when the call started, UTC
	Async         bool      `json:"async"`                // the call ran for an async invocation
	RequestID     string    `json:"request_id,omitempty"` // the X-Request-ID the call was made under
}

// EventType implements Payload.
func (InvocationCompleted) EventType() Type { return TypeInvocationCompleted }

// EventTenant implements Payload.
func (p InvocationCompleted) EventTenant() string { return p.Tenant }

// EventSubject implements Payload.
func (p InvocationCompleted) EventSubject() string { return InvocationSubject(p.Tenant) }

// Validate implements Payload; it checks what api/events/nops.invocation.completed.v1.json does,
// field for field.
func (p InvocationCompleted) Validate() error {
	if err := checkID("data.invocation_id", p.InvocationID); err != nil {
		return err
	}
	if err := checkID("data.tenant", p.Tenant); err != nil {
		return err
	}
	if !asciiText(p.Capability, MaxUsageCapabilityLength, false) {
		return errs.Field("data.capability", "must be 1 to 128 printable ASCII characters without spaces")
	}
	if p.AgentID != "" {
		if err := checkID("data.agent_id", p.AgentID); err != nil {
			return err
		}
	}
	if p.Status < 100 || p.Status > 599 {
		return errs.Field("data.status", "must be an HTTP status from 100 to 599")
	}
	if err := checkEnum("data.outcome", p.Outcome, InvocationOK, InvocationClientError, InvocationError, InvocationTimeout, InvocationRejected); err != nil {
		return err
	}
	if p.Attempts < 0 {
		return errs.Field("data.attempts", "must not be negative")
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
	if p.RequestID != "" && !requestIDToken(p.RequestID) {
		return errs.Field("data.request_id", "must be 1 to 128 characters from A-Z, a-z, 0-9, '.', '_', ':' and '-'")
	}
	return checkTime("data.started_at", p.StartedAt)
}
