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

// signing.nonce_store auto resolves to Redis when redis.url is set, else to the journal file on
// SQLite, else to the database (PostgreSQL, shared by the replicas); explicit values stay.
func TestNonceStoreKind(t *testing.T) {
	const redisURL, pgURL = "redis://127.0.0.1:6379/0", "postgres://x@127.0.0.1/db"
	for _, tc := range []struct {
		store, redis, db, want string
	}{
		{"auto", "", "", "file"},
		{"auto", redisURL, "", "redis"},
		{"auto", "", pgURL, "sql"},
		{"auto", redisURL, pgURL, "redis"},
		{"sql", "", "", "sql"},
		{"file", "", "", "file"},
		{"redis", redisURL, "", "redis"},
	} {
		c := Default()
		c.Signing.NonceStore, c.Redis.URL, c.Database.URL = tc.store, tc.redis, tc.db
		if got := c.NonceStoreKind(); got != tc.want {
			t.Errorf("nonce_store %s, redis %q, database %q: %s, want %s", tc.store, tc.redis, tc.db, got, tc.want)
		}
	}
}

// signing.nonce_store file is refused with PostgreSQL (replicas could not share it); with SQLite
// it takes either durability.
func TestValidateFileNonceStore(t *testing.T) {
	for _, d := range []string{"full", "process"} {
		c := Default()
		c.Signing.NonceStore, c.Signing.NonceDurability = "file", d
		if err := c.Validate(); err != nil {
			t.Errorf("file, %s: %v", d, err)
		}
	}
	c := Default()
	c.Signing.NonceStore, c.Database.URL = "file", "postgres://x@127.0.0.1/db"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "signing.nonce_store") || !strings.Contains(err.Error(), "PostgreSQL") {
		t.Fatalf("Validate = %v, want a refusal of the file store with PostgreSQL", err)
	}
	c = Default()
	c.Signing.NonceStore = "files"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "auto, file, sql, redis") {
		t.Fatalf("Validate = %v, want the list of stores", err)
	}
}
