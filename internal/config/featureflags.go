package config

import (
	"fmt"
	"time"
)

// FlagsConfig configures feature flags (docs/flags.md).
type FlagsConfig struct {
	RefreshInterval Duration `yaml:"refresh_interval" env:"NOPS_FLAGS_REFRESH_INTERVAL" doc:"How often each replica reloads every feature flag from the database even without a change event on the bus: the bound on how stale a replica's flags can be when it misses events (100ms to 10m)."`
}

func defaultFlags() FlagsConfig { return FlagsConfig{RefreshInterval: Duration(5 * time.Second)} }

// validateFlags checks the flags section.
func (c Config) validateFlags(v *validator) {
	if d := c.Flags.RefreshInterval.D(); d < 100*time.Millisecond || d > 10*time.Minute {
		v.add("flags.refresh_interval", fmt.Sprintf("must be between 100ms and 10m, got %s", d))
	}
}

// ChaosConfig gates the chaos toggles (docs/chaos.md): fault injection for game days.
type ChaosConfig struct {
	Enabled bool `yaml:"enabled" env:"NOPS_CHAOS_ENABLED" doc:"Allow a SUPER_ADMIN to inject latency and errors into the database, bus, Redis and agent calls of this replica (PUT /v1/admin/chaos), for game days and tests. Off: the chaos rules cannot be set."`
}
