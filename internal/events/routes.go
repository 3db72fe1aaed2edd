package events

import (
	"fmt"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// Limits of a RouteSnapshot; internal/routing enforces the same on writes, and the schemas state
// them.
const (
	MaxRouteTargets      = 64
	MaxRouteWeight       = 10000
	MaxRoutePriority     = 15
	MaxRouteTimeoutMs    = 600000
	MaxRouteHedgeExtra   = 2
	MaxRouteHeaderLength = 128
	MaxRouteVersionLen   = 128
)

// RouteSubject returns the subject of a route's events: "routes/<capability>" (the tenant is the
// envelope's).
func RouteSubject(capability string) string { return "routes/" + capability }

// RouteTarget is one target of a route: exactly one of AgentID and Version is set.
type RouteTarget struct {
	AgentID  string `json:"agent_id,omitempty"`
	Version  string `json:"version,omitempty"` // exact semantic version, or a "1" / "1.2" prefix
	Weight   int    `json:"weight"`            // 0..MaxRouteWeight; 0 drains the target
	Priority int    `json:"priority"`          // 0 primary, then fallback tiers
}

// RouteHedge is a route's hedged-request setting.
type RouteHedge struct {
	DelayMs  int `json:"delay_ms"`
	MaxExtra int `json:"max_extra"`
}

// RouteSnapshot is the public state of a routing table.
type RouteSnapshot struct {
	Tenant       string        `json:"tenant"`
	Capability   string        `json:"capability"`
	Targets      []RouteTarget `json:"targets"`
	StickyHeader string        `json:"sticky_header,omitempty"` // the header whose value is the sticky key
	TimeoutMs    int           `json:"timeout_ms,omitempty"`    // absent: the kernel's default
	Retryable    bool          `json:"retryable"`
	Hedge        *RouteHedge   `json:"hedge,omitempty"`
	// Revision is the optimistic-concurrency counter the ETag is made from: 1 at creation, growing
	// with every stored change, so a consumer can drop a snapshot older than one it has applied.
	Revision  int64     `json:"revision"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (r RouteSnapshot) validate(path string) error {
	if err := checkID(path+".tenant", r.Tenant); err != nil {
		return err
	}
	if !asciiText(r.Capability, MaxUsageCapabilityLength, false) {
		return errs.Field(path+".capability", "must be 1 to 128 printable ASCII characters without spaces")
	}
	if len(r.Targets) < 1 || len(r.Targets) > MaxRouteTargets {
		return errs.Field(path+".targets", fmt.Sprintf("must hold 1 to %d targets", MaxRouteTargets))
	}
	for i, t := range r.Targets {
		if err := t.validate(fmt.Sprintf("%s.targets[%d]", path, i)); err != nil {
			return err
		}
	}
	if r.StickyHeader != "" && !headerToken(r.StickyHeader) {
		return errs.Field(path+".sticky_header", "must be a header name of at most 128 characters")
	}
	if r.TimeoutMs < 0 || r.TimeoutMs > MaxRouteTimeoutMs {
		return errs.Field(path+".timeout_ms", fmt.Sprintf("must be 1 to %d, or absent", MaxRouteTimeoutMs))
	}
	if h := r.Hedge; h != nil {
		if h.DelayMs < 1 || h.DelayMs > MaxRouteTimeoutMs {
			return errs.Field(path+".hedge.delay_ms", fmt.Sprintf("must be 1 to %d", MaxRouteTimeoutMs))
		}
		if h.MaxExtra < 1 || h.MaxExtra > MaxRouteHedgeExtra {
			return errs.Field(path+".hedge.max_extra", fmt.Sprintf("must be 1 to %d", MaxRouteHedgeExtra))
		}
	}
	if r.Revision < 1 {
		return errs.Field(path+".revision", "must be at least 1")
	}
	if err := checkTime(path+".created_at", r.CreatedAt); err != nil {
		return err
	}
	return checkTime(path+".updated_at", r.UpdatedAt)
}

func (t RouteTarget) validate(path string) error {
	switch {
	case (t.AgentID == "") == (t.Version == ""):
		return errs.Field(path, "must have exactly one of agent_id and version")
	case t.AgentID != "":
		if err := checkID(path+".agent_id", t.AgentID); err != nil {
			return err
		}
	case !asciiText(t.Version, MaxRouteVersionLen, false):
		return errs.Field(path+".version", "must be 1 to 128 printable ASCII characters without spaces")
	}
	if t.Weight < 0 || t.Weight > MaxRouteWeight {
		return errs.Field(path+".weight", fmt.Sprintf("must be 0 to %d", MaxRouteWeight))
	}
	if t.Priority < 0 || t.Priority > MaxRoutePriority {
		return errs.Field(path+".priority", fmt.Sprintf("must be 0 to %d", MaxRoutePriority))
	}
	return nil
}

// headerToken reports whether s is an HTTP field name (RFC 9110 token) of at most
// MaxRouteHeaderLength characters: the schema's pattern.
func headerToken(s string) bool {
	if s == "" || len(s) > MaxRouteHeaderLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// RouteUpdated is the data of nops.route.updated.v1: a routing table was created or replaced;
// Route is its state after the change (Revision 1 for a creation).
type RouteUpdated struct {
	Route RouteSnapshot `json:"route"`
}

// EventType implements Payload.
func (RouteUpdated) EventType() Type { return TypeRouteUpdated }

// EventTenant implements Payload.
func (p RouteUpdated) EventTenant() string { return p.Route.Tenant }

// EventSubject implements Payload.
func (p RouteUpdated) EventSubject() string { return RouteSubject(p.Route.Capability) }

// Validate implements Payload.
func (p RouteUpdated) Validate() error { return p.Route.validate("data.route") }

// RouteDeleted is the data of nops.route.deleted.v1: a routing table was deleted (its capability
// is routed to every routable agent again); Route is its last state.
type RouteDeleted struct {
	Route     RouteSnapshot `json:"route"`
	DeletedAt time.Time     `json:"deleted_at"`
}

// EventType implements Payload.
func (RouteDeleted) EventType() Type { return TypeRouteDeleted }

// EventTenant implements Payload.
func (p RouteDeleted) EventTenant() string { return p.Route.Tenant }

// EventSubject implements Payload.
func (p RouteDeleted) EventSubject() string { return RouteSubject(p.Route.Capability) }

// Validate implements Payload.
func (p RouteDeleted) Validate() error {
	if err := p.Route.validate("data.route"); err != nil {
		return err
	}
	return checkTime("data.deleted_at", p.DeletedAt)
}
