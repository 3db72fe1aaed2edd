package registry

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// IDPrefix starts every agent ID.
const IDPrefix = "agt_"

// Criticality tells resource governance and routing how much an agent matters.
type Criticality string

// The criticalities. DefaultCriticality applies when a client sends none.
const (
	CriticalityCritical   Criticality = "critical"
	CriticalityEssential  Criticality = "essential"
	CriticalityBestEffort Criticality = "best_effort"

	DefaultCriticality = CriticalityBestEffort
)

// Valid reports whether c is one of the criticalities.
func (c Criticality) Valid() bool {
	return c == CriticalityCritical || c == CriticalityEssential || c == CriticalityBestEffort
}

// Status is an agent's liveness, derived from the age of its last heartbeat.
type Status string

// The statuses, in order of decay.
const (
	StatusHealthy Status = "healthy"
	StatusStale   Status = "stale"
	StatusZombie  Status = "zombie"
)

// Valid reports whether s is one of the statuses.
func (s Status) Valid() bool { return s == StatusHealthy || s == StatusStale || s == StatusZombie }

// Capability is one operation an agent offers. The schemas are optional JSON Schema documents
// (empty means unconstrained) describing the capability's input and output.
type Capability struct {
	Name         string          `json:"name"`
	Description  string          `json:"description,omitempty"`
	InputSchema  json.RawMessage `json:"input_schema,omitempty"`
	OutputSchema json.RawMessage `json:"output_schema,omitempty"`
}

// Load is what an agent last reported about its own load. A nil field was not reported: a
// heartbeat replaces the whole Load, so figures never outlive the heartbeat that carried them.
type Load struct {
	InFlight     *int64   `json:"in_flight,omitempty"`     // requests being served
	P50Ms        *float64 `json:"p50_ms,omitempty"`        // median latency, milliseconds
	P95Ms        *float64 `json:"p95_ms,omitempty"`        // 95th percentile latency, milliseconds
	ErrorRate    *float64 `json:"error_rate,omitempty"`    // fraction of failed requests, 0..1
	FreeCapacity *int64   `json:"free_capacity,omitempty"` // further requests it can take now
}

// Agent is a registered agent. See the package documentation for which fields a client owns.
type Agent struct {
	ID           string // IDPrefix + lower-case ULID
	TenantID     string
	Name         string // DNS label, unique per tenant
	Version      string // canonical semantic version without "v", e.g. "1.2.3-rc.1"
	Capabilities []Capability
	Endpoint     string // absolute http(s) URL
	Labels       map[string]string
	Metadata     map[string]any
	Criticality  Criticality
	Status       Status    // stored: last announced; from Service: derived at read time
	HeartbeatAt  time.Time // UTC, microsecond precision; registration counts as a heartbeat
	Load         Load
	CreatedAt    time.Time // UTC, microsecond precision
	UpdatedAt    time.Time // UTC, microsecond precision; changes with the registration only
	Revision     int64     // 1 at registration, +1 on every Update; the entity tag derives from it
}

// Input returns the client-owned fields of a, e.g. to merge a partial update onto.
func (a Agent) Input() AgentInput {
	return AgentInput{
		Name:         a.Name,
		Version:      a.Version,
		Capabilities: slices.Clone(a.Capabilities),
		Endpoint:     a.Endpoint,
		Labels:       maps.Clone(a.Labels),
		Metadata:     maps.Clone(a.Metadata),
		Criticality:  a.Criticality,
	}
}

// HasCapability reports whether a offers the capability named name.
func (a Agent) HasCapability(name string) bool {
	return slices.ContainsFunc(a.Capabilities, func(c Capability) bool { return c.Name == name })
}

// AgentInput is what a client may set when registering or updating (replacing) an agent.
// Server-owned fields are absent by construction. Normalize validates it.
type AgentInput struct {
	Name         string
	Version      string // semantic version, "1.2.3" or "v1.2.3"
	Capabilities []Capability
	Endpoint     string
	Labels       map[string]string
	Metadata     map[string]any
	Criticality  Criticality // empty means DefaultCriticality
}

// newID returns a fresh agent ID.
func newID() string { return IDPrefix + strings.ToLower(ulid.Make().String()) }

// ValidID reports whether id has the shape of an agent ID. The Service answers errs.NotFound for
// any other string without asking the store.
func ValidID(id string) bool {
	rest, ok := strings.CutPrefix(id, IDPrefix)
	if !ok || len(rest) != ulid.EncodedSize || strings.ToLower(rest) != rest {
		return false
	}
	_, err := ulid.ParseStrict(strings.ToUpper(rest))
	return err == nil
}
