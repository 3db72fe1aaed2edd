package registry

import (
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/tenant"
)

// TTLs are the heartbeat ages at which an agent decays: stale at Stale, zombie at Zombie.
type TTLs struct {
	Stale  time.Duration
	Zombie time.Duration
}

// DefaultTTLs returns the TTLs a Service uses when its Config has none: stale after 30 seconds
// without a heartbeat, zombie after 2 minutes.
func DefaultTTLs() TTLs { return TTLs{Stale: 30 * time.Second, Zombie: 2 * time.Minute} }

// Validate checks 0 < Stale < Zombie.
func (t TTLs) Validate() error {
	if t.Stale <= 0 {
		return fmt.Errorf("stale TTL must be positive, got %s", t.Stale)
	}
	if t.Zombie <= t.Stale {
		return fmt.Errorf("zombie TTL (%s) must be longer than stale TTL (%s)", t.Zombie, t.Stale)
	}
	return nil
}

// DeriveStatus returns the status of an agent whose last heartbeat was at heartbeatAt, seen at
// now: healthy while the age is below ttl.Stale, stale while below ttl.Zombie, zombie from then
// on. A heartbeat from the future (clock skew between replicas) counts as age zero; a zero
// heartbeatAt — no liveness evidence ever — is zombie.
func DeriveStatus(now, heartbeatAt time.Time, ttl TTLs) Status {
	if heartbeatAt.IsZero() {
		return StatusZombie
	}
	age := now.Sub(heartbeatAt)
	switch {
	case age < ttl.Stale:
		return StatusHealthy
	case age < ttl.Zombie:
		return StatusStale
	default:
		return StatusZombie
	}
}

// Routable reports whether work may be routed to a at now: its derived status is not zombie and
// its tenant is active. Stale agents stay routable (routing may rank them lower): a missed
// heartbeat or two is not death.
func Routable(a Agent, tenantStatus tenant.Status, now time.Time, ttl TTLs) bool {
	return tenantStatus == tenant.StatusActive && DeriveStatus(now, a.HeartbeatAt, ttl) != StatusZombie
}

// StatusChange is one change of an agent's stored status, the content of an
// agent.status_changed event. HeartbeatAt is the heartbeat the change was derived from: storing
// the change is conditional on it, so a heartbeat that lands in between wins.
type StatusChange struct {
	TenantID    string
	AgentID     string
	From        Status // "" when the stored status was unset
	To          Status
	HeartbeatAt time.Time
	At          time.Time // when the change was observed
}

// Transition compares a's stored status with the one derived at now and returns the change, if
// any.
func Transition(a Agent, now time.Time, ttl TTLs) (StatusChange, bool) {
	to := DeriveStatus(now, a.HeartbeatAt, ttl)
	if to == a.Status {
		return StatusChange{}, false
	}
	return StatusChange{
		TenantID:    a.TenantID,
		AgentID:     a.ID,
		From:        a.Status,
		To:          to,
		HeartbeatAt: a.HeartbeatAt,
		At:          now,
	}, true
}

// Sweep returns, in input order, the changes of the agents whose stored status differs from the
// one derived at now. It is pure; Service.Sweep reads the candidates and stores the changes.
func Sweep(agents []Agent, now time.Time, ttl TTLs) []StatusChange {
	var changes []StatusChange
	for _, a := range agents {
		if c, ok := Transition(a, now, ttl); ok {
			changes = append(changes, c)
		}
	}
	return changes
}
