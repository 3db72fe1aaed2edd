package config

import (
	"strings"
	"testing"
)

// signing.nonce_durability: full by default, full or process; process only where the nonces
// go to the database (it says nothing of Redis's persistence).
func TestValidateNonceDurability(t *testing.T) {
	if d := Default().Signing.NonceDurability; d != "full" {
		t.Fatalf("default nonce durability %q, want full", d)
	}
	ok := []func(*Config){
		func(c *Config) { c.Signing.NonceDurability = "process" },
		func(c *Config) {
			c.Signing.NonceDurability, c.Redis.URL, c.Signing.NonceStore = "process", "redis://127.0.0.1:6379/0", "sql"
		},
		func(c *Config) { c.Signing.NonceDurability, c.Redis.URL = "full", "redis://127.0.0.1:6379/0" },
	}
	for i, mutate := range ok {
		c := Default()
		mutate(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("case %d: %v", i, err)
		}
	}
	bad := []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"unknown", func(c *Config) { c.Signing.NonceDurability = "fsync" }, []string{"signing.nonce_durability", "full, process"}},
		{"process with redis nonces", func(c *Config) {
			c.Signing.NonceDurability, c.Redis.URL, c.Signing.NonceStore = "process", "redis://127.0.0.1:6379/0", "redis"
		}, []string{"signing.nonce_durability", "Redis"}},
		{"process with auto on redis", func(c *Config) {
			c.Signing.NonceDurability, c.Redis.URL = "process", "redis://127.0.0.1:6379/0"
		}, []string{"signing.nonce_durability"}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
