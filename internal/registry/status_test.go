package registry_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/tenant"
)

var (
	testTTL = registry.TTLs{Stale: 30 * time.Second, Zombie: 120 * time.Second}
	t0      = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

func TestTTLsValidate(t *testing.T) {
	tests := []struct {
		ttl registry.TTLs
		ok  bool
	}{
		{registry.DefaultTTLs(), true},
		{registry.TTLs{Stale: time.Second, Zombie: time.Second + 1}, true},
		{registry.TTLs{}, false},
		{registry.TTLs{Stale: -time.Second, Zombie: time.Minute}, false},
		{registry.TTLs{Stale: time.Minute, Zombie: time.Minute}, false},
		{registry.TTLs{Stale: time.Minute, Zombie: time.Second}, false},
	}
	for _, tt := range tests {
		if err := tt.ttl.Validate(); (err == nil) != tt.ok {
			t.Errorf("%+v.Validate() = %v, want ok=%v", tt.ttl, err, tt.ok)
		}
	}
	if d := registry.DefaultTTLs(); d.Stale != 30*time.Second || d.Zombie != 2*time.Minute {
		t.Errorf("DefaultTTLs() = %+v", d)
	}
}

func TestDeriveStatusBoundaries(t *testing.T) {
	tests := []struct {
		age  time.Duration
		want registry.Status
	}{
		{-time.Hour, registry.StatusHealthy}, // heartbeat from the future: clock skew
		{0, registry.StatusHealthy},
		{testTTL.Stale - time.Nanosecond, registry.StatusHealthy},
		{testTTL.Stale, registry.StatusStale},
		{testTTL.Zombie - time.Nanosecond, registry.StatusStale},
		{testTTL.Zombie, registry.StatusZombie},
		{24 * time.Hour, registry.StatusZombie},
	}
	for _, tt := range tests {
		if got := registry.DeriveStatus(t0, t0.Add(-tt.age), testTTL); got != tt.want {
			t.Errorf("age %v: DeriveStatus = %q, want %q", tt.age, got, tt.want)
		}
	}
	if got := registry.DeriveStatus(t0, time.Time{}, testTTL); got != registry.StatusZombie {
		t.Errorf("never heartbeated: DeriveStatus = %q, want zombie", got)
	}
}

func TestRoutableRule(t *testing.T) {
	tests := []struct {
		name   string
		age    time.Duration
		never  bool
		tenant tenant.Status
		want   bool
	}{
		{"healthy, active tenant", 0, false, tenant.StatusActive, true},
		{"stale, active tenant", testTTL.Stale, false, tenant.StatusActive, true},
		{"last moment before zombie", testTTL.Zombie - time.Microsecond, false, tenant.StatusActive, true},
		{"zombie", testTTL.Zombie, false, tenant.StatusActive, false},
		{"never heartbeated", 0, true, tenant.StatusActive, false},
		{"healthy, suspended tenant", 0, false, tenant.StatusSuspended, false},
		{"healthy, unknown tenant status", 0, false, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := registry.Agent{HeartbeatAt: t0.Add(-tt.age), Status: registry.StatusHealthy}
			if tt.never {
				a.HeartbeatAt = time.Time{}
			}
			if got := registry.Routable(a, tt.tenant, t0, testTTL); got != tt.want {
				t.Errorf("Routable = %v, want %v", got, tt.want)
			}
		})
	}
	// The stored status is not trusted: a stored "healthy" that has aged into zombie is not
	// routable, and a stored "zombie" with a fresh heartbeat is.
	if registry.Routable(registry.Agent{Status: registry.StatusHealthy, HeartbeatAt: t0.Add(-time.Hour)}, tenant.StatusActive, t0, testTTL) {
		t.Error("aged agent with stored healthy status is routable")
	}
	if !registry.Routable(registry.Agent{Status: registry.StatusZombie, HeartbeatAt: t0}, tenant.StatusActive, t0, testTTL) {
		t.Error("fresh agent with stored zombie status is not routable")
	}
}

func TestTransitionAndSweep(t *testing.T) {
	agent := func(id string, stored registry.Status, age time.Duration) registry.Agent {
		return registry.Agent{ID: id, TenantID: "ten_1", Status: stored, HeartbeatAt: t0.Add(-age)}
	}
	agents := []registry.Agent{
		agent("a1", registry.StatusHealthy, 0),                        // unchanged
		agent("a2", registry.StatusHealthy, testTTL.Stale),            // healthy → stale
		agent("a3", registry.StatusStale, testTTL.Zombie),             // stale → zombie
		agent("a4", registry.StatusHealthy, testTTL.Zombie+time.Hour), // healthy → zombie, skipping stale
		agent("a5", registry.StatusZombie, time.Second),               // zombie → healthy (missed heartbeat event)
		agent("a6", registry.StatusZombie, time.Hour),                 // unchanged
		agent("a7", "", 0), // unset → healthy
		agent("a8", registry.StatusStale, testTTL.Stale), // unchanged
	}
	change := func(id string, from, to registry.Status, age time.Duration) registry.StatusChange {
		return registry.StatusChange{TenantID: "ten_1", AgentID: id, From: from, To: to, HeartbeatAt: t0.Add(-age), At: t0}
	}
	want := []registry.StatusChange{
		change("a2", registry.StatusHealthy, registry.StatusStale, testTTL.Stale),
		change("a3", registry.StatusStale, registry.StatusZombie, testTTL.Zombie),
		change("a4", registry.StatusHealthy, registry.StatusZombie, testTTL.Zombie+time.Hour),
		change("a5", registry.StatusZombie, registry.StatusHealthy, time.Second),
		change("a7", "", registry.StatusHealthy, 0),
	}
	if diff := cmp.Diff(want, registry.Sweep(agents, t0, testTTL)); diff != "" {
		t.Errorf("Sweep (-want +got):\n%s", diff)
	}
	if _, ok := registry.Transition(agents[0], t0, testTTL); ok {
		t.Error("Transition reported a change for an unchanged agent")
	}
	if got := registry.Sweep(nil, t0, testTTL); got != nil {
		t.Errorf("Sweep(nil) = %v", got)
	}
}
