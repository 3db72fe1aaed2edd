package events

import (
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// Payload is the data of one catalogue event type. Every payload struct below implements it
// with value receivers, so a value or a pointer may be passed to New. Payloads carry public
// fields only: never a secret, a secret's hash or a pepper.
type Payload interface {
	// EventType is the catalogue type whose data this is.
	EventType() Type
	// EventTenant is the tenant the resource belongs to: the envelope's tenant attribute.
	EventTenant() string
	// EventSubject is the resource the event is about: the envelope's subject attribute.
	EventSubject() string
	// Validate reports the first missing or malformed field as an errs.Invalid naming it
	// ("data.agent.id").
	Validate() error
}

// checkAgentStatus, checkCriticality and checkTenantStatus accept the values issue 3 fixes; the
// schemas under api/events list the same ones (TestEnumsAgree).
func checkAgentStatus(field, v string) error {
	return checkEnum(field, v, "healthy", "stale", "zombie")
}

func checkCriticality(field, v string) error {
	return checkEnum(field, v, "critical", "essential", "best_effort")
}

func checkTenantStatus(field, v string) error { return checkEnum(field, v, "active", "suspended") }

// AgentSnapshot is the public state of an agent after a change.
type AgentSnapshot struct {
	ID           string            `json:"id"`
	Tenant       string            `json:"tenant"`
	Name         string            `json:"name"`
	Version      string            `json:"version"`                // the agent's semver
	Capabilities []string          `json:"capabilities,omitempty"` // capability names
	Endpoint     string            `json:"endpoint"`               // absolute http(s) URL
	Labels       map[string]string `json:"labels,omitempty"`
	Criticality  string            `json:"criticality"` // critical | essential | best_effort
	Status       string            `json:"status"`      // healthy | stale | zombie
	HeartbeatAt  *time.Time        `json:"heartbeat_at,omitempty"`
	// Revision is the optimistic-concurrency counter the ETag is made from: 1 at registration,
	// growing with every stored change, so a consumer can drop a snapshot older than one it has
	// applied.
	Revision  int64     `json:"revision"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (a AgentSnapshot) validate(path string) error {
	if err := checkID(path+".id", a.ID); err != nil {
		return err
	}
	if err := checkID(path+".tenant", a.Tenant); err != nil {
		return err
	}
	if err := checkNonEmpty(path+".name", a.Name); err != nil {
		return err
	}
	if err := checkNonEmpty(path+".version", a.Version); err != nil {
		return err
	}
	for _, c := range a.Capabilities {
		if err := checkNonEmpty(path+".capabilities", c); err != nil {
			return err
		}
	}
	if !absoluteURI(a.Endpoint) {
		return errs.Field(path+".endpoint", "must be an absolute URI")
	}
	if err := checkCriticality(path+".criticality", a.Criticality); err != nil {
		return err
	}
	if err := checkAgentStatus(path+".status", a.Status); err != nil {
		return err
	}
	if err := checkOptionalTime(path+".heartbeat_at", a.HeartbeatAt); err != nil {
		return err
	}
	if a.Revision < 1 {
		return errs.Field(path+".revision", "must be at least 1")
	}
	if err := checkTime(path+".created_at", a.CreatedAt); err != nil {
		return err
	}
	return checkTime(path+".updated_at", a.UpdatedAt)
}

// AgentRegistered is the data of nops.agent.registered.v1: an agent was created.
type AgentRegistered struct {
	Agent AgentSnapshot `json:"agent"`
}

// EventType implements Payload.
func (AgentRegistered) EventType() Type { return TypeAgentRegistered }

// EventTenant implements Payload.
func (p AgentRegistered) EventTenant() string { return p.Agent.Tenant }

// EventSubject implements Payload.
func (p AgentRegistered) EventSubject() string { return AgentSubject(p.Agent.ID) }

// Validate implements Payload.
func (p AgentRegistered) Validate() error { return p.Agent.validate("data.agent") }

// AgentUpdated is the data of nops.agent.updated.v1: an agent's definition changed; Agent is
// its state after the change.
type AgentUpdated struct {
	Agent AgentSnapshot `json:"agent"`
}

// EventType implements Payload.
func (AgentUpdated) EventType() Type { return TypeAgentUpdated }

// EventTenant implements Payload.
func (p AgentUpdated) EventTenant() string { return p.Agent.Tenant }

// EventSubject implements Payload.
func (p AgentUpdated) EventSubject() string { return AgentSubject(p.Agent.ID) }

// Validate implements Payload.
func (p AgentUpdated) Validate() error { return p.Agent.validate("data.agent") }

// AgentDeregistered is the data of nops.agent.deregistered.v1: an agent was deleted; Agent is
// its last state.
type AgentDeregistered struct {
	Agent AgentSnapshot `json:"agent"`
}

// EventType implements Payload.
func (AgentDeregistered) EventType() Type { return TypeAgentDeregistered }

// EventTenant implements Payload.
func (p AgentDeregistered) EventTenant() string { return p.Agent.Tenant }

// EventSubject implements Payload.
func (p AgentDeregistered) EventSubject() string { return AgentSubject(p.Agent.ID) }

// Validate implements Payload.
func (p AgentDeregistered) Validate() error { return p.Agent.validate("data.agent") }

// AgentLoad is the optional load an agent reports with a heartbeat. A nil field was not
// reported, which is not the same as zero.
type AgentLoad struct {
	InFlight     *int64   `json:"in_flight,omitempty"`      // requests being served, ≥ 0
	LatencyP50Ms *float64 `json:"latency_p50_ms,omitempty"` // milliseconds, ≥ 0
	LatencyP95Ms *float64 `json:"latency_p95_ms,omitempty"` // milliseconds, ≥ 0
	ErrorRate    *float64 `json:"error_rate,omitempty"`     // fraction of failed requests, 0..1
	FreeCapacity *int64   `json:"free_capacity,omitempty"`  // further requests it accepts, ≥ 0
}

func (l AgentLoad) validate(path string) error {
	if l.InFlight != nil && *l.InFlight < 0 {
		return errs.Field(path+".in_flight", "must not be negative")
	}
	if l.LatencyP50Ms != nil && !(*l.LatencyP50Ms >= 0) {
		return errs.Field(path+".latency_p50_ms", "must not be negative")
	}
	if l.LatencyP95Ms != nil && !(*l.LatencyP95Ms >= 0) {
		return errs.Field(path+".latency_p95_ms", "must not be negative")
	}
	if l.ErrorRate != nil && !(*l.ErrorRate >= 0 && *l.ErrorRate <= 1) {
		return errs.Field(path+".error_rate", "must be between 0 and 1")
	}
	if l.FreeCapacity != nil && *l.FreeCapacity < 0 {
		return errs.Field(path+".free_capacity", "must not be negative")
	}
	return nil
}

// AgentHeartbeat is the data of nops.agent.heartbeat.v1: an agent reported it is alive.
type AgentHeartbeat struct {
	AgentID     string     `json:"agent_id"`
	Tenant      string     `json:"tenant"`
	HeartbeatAt time.Time  `json:"heartbeat_at"`
	Load        *AgentLoad `json:"load,omitempty"`
}

// EventType implements Payload.
func (AgentHeartbeat) EventType() Type { return TypeAgentHeartbeat }

// EventTenant implements Payload.
func (p AgentHeartbeat) EventTenant() string { return p.Tenant }

// EventSubject implements Payload.
func (p AgentHeartbeat) EventSubject() string { return AgentSubject(p.AgentID) }

// Validate implements Payload.
func (p AgentHeartbeat) Validate() error {
	if err := checkID("data.agent_id", p.AgentID); err != nil {
		return err
	}
	if err := checkID("data.tenant", p.Tenant); err != nil {
		return err
	}
	if err := checkTime("data.heartbeat_at", p.HeartbeatAt); err != nil {
		return err
	}
	if p.Load != nil {
		return p.Load.validate("data.load")
	}
	return nil
}

// AgentStatusChanged is the data of nops.agent.status_changed.v1: the status derived from the
// heartbeat age moved From one value To another.
type AgentStatusChanged struct {
	AgentID     string     `json:"agent_id"`
	Tenant      string     `json:"tenant"`
	From        string     `json:"from"` // healthy | stale | zombie
	To          string     `json:"to"`   // healthy | stale | zombie, never equal to From
	HeartbeatAt *time.Time `json:"heartbeat_at,omitempty"`
	ChangedAt   time.Time  `json:"changed_at"`
}

// EventType implements Payload.
func (AgentStatusChanged) EventType() Type { return TypeAgentStatusChanged }

// EventTenant implements Payload.
func (p AgentStatusChanged) EventTenant() string { return p.Tenant }

// EventSubject implements Payload.
func (p AgentStatusChanged) EventSubject() string { return AgentSubject(p.AgentID) }

// Validate implements Payload.
func (p AgentStatusChanged) Validate() error {
	if err := checkID("data.agent_id", p.AgentID); err != nil {
		return err
	}
	if err := checkID("data.tenant", p.Tenant); err != nil {
		return err
	}
	if err := checkAgentStatus("data.from", p.From); err != nil {
		return err
	}
	if err := checkAgentStatus("data.to", p.To); err != nil {
		return err
	}
	if p.From == p.To {
		return errs.Field("data.to", "must differ from data.from")
	}
	if err := checkOptionalTime("data.heartbeat_at", p.HeartbeatAt); err != nil {
		return err
	}
	return checkTime("data.changed_at", p.ChangedAt)
}

// APIKeySnapshot is the public state of an API key. It never holds the secret nor its hash.
type APIKeySnapshot struct {
	ID        string     `json:"id"`
	Tenant    string     `json:"tenant"`
	AgentID   string     `json:"agent_id,omitempty"` // set for a key issued to one agent
	Name      string     `json:"name"`
	Scopes    []string   `json:"scopes,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

func (k APIKeySnapshot) validate(path string) error {
	if err := checkID(path+".id", k.ID); err != nil {
		return err
	}
	if err := checkID(path+".tenant", k.Tenant); err != nil {
		return err
	}
	if k.AgentID != "" {
		if err := checkID(path+".agent_id", k.AgentID); err != nil {
			return err
		}
	}
	if err := checkNonEmpty(path+".name", k.Name); err != nil {
		return err
	}
	for _, s := range k.Scopes {
		if err := checkNonEmpty(path+".scopes", s); err != nil {
			return err
		}
	}
	if err := checkTime(path+".created_at", k.CreatedAt); err != nil {
		return err
	}
	if err := checkOptionalTime(path+".expires_at", k.ExpiresAt); err != nil {
		return err
	}
	return checkOptionalTime(path+".revoked_at", k.RevokedAt)
}

// APIKeyCreated is the data of nops.apikey.created.v1: a key was issued.
type APIKeyCreated struct {
	Key APIKeySnapshot `json:"key"`
}

// EventType implements Payload.
func (APIKeyCreated) EventType() Type { return TypeAPIKeyCreated }

// EventTenant implements Payload.
func (p APIKeyCreated) EventTenant() string { return p.Key.Tenant }

// EventSubject implements Payload.
func (p APIKeyCreated) EventSubject() string { return APIKeySubject(p.Key.ID) }

// Validate implements Payload.
func (p APIKeyCreated) Validate() error { return p.Key.validate("data.key") }

// APIKeyRotationRequired is the data of nops.apikey.rotation_required.v1: at RequiredAt an
// administrator required the key to be rotated by RotateBy; its secrets are refused from then on
// unless it is rotated before.
type APIKeyRotationRequired struct {
	Key        APIKeySnapshot `json:"key"`
	RequiredAt time.Time      `json:"required_at"`
	RotateBy   time.Time      `json:"rotate_by"`
}

// EventType implements Payload.
func (APIKeyRotationRequired) EventType() Type { return TypeAPIKeyRotationRequired }

// EventTenant implements Payload.
func (p APIKeyRotationRequired) EventTenant() string { return p.Key.Tenant }

// EventSubject implements Payload.
func (p APIKeyRotationRequired) EventSubject() string { return APIKeySubject(p.Key.ID) }

// Validate implements Payload.
func (p APIKeyRotationRequired) Validate() error {
	if err := p.Key.validate("data.key"); err != nil {
		return err
	}
	if err := checkTime("data.required_at", p.RequiredAt); err != nil {
		return err
	}
	return checkTime("data.rotate_by", p.RotateBy)
}

// APIKeyRotated is the data of nops.apikey.rotated.v1: the key got a new secret at RotatedAt;
// the previous secret is accepted until GraceUntil.
type APIKeyRotated struct {
	Key        APIKeySnapshot `json:"key"`
	RotatedAt  time.Time      `json:"rotated_at"`
	GraceUntil time.Time      `json:"grace_until"`
}

// EventType implements Payload.
func (APIKeyRotated) EventType() Type { return TypeAPIKeyRotated }

// EventTenant implements Payload.
func (p APIKeyRotated) EventTenant() string { return p.Key.Tenant }

// EventSubject implements Payload.
func (p APIKeyRotated) EventSubject() string { return APIKeySubject(p.Key.ID) }

// Validate implements Payload.
func (p APIKeyRotated) Validate() error {
	if err := p.Key.validate("data.key"); err != nil {
		return err
	}
	if err := checkTime("data.rotated_at", p.RotatedAt); err != nil {
		return err
	}
	if err := checkTime("data.grace_until", p.GraceUntil); err != nil {
		return err
	}
	if p.GraceUntil.Before(p.RotatedAt) {
		return errs.Field("data.grace_until", "must not be before data.rotated_at")
	}
	return nil
}

// APIKeyRevoked is the data of nops.apikey.revoked.v1: the key was revoked; Key.RevokedAt is
// set.
type APIKeyRevoked struct {
	Key APIKeySnapshot `json:"key"`
}

// EventType implements Payload.
func (APIKeyRevoked) EventType() Type { return TypeAPIKeyRevoked }

// EventTenant implements Payload.
func (p APIKeyRevoked) EventTenant() string { return p.Key.Tenant }

// EventSubject implements Payload.
func (p APIKeyRevoked) EventSubject() string { return APIKeySubject(p.Key.ID) }

// Validate implements Payload.
func (p APIKeyRevoked) Validate() error {
	if err := p.Key.validate("data.key"); err != nil {
		return err
	}
	if p.Key.RevokedAt == nil {
		return errs.Field("data.key.revoked_at", "is required")
	}
	return nil
}

// TenantSnapshot is the public state of a tenant.
type TenantSnapshot struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Status    string    `json:"status"` // active | suspended
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (t TenantSnapshot) validate(path string) error {
	if err := checkID(path+".id", t.ID); err != nil {
		return err
	}
	if err := checkNonEmpty(path+".name", t.Name); err != nil {
		return err
	}
	if err := checkTenantStatus(path+".status", t.Status); err != nil {
		return err
	}
	if err := checkTime(path+".created_at", t.CreatedAt); err != nil {
		return err
	}
	return checkTime(path+".updated_at", t.UpdatedAt)
}

// tenantWithStatus validates t and requires its status to be want ("" for any).
func tenantWithStatus(t TenantSnapshot, want string) error {
	if err := t.validate("data.tenant"); err != nil {
		return err
	}
	if want != "" && t.Status != want {
		return errs.Field("data.tenant.status", "must be "+want)
	}
	return nil
}

// TenantCreated is the data of nops.tenant.created.v1.
type TenantCreated struct {
	Tenant TenantSnapshot `json:"tenant"`
}

// EventType implements Payload.
func (TenantCreated) EventType() Type { return TypeTenantCreated }

// EventTenant implements Payload.
func (p TenantCreated) EventTenant() string { return p.Tenant.ID }

// EventSubject implements Payload.
func (p TenantCreated) EventSubject() string { return TenantSubject(p.Tenant.ID) }

// Validate implements Payload.
func (p TenantCreated) Validate() error { return tenantWithStatus(p.Tenant, "") }

// TenantUpdated is the data of nops.tenant.updated.v1: Tenant is the state after the change.
type TenantUpdated struct {
	Tenant TenantSnapshot `json:"tenant"`
}

// EventType implements Payload.
func (TenantUpdated) EventType() Type { return TypeTenantUpdated }

// EventTenant implements Payload.
func (p TenantUpdated) EventTenant() string { return p.Tenant.ID }

// EventSubject implements Payload.
func (p TenantUpdated) EventSubject() string { return TenantSubject(p.Tenant.ID) }

// Validate implements Payload.
func (p TenantUpdated) Validate() error { return tenantWithStatus(p.Tenant, "") }

// TenantSuspended is the data of nops.tenant.suspended.v1; Tenant.Status is "suspended".
type TenantSuspended struct {
	Tenant TenantSnapshot `json:"tenant"`
}

// EventType implements Payload.
func (TenantSuspended) EventType() Type { return TypeTenantSuspended }

// EventTenant implements Payload.
func (p TenantSuspended) EventTenant() string { return p.Tenant.ID }

// EventSubject implements Payload.
func (p TenantSuspended) EventSubject() string { return TenantSubject(p.Tenant.ID) }

// Validate implements Payload.
func (p TenantSuspended) Validate() error { return tenantWithStatus(p.Tenant, "suspended") }

// TenantResumed is the data of nops.tenant.resumed.v1; Tenant.Status is "active".
type TenantResumed struct {
	Tenant TenantSnapshot `json:"tenant"`
}

// EventType implements Payload.
func (TenantResumed) EventType() Type { return TypeTenantResumed }

// EventTenant implements Payload.
func (p TenantResumed) EventTenant() string { return p.Tenant.ID }

// EventSubject implements Payload.
func (p TenantResumed) EventSubject() string { return TenantSubject(p.Tenant.ID) }

// Validate implements Payload.
func (p TenantResumed) Validate() error { return tenantWithStatus(p.Tenant, "active") }

// TenantDeleted is the data of nops.tenant.deleted.v1: Tenant is its last state; Cascade is
// set when its agents were deleted with it (each with its own nops.agent.deregistered.v1).
type TenantDeleted struct {
	Tenant    TenantSnapshot `json:"tenant"`
	Cascade   bool           `json:"cascade"`
	DeletedAt time.Time      `json:"deleted_at"`
}

// EventType implements Payload.
func (TenantDeleted) EventType() Type { return TypeTenantDeleted }

// EventTenant implements Payload.
func (p TenantDeleted) EventTenant() string { return p.Tenant.ID }

// EventSubject implements Payload.
func (p TenantDeleted) EventSubject() string { return TenantSubject(p.Tenant.ID) }

// Validate implements Payload.
func (p TenantDeleted) Validate() error {
	if err := tenantWithStatus(p.Tenant, ""); err != nil {
		return err
	}
	return checkTime("data.deleted_at", p.DeletedAt)
}
