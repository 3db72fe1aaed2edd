package events

import (
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// Circuit breaker states of AgentBreakerChanged; internal/invoke uses the same strings.
const (
	BreakerClosed   = "closed"
	BreakerHalfOpen = "half_open"
	BreakerOpen     = "open"
)

// AgentBreakerChanged is the data of nops.agent.breaker_changed.v1: a kernel replica's circuit
// breaker for one agent changed state (closed → open after consecutive failures, open →
// half_open after the breaker delay, half_open → closed or open after the probes). Breakers are
// per replica: Kernel names the replica whose breaker it is. Subject agents/<id>.
type AgentBreakerChanged struct {
	AgentID   string    `json:"agent_id"`
	Tenant    string    `json:"tenant"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	Kernel    string    `json:"kernel,omitempty"` // the replica (host name), when known
	ChangedAt time.Time `json:"changed_at"`       // UTC
}

// EventType implements Payload.
func (AgentBreakerChanged) EventType() Type { return TypeAgentBreakerChanged }

// EventTenant implements Payload.
func (p AgentBreakerChanged) EventTenant() string { return p.Tenant }

// EventSubject implements Payload.
func (p AgentBreakerChanged) EventSubject() string { return AgentSubject(p.AgentID) }

// ValidKernelName reports whether s may be AgentBreakerChanged.Kernel.
func ValidKernelName(s string) bool { return asciiText(s, 255, false) }

func breakerState(s string) bool {
	return s == BreakerClosed || s == BreakerHalfOpen || s == BreakerOpen
}

// Validate implements Payload; it checks what api/events/nops.agent.breaker_changed.v1.json does.
func (p AgentBreakerChanged) Validate() error {
	if err := checkID("data.agent_id", p.AgentID); err != nil {
		return err
	}
	if err := checkID("data.tenant", p.Tenant); err != nil {
		return err
	}
	if !breakerState(p.From) {
		return errs.Field("data.from", "must be closed, half_open or open")
	}
	if !breakerState(p.To) || p.To == p.From {
		return errs.Field("data.to", "must be closed, half_open or open, and differ from data.from")
	}
	if p.Kernel != "" && !ValidKernelName(p.Kernel) {
		return errs.Field("data.kernel", "must be 1 to 255 printable ASCII characters without spaces")
	}
	return checkTime("data.changed_at", p.ChangedAt)
}
