package config

import (
	"strings"
	"testing"
	"time"
)

// The settings of key rotation: the JWT keys' publish delay and reload interval, the CA's root
// rotation delay.
func TestValidateRotation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string // nil when valid
	}{
		{"default", func(*Config) {}, nil},
		{"short delays", func(c *Config) {
			c.Auth.KeyReloadInterval, c.Auth.KeyPublishDelay = Duration(200*time.Millisecond), Duration(time.Second)
			c.Identity.RefreshInterval, c.Identity.RootRotationDelay = Duration(time.Second), Duration(3*time.Second)
		}, nil},
		{"publish delay below the reload interval", func(c *Config) { c.Auth.KeyPublishDelay = Duration(5 * time.Second) },
			[]string{"auth.key_publish_delay", "NOPS_AUTH_KEY_PUBLISH_DELAY", "at least auth.key_reload_interval"}},
		{"publish delay above a day", func(c *Config) { c.Auth.KeyPublishDelay = Duration(25 * time.Hour) }, []string{"auth.key_publish_delay"}},
		{"reload interval too fast", func(c *Config) { c.Auth.KeyReloadInterval = Duration(time.Millisecond) },
			[]string{"auth.key_reload_interval", "100ms and 1m"}},
		{"reload interval too slow", func(c *Config) {
			c.Auth.KeyReloadInterval, c.Auth.KeyPublishDelay = Duration(2*time.Minute), Duration(time.Hour)
		}, []string{"auth.key_reload_interval"}},
		{"root rotation delay below the refresh interval", func(c *Config) { c.Identity.RootRotationDelay = Duration(30 * time.Second) },
			[]string{"identity.root_rotation_delay", "NOPS_IDENTITY_ROOT_ROTATION_DELAY", "at least identity.refresh_interval"}},
		{"root rotation delay of half the intermediate", func(c *Config) { c.Identity.RootRotationDelay = Duration(15 * 24 * time.Hour) },
			[]string{"identity.root_rotation_delay", "less than half"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted invalid rotation settings")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
