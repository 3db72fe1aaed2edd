// Package config holds the kernel's one Config: its defaults, its validation, and its sources
// (YAML file < NOPS_* environment < command-line flags). Only cmd/ reads files, the environment
// and flags, through Load; every other package receives a validated Config (or a part of it) as a
// constructor parameter. config imports nothing of the project but errs.
package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Config is the whole configuration of a kernel process. Each leaf field carries its YAML key,
// its environment variable and a one-line description (doc); secret:"true" marks values that are
// redacted wherever the configuration is shown.
type Config struct {
	DataDir     string            `yaml:"data_dir" env:"NOPS_DATA_DIR" flag:"data-dir" doc:"Directory for embedded state: SQLite database, JetStream store, generated keys."`
	HTTP        HTTPConfig        `yaml:"http"`
	Database    DatabaseConfig    `yaml:"database"`
	Redis       RedisConfig       `yaml:"redis"`
	Bus         BusConfig         `yaml:"bus"`
	Auth        AuthConfig        `yaml:"auth"`
	Log         LogConfig         `yaml:"log"`
	Health      HealthConfig      `yaml:"health"`
	Telemetry   TelemetryConfig   `yaml:"telemetry"`
	Registry    RegistryConfig    `yaml:"registry"`
	APIKeys     APIKeysConfig     `yaml:"api_keys"`
	Audit       AuditConfig       `yaml:"audit"`
	Outbox      OutboxConfig      `yaml:"outbox"`
	Idempotency IdempotencyConfig `yaml:"idempotency"`
	Limits      LimitsConfig      `yaml:"limits"`
	Policy      PolicyConfig      `yaml:"policy"`
	Signing     SigningConfig     `yaml:"signing"`
	Invoke      InvokeConfig      `yaml:"invoke"`
	Egress      EgressConfig      `yaml:"egress"`
	Identity    IdentityConfig    `yaml:"identity"`
	Flags       FlagsConfig       `yaml:"flags"`
	Chaos       ChaosConfig       `yaml:"chaos"`
}

// InvokeConfig tunes the invoke API's routing and resilience; see docs/routing.md.
type InvokeConfig struct {
	Timeout          Duration `yaml:"timeout" env:"NOPS_INVOKE_TIMEOUT" doc:"Deadline of an invocation when neither its routing table nor the caller (Nops-Timeout-Ms) sets a shorter one."`
	MaxTimeout       Duration `yaml:"max_timeout" env:"NOPS_INVOKE_MAX_TIMEOUT" doc:"The longest deadline a routing table may set."`
	AttemptTimeout   Duration `yaml:"attempt_timeout" env:"NOPS_INVOKE_ATTEMPT_TIMEOUT" doc:"How long one attempt waits for an agent's response headers before it counts as failed (and may be retried elsewhere)."`
	MaxAttempts      int      `yaml:"max_attempts" env:"NOPS_INVOKE_MAX_ATTEMPTS" doc:"Attempts per invocation at most (first + retries), for retryable calls."`
	BackoffBase      Duration `yaml:"backoff_base" env:"NOPS_INVOKE_BACKOFF_BASE" doc:"Retry backoff: the first retry waits a random time up to this (full jitter), doubling per retry."`
	BackoffMax       Duration `yaml:"backoff_max" env:"NOPS_INVOKE_BACKOFF_MAX" doc:"Retry backoff ceiling."`
	RetryBudget      float64  `yaml:"retry_budget" env:"NOPS_INVOKE_RETRY_BUDGET" doc:"Retries and hedges allowed per first attempt over the last 10 s (0.1: at most 10 % extra load), plus retry_budget_floor per second."`
	RetryBudgetFloor float64  `yaml:"retry_budget_floor" env:"NOPS_INVOKE_RETRY_BUDGET_FLOOR" doc:"Retries per second always allowed by the retry budget."`
	BreakerFailures  int      `yaml:"breaker_failures" env:"NOPS_INVOKE_BREAKER_FAILURES" doc:"Consecutive failures of an agent that open its circuit breaker."`
	BreakerDelay     Duration `yaml:"breaker_delay" env:"NOPS_INVOKE_BREAKER_DELAY" doc:"How long an open breaker refuses calls before letting probes through (half-open)."`
	BreakerSuccesses int      `yaml:"breaker_successes" env:"NOPS_INVOKE_BREAKER_SUCCESSES" doc:"Successful probes that close a half-open breaker."`
	AgentInFlight    int      `yaml:"agent_in_flight" env:"NOPS_INVOKE_AGENT_IN_FLIGHT" doc:"Bulkhead: concurrent calls one kernel sends one agent at most."`
	EjectAfter       int      `yaml:"eject_after" env:"NOPS_INVOKE_EJECT_AFTER" doc:"Consecutive failures after which the balancer ejects an agent (outlier ejection; re-admitted gradually)."`
	EjectFor         Duration `yaml:"eject_for" env:"NOPS_INVOKE_EJECT_FOR" doc:"First ejection's length; it doubles on each re-ejection, up to 5 minutes."`
	Balancing        string   `yaml:"balancing" env:"NOPS_INVOKE_BALANCING" doc:"dynamic (health score × static weight, power of two choices) or static (static weights only)."`
	CandidatesTTL    Duration `yaml:"candidates_ttl" env:"NOPS_INVOKE_CANDIDATES_TTL" doc:"How long a replica caches a capability's routable agents."`
	ResultTTL        Duration `yaml:"result_ttl" env:"NOPS_INVOKE_RESULT_TTL" doc:"How long an async invocation (Prefer: respond-async) and its result stay readable at GET /v1/invocations/{id} after it was accepted and after it finished; then it is purged."`
}

// EgressConfig says which addresses the kernel may call agents at; see docs/egress.md.
type EgressConfig struct {
	AllowLoopback string `yaml:"allow_loopback" env:"NOPS_EGRESS_ALLOW_LOOPBACK" doc:"Agents on loopback addresses: true, false, or auto (allowed with the embedded database — the laptop setup of make run — refused with database.url)."`
	AllowPrivate  bool   `yaml:"allow_private" env:"NOPS_EGRESS_ALLOW_PRIVATE" doc:"Agents on private addresses (RFC 1918, fc00::/7, 100.64.0.0/10); cloud metadata addresses stay refused."`
	Allow         string `yaml:"allow" env:"NOPS_EGRESS_ALLOW" doc:"Comma-separated CIDRs agents may be at even when loopback/private ranges are refused (never opens link-local or metadata addresses)."`
	Deny          string `yaml:"deny" env:"NOPS_EGRESS_DENY" doc:"Comma-separated CIDRs no outbound connection of the kernel may reach."`
	AllowPublic   bool   `yaml:"allow_public" env:"NOPS_EGRESS_ALLOW_PUBLIC" doc:"Agents on public internet addresses (egress class D4). Off by default: deny by default."`
	// ViolationAction applies without a signed allow-list; a signed list says it per service.
	ViolationAction       string   `yaml:"violation_action" env:"NOPS_EGRESS_VIOLATION_ACTION" doc:"What a refused call to an agent also does: none (refuse, audit, count) or deregister_agent (also deregister the agent). A signed allow-list sets it per service with on_violation."`
	AllowlistFile         string   `yaml:"allowlist_file" env:"NOPS_EGRESS_ALLOWLIST_FILE" doc:"Signed egress allow-list (D0-D4 per service and tenant, nops egress sign); replaces allow_loopback, allow_private, allow, allow_public and violation_action. The kernel refuses to start on a tampered file."`
	AllowlistKeys         string   `yaml:"allowlist_keys" env:"NOPS_EGRESS_ALLOWLIST_KEYS" doc:"Comma-separated verifier keys (nops egress keygen) trusted to sign egress.allowlist_file."`
	AllowlistReloadPeriod Duration `yaml:"allowlist_reload_interval" env:"NOPS_EGRESS_ALLOWLIST_RELOAD_INTERVAL" doc:"How often the kernel rereads egress.allowlist_file; a new version loads when its signature holds and its serial does not go back. 0 turns rereading off."`
}

// LoopbackAllowed resolves egress.allow_loopback's auto.
func (c Config) LoopbackAllowed() bool {
	switch c.Egress.AllowLoopback {
	case "true":
		return true
	case "false":
		return false
	default:
		return c.Database.URL == ""
	}
}

// SigningConfig configures RFC 9421 request signatures (docs/request-signing.md).
type SigningConfig struct {
	MaxSkew    Duration `yaml:"max_skew" env:"NOPS_SIGNING_MAX_SKEW" doc:"How far a signature's created time may be from the kernel's clock, either way; nonces are remembered this long."`
	NonceStore string   `yaml:"nonce_store" env:"NOPS_SIGNING_NONCE_STORE" doc:"Where used nonces are remembered: auto (Redis when redis.url is set, else a journal under data_dir/nonces with SQLite, else the database), file (that journal: one kernel per data directory, SQLite only), sql or redis."`
	KEKFile    string   `yaml:"kek_file" env:"NOPS_SIGNING_KEK_FILE" doc:"Key file (created 0600 when missing) encrypting HMAC request-signing secrets at rest; every replica needs the same file; default data_dir/kek.json."`
	Scheme     string   `yaml:"scheme" env:"NOPS_SIGNING_SCHEME" doc:"Scheme clients sign in @target-uri: https behind a TLS-terminating proxy; empty: the listener's own."`
	CacheTTL   Duration `yaml:"cache_ttl" env:"NOPS_SIGNING_CACHE_TTL" doc:"How long a looked-up signing key is cached (at most 5s; a revocation on another replica takes effect within it)."`

	// KEKReloadInterval: rotation of the key-encryption key (docs/operations.md, "Rotating keys").
	KEKReloadInterval Duration `yaml:"kek_reload_interval" env:"NOPS_SIGNING_KEK_RELOAD_INTERVAL" doc:"How often kek_file is checked for changes (also on SIGHUP); a broken file keeps the keys in use."`

	// NonceDurability is reqsig.Durability; see docs/request-signing.md "Nonce durability".
	NonceDurability string `yaml:"nonce_durability" env:"NOPS_SIGNING_NONCE_DURABILITY" doc:"What an accepted nonce survives in the nonce journal or the database: full (flushed to disk before the response: survives power loss) or process (written or committed without waiting for the flush: survives a kernel crash or restart, not an OS crash or power loss). Redis nonces follow Redis's own persistence."`
}

// NonceStoreKind resolves signing.nonce_store: "redis", "file" or "sql". auto is redis when
// redis.url is set, else file when the database is SQLite (one kernel per data directory), else
// sql (PostgreSQL, shared by the replicas).
func (c Config) NonceStoreKind() string {
	switch {
	case c.Signing.NonceStore != "auto":
		return c.Signing.NonceStore
	case c.Redis.URL != "":
		return "redis"
	case c.Database.URL == "":
		return "file"
	default:
		return "sql"
	}
}

// KEKPath returns the key-encryption key file, defaulting under the data directory.
func (c Config) KEKPath() string {
	if c.Signing.KEKFile != "" {
		return c.Signing.KEKFile
	}
	return filepath.Join(c.DataDir, "kek.json")
}

// LimitsConfig configures the perimeter's rate limits and connection and concurrency caps.
// A rule is <limit>/<period>[+<burst>]: "100/1m" allows 100 requests a minute, "10/1s+20" ten a
// second with bursts of 20 more; "" turns a rule off. Lists are separated by ';'.
type LimitsConfig struct {
	TrustedProxies string `yaml:"trusted_proxies" env:"NOPS_TRUSTED_PROXIES" doc:"Comma-separated CIDRs of proxies whose X-Forwarded-For / Forwarded headers are believed; empty: none (the direct peer is the client)."`
	Global         string `yaml:"global" env:"NOPS_RATE_LIMIT_GLOBAL" doc:"Rate limit on all requests together, e.g. 20000/1s+5000; empty: none."`
	PerIP          string `yaml:"per_ip" env:"NOPS_RATE_LIMIT_PER_IP" doc:"Rate limit per client IP (IPv6: per /64), e.g. 100/1m; empty: none."`
	PerTenant      string `yaml:"per_tenant" env:"NOPS_RATE_LIMIT_PER_TENANT" doc:"Rate limit per tenant (authenticated requests); empty: none."`
	PerPrincipal   string `yaml:"per_principal" env:"NOPS_RATE_LIMIT_PER_PRINCIPAL" doc:"Rate limit per authenticated principal (user or API key); empty: none."`
	Classes        string `yaml:"classes" env:"NOPS_RATE_LIMIT_CLASSES" doc:"Rate limits per route class and caller: class=rule;… with classes auth, read, write and admin (e.g. auth=20/1m;write=600/1m)."`
	Overrides      string `yaml:"overrides" env:"NOPS_RATE_LIMIT_OVERRIDES" doc:"Overrides: kind:target=rule;… with kind cidr, tenant or route (e.g. cidr:10.0.0.0/8=1000/1m;route:GET /v1/agents=50/1m); limit 0 exempts; the admin API's /v1/rate-limits win over these."`
	RedisPrefix    string `yaml:"redis_prefix" env:"NOPS_RATE_LIMIT_REDIS_PREFIX" doc:"Key prefix of the shared counters in Redis (with redis.url); use a {hash tag} on Redis Cluster."`

	MaxConnsPerIP     int `yaml:"max_conns_per_ip" env:"NOPS_MAX_CONNS_PER_IP" doc:"Open connections per client IP (by peer address) at most; more are refused at accept."`
	MaxConns          int `yaml:"max_conns" env:"NOPS_MAX_CONNS" doc:"Open connections at most per listener."`
	InFlightPerIP     int `yaml:"inflight_per_ip" env:"NOPS_INFLIGHT_PER_IP" doc:"Requests in flight per client IP at most (429 beyond)."`
	InFlightPerTenant int `yaml:"inflight_per_tenant" env:"NOPS_INFLIGHT_PER_TENANT" doc:"Requests in flight per tenant at most (429 beyond)."`
	InFlightMax       int `yaml:"inflight_max" env:"NOPS_INFLIGHT_MAX" doc:"Requests in flight per kernel at most: best-effort traffic is shed above 75 %, essential above 90 %, critical at the cap (503 + Retry-After)."`
}

// PolicyConfig configures ABAC policies (CEL); see docs/policies.md.
type PolicyConfig struct {
	Dir             string   `yaml:"dir" env:"NOPS_POLICY_DIR" doc:"Directory of policy files (YAML) loaded at start in addition to the policies of /v1/policies; empty: none."`
	CostLimit       int64    `yaml:"cost_limit" env:"NOPS_POLICY_COST_LIMIT" doc:"CEL cost limit of one policy evaluation; a policy exceeding it denies (fail closed)."`
	RefreshInterval Duration `yaml:"refresh_interval" env:"NOPS_POLICY_REFRESH_INTERVAL" doc:"How often each replica reloads changed policies (and rate-limit overrides) from the database."`
}

// RegistryConfig tunes the agent registry.
type RegistryConfig struct {
	StaleAfter     Duration `yaml:"stale_after" env:"NOPS_REGISTRY_STALE_AFTER" doc:"An agent without a heartbeat for this long is stale."`
	ZombieAfter    Duration `yaml:"zombie_after" env:"NOPS_REGISTRY_ZOMBIE_AFTER" doc:"An agent without a heartbeat for this long is a zombie and leaves routing."`
	SweepInterval  Duration `yaml:"sweep_interval" env:"NOPS_REGISTRY_SWEEP_INTERVAL" doc:"How often status changes implied by heartbeat age are applied and announced."`
	HeartbeatBatch int      `yaml:"heartbeat_batch" env:"NOPS_REGISTRY_HEARTBEAT_BATCH" doc:"Group commit: up to this many concurrent heartbeats share one durable transaction (0: one transaction each)."`
}

// APIKeysConfig configures API key hashing and usage tracking.
type APIKeysConfig struct {
	Pepper        string   `yaml:"pepper" env:"NOPS_APIKEY_PEPPER" secret:"true" doc:"Server pepper keying the BLAKE2b hashes of API keys (32–64 printable bytes; the same on every replica); empty: a pepper file in data_dir."`
	PepperVersion string   `yaml:"pepper_version" env:"NOPS_APIKEY_PEPPER_VERSION" doc:"Version id of pepper, recorded with each key hash so the pepper can be rotated."`
	PepperFile    string   `yaml:"pepper_file" env:"NOPS_APIKEY_PEPPER_FILE" doc:"Pepper file (created 0600 when missing) used when pepper is empty; default data_dir/apikey-pepper.json."`
	UsageFlush    Duration `yaml:"usage_flush" env:"NOPS_APIKEY_USAGE_FLUSH" doc:"How often the last-use times of API keys are written (batched, not one write per request)."`

	// PreviousPeppers and PepperReloadInterval: rotation of the pepper (docs/operations.md, "Rotating keys").
	PreviousPeppers      string   `yaml:"previous_peppers" env:"NOPS_APIKEY_PREVIOUS_PEPPERS" secret:"true" doc:"With pepper: older peppers still accepted, as whitespace-separated version:secret entries; keys hashed with one move to pepper as they are used."`
	PepperReloadInterval Duration `yaml:"pepper_reload_interval" env:"NOPS_APIKEY_PEPPER_RELOAD_INTERVAL" doc:"How often the pepper file is checked for changes (also on SIGHUP); a broken file keeps the peppers in use."`
}

// AuditConfig configures the audit log's signed checkpoints.
type AuditConfig struct {
	KeyFile            string   `yaml:"key_file" env:"NOPS_AUDIT_KEY_FILE" doc:"Ed25519 note signing key of audit checkpoints, kept outside the database (created 0600 when missing); default data_dir/audit-signing.key."`
	KeyName            string   `yaml:"key_name" env:"NOPS_AUDIT_KEY_NAME" doc:"Name of the checkpoint signing key: the origin prefix of every checkpoint."`
	CheckpointEvery    int64    `yaml:"checkpoint_every" env:"NOPS_AUDIT_CHECKPOINT_EVERY" doc:"Sign a checkpoint of a tree after this many new records…"`
	CheckpointInterval Duration `yaml:"checkpoint_interval" env:"NOPS_AUDIT_CHECKPOINT_INTERVAL" doc:"…or this long after its first unsigned record, whichever comes first."`
}

// PepperFilePath returns the API key pepper file, defaulting under the data directory.
func (c Config) PepperFilePath() string {
	if c.APIKeys.PepperFile != "" {
		return c.APIKeys.PepperFile
	}
	return filepath.Join(c.DataDir, "apikey-pepper.json")
}

// AuditKeyPath returns the audit checkpoint key file, defaulting under the data directory.
func (c Config) AuditKeyPath() string {
	if c.Audit.KeyFile != "" {
		return c.Audit.KeyFile
	}
	return filepath.Join(c.DataDir, "audit-signing.key")
}

// HTTPConfig configures the API listener.
type HTTPConfig struct {
	Addr              string    `yaml:"addr" env:"NOPS_HTTP_ADDR" flag:"http-addr" doc:"Address the HTTP API listens on (host:port; port 0 picks a free one)."`
	GatewayAddr       string    `yaml:"gateway_addr" env:"NOPS_GATEWAY_ADDR" flag:"gateway-addr" doc:"Address of the Zero Agent Gateway listener (the same API for agents without mTLS: RFC 9421 signatures mandatory, per-tenant origin allow-lists, a billing.usage event per call); empty: off."`
	MTLSAddr          string    `yaml:"mtls_addr" env:"NOPS_MTLS_ADDR" flag:"mtls-addr" doc:"Address of the mTLS listener (the same API for workloads presenting an X.509-SVID of identity.trust_domain: TLS 1.3, client certificate required, hierarchical scopes instead of roles); empty: off."`
	ReadHeaderTimeout Duration  `yaml:"read_header_timeout" env:"NOPS_HTTP_READ_HEADER_TIMEOUT" doc:"Longest time to read request headers."`
	ReadTimeout       Duration  `yaml:"read_timeout" env:"NOPS_HTTP_READ_TIMEOUT" doc:"Longest time to read a whole request."`
	WriteTimeout      Duration  `yaml:"write_timeout" env:"NOPS_HTTP_WRITE_TIMEOUT" doc:"Longest time to write a response."`
	IdleTimeout       Duration  `yaml:"idle_timeout" env:"NOPS_HTTP_IDLE_TIMEOUT" doc:"Keep-alive idle timeout."`
	ShutdownTimeout   Duration  `yaml:"shutdown_timeout" env:"NOPS_HTTP_SHUTDOWN_TIMEOUT" doc:"How long shutdown waits for in-flight requests to drain."`
	MaxBodyBytes      int64     `yaml:"max_body_bytes" env:"NOPS_HTTP_MAX_BODY_BYTES" doc:"Largest accepted request body, in bytes (larger → 413)."`
	MaxHeaderBytes    int       `yaml:"max_header_bytes" env:"NOPS_HTTP_MAX_HEADER_BYTES" doc:"Largest accepted request header block, in bytes."`
	PublicURL         string    `yaml:"public_url" env:"NOPS_HTTP_PUBLIC_URL" doc:"The kernel's public base URL (https://kernel.example.com): the resource of its OAuth protected-resource metadata and of the WWW-Authenticate challenges (docs/mcp.md); empty: derived from each request's Host."`
	WriteStallTimeout Duration  `yaml:"write_stall_timeout" env:"NOPS_HTTP_WRITE_STALL_TIMEOUT" doc:"A connection whose client reads nothing of a response for this long is closed (slow readers)."`
	TLS               TLSConfig `yaml:"tls"`
}

// TLSConfig turns the API listener into HTTPS (TLS 1.2+, AEAD cipher suites only, HSTS).
type TLSConfig struct {
	CertFile       string   `yaml:"cert_file" env:"NOPS_TLS_CERT_FILE" doc:"PEM certificate chain of the HTTPS listener; reloaded when the file changes (no restart). Empty with dev_cert false: plain HTTP."`
	KeyFile        string   `yaml:"key_file" env:"NOPS_TLS_KEY_FILE" doc:"PEM private key of cert_file."`
	DevCert        bool     `yaml:"dev_cert" env:"NOPS_TLS_DEV_CERT" doc:"Serve HTTPS with a generated self-signed certificate for localhost (kept in data_dir/tls), for development."`
	ReloadInterval Duration `yaml:"reload_interval" env:"NOPS_TLS_RELOAD_INTERVAL" doc:"How often the certificate files are checked for changes."`
	HSTSMaxAge     Duration `yaml:"hsts_max_age" env:"NOPS_TLS_HSTS_MAX_AGE" doc:"max-age of the Strict-Transport-Security header sent on HTTPS responses; 0: none."`
}

// Enabled reports whether the API listener serves HTTPS.
func (t TLSConfig) Enabled() bool { return t.CertFile != "" || t.DevCert }

// DatabaseConfig selects and tunes the state store.
type DatabaseConfig struct {
	URL             string   `yaml:"url" env:"NOPS_DATABASE_URL" secret:"true" doc:"postgres://… to use PostgreSQL; empty for embedded SQLite under data_dir."`
	MaxConns        int32    `yaml:"max_conns" env:"NOPS_DATABASE_MAX_CONNS" doc:"PostgreSQL pool size."`
	MinConns        int32    `yaml:"min_conns" env:"NOPS_DATABASE_MIN_CONNS" doc:"PostgreSQL connections kept open when idle."`
	ConnectTimeout  Duration `yaml:"connect_timeout" env:"NOPS_DATABASE_CONNECT_TIMEOUT" doc:"Timeout to open one database connection."`
	MaxConnLifetime Duration `yaml:"max_conn_lifetime" env:"NOPS_DATABASE_MAX_CONN_LIFETIME" doc:"PostgreSQL connections are recycled after this long."`
	MaxConnIdleTime Duration `yaml:"max_conn_idle_time" env:"NOPS_DATABASE_MAX_CONN_IDLE_TIME" doc:"Idle PostgreSQL connections are closed after this long."`
	BusyTimeout     Duration `yaml:"busy_timeout" env:"NOPS_DATABASE_BUSY_TIMEOUT" doc:"SQLite busy timeout: how long a statement waits for a lock."`
}

// RedisConfig adds Redis (shared caches, rate limits; optional).
type RedisConfig struct {
	URL         string   `yaml:"url" env:"NOPS_REDIS_URL" secret:"true" doc:"redis://… to use Redis; empty for in-process caches."`
	DialTimeout Duration `yaml:"dial_timeout" env:"NOPS_REDIS_DIAL_TIMEOUT" doc:"Timeout to open a Redis connection."`
	PoolSize    int      `yaml:"pool_size" env:"NOPS_REDIS_POOL_SIZE" doc:"Redis connection pool size (0: go-redis default)."`
}

// BusConfig selects and tunes the event bus (see docs/operations.md for what each durability
// setting guarantees).
type BusConfig struct {
	Kind               string   `yaml:"kind" env:"NOPS_EVENT_BUS" doc:"Event bus implementation: nats (embedded or external JetStream) or redis (Redis Streams on redis.url)."`
	NATSURL            string   `yaml:"nats_url" env:"NOPS_NATS_URL" secret:"true" doc:"nats://… of an external NATS JetStream; empty for JetStream embedded in the process."`
	NATSCredsFile      string   `yaml:"nats_creds_file" env:"NOPS_NATS_CREDS_FILE" doc:"NATS user credentials file (JWT + NKey seed) for an external NATS."`
	NATSTLSCA          string   `yaml:"nats_tls_ca" env:"NOPS_NATS_TLS_CA" doc:"PEM file of the CA that signed the external NATS servers' certificates."`
	NATSTLSCert        string   `yaml:"nats_tls_cert" env:"NOPS_NATS_TLS_CERT" doc:"PEM client certificate for an external NATS requiring mutual TLS."`
	NATSTLSKey         string   `yaml:"nats_tls_key" env:"NOPS_NATS_TLS_KEY" doc:"PEM private key of nats_tls_cert."`
	EmbeddedListen     string   `yaml:"embedded_listen" env:"NOPS_NATS_EMBEDDED_LISTEN" doc:"host:port where the embedded NATS also accepts TCP clients; empty for in-process only."`
	NATSAtomicBatchMin int      `yaml:"nats_atomic_batch_min" env:"NOPS_NATS_ATOMIC_BATCH_MIN" doc:"JetStream: publishes of at least this many events go as atomic batches sharing one fsync; 0: 16 on the embedded server with durability sync, off elsewhere (set it for an external NATS with sync_interval always or R3 streams); -1: never."`
	Namespace          string   `yaml:"namespace" env:"NOPS_BUS_NAMESPACE" doc:"Prefix of every subject, stream and key of the bus, so several kernels can share one NATS account or Redis database."`
	Durability         string   `yaml:"durability" env:"NOPS_BUS_DURABILITY" doc:"Embedded JetStream: sync (an acknowledged event survives a power loss: fsync before every acknowledgement) or async (flushed every sync_interval: survives a process crash only)."`
	SyncInterval       Duration `yaml:"sync_interval" env:"NOPS_BUS_SYNC_INTERVAL" doc:"With durability async, how often the embedded JetStream flushes to disk: the window of acknowledged events a power loss can lose."`
	Replicas           int      `yaml:"replicas" env:"NOPS_BUS_REPLICAS" doc:"Replicas of each stream on an external NATS cluster (1, 3 or 5); the embedded server has 1."`
	Retention          Duration `yaml:"retention" env:"NOPS_BUS_RETENTION" doc:"How long the event stream keeps events (the replay window)."`
	RedisMaxLen        int64    `yaml:"redis_maxlen" env:"NOPS_BUS_REDIS_MAXLEN" doc:"Redis Streams: approximate cap on the event stream's length (XADD MAXLEN ~), on top of retention (MINID)."`
	RedisMinReplicas   int      `yaml:"redis_min_replicas" env:"NOPS_BUS_REDIS_MIN_REPLICAS" doc:"Redis Streams: a publish waits (WAIT) until this many replicas hold it, else fails and is retried from the outbox; 0: the primary's acknowledgement is enough."`
	DedupWindow        Duration `yaml:"dedup_window" env:"NOPS_BUS_DEDUP_WINDOW" doc:"How long the broker remembers event ids to drop repeated publishes."`
	PublishTimeout     Duration `yaml:"publish_timeout" env:"NOPS_BUS_PUBLISH_TIMEOUT" doc:"Backpressure: how long a publish waits for room in a full publish window before failing (HTTP 503 with Retry-After)."`
	MaxPending         int      `yaml:"max_pending" env:"NOPS_BUS_MAX_PENDING" doc:"Backpressure: publishes in flight to the broker at most, per kernel."`
	MaxDeliveries      int      `yaml:"max_deliveries" env:"NOPS_BUS_MAX_DELIVERIES" doc:"Attempts a consumer makes at one event (1 + retries) before it goes to the dead-letter queue."`
	BackoffInitial     Duration `yaml:"backoff_initial" env:"NOPS_BUS_BACKOFF_INITIAL" doc:"Wait before the first retry of a failed event; doubles on each retry…"`
	BackoffMax         Duration `yaml:"backoff_max" env:"NOPS_BUS_BACKOFF_MAX" doc:"…up to this."`
	AckWait            Duration `yaml:"ack_wait" env:"NOPS_BUS_ACK_WAIT" doc:"An event delivered and not settled within this time (crashed or hung consumer) is delivered again."`
}

// OutboxConfig tunes the relay from the transactional outbox to the bus.
type OutboxConfig struct {
	PollInterval Duration `yaml:"poll_interval" env:"NOPS_OUTBOX_POLL_INTERVAL" doc:"How often the relay looks for unpublished events when no local commit woke it."`
	Batch        int      `yaml:"batch" env:"NOPS_OUTBOX_BATCH" doc:"Events the relay publishes per round."`
	LeaseTTL     Duration `yaml:"lease_ttl" env:"NOPS_OUTBOX_LEASE_TTL" doc:"The relay lease: one replica publishes at a time; another takes over this long after the holder stops renewing."`
	Retention    Duration `yaml:"retention" env:"NOPS_OUTBOX_RETENTION" doc:"Published outbox rows (and consumer inbox rows) are purged after this long."`
}

// IdempotencyConfig configures Idempotency-Key handling on POST and PATCH.
type IdempotencyConfig struct {
	TTL   Duration `yaml:"ttl" env:"NOPS_IDEMPOTENCY_TTL" doc:"How long a stored response is replayed for retries with the same Idempotency-Key."`
	Store string   `yaml:"store" env:"NOPS_IDEMPOTENCY_STORE" doc:"Where idempotency records live: auto (Redis when redis.url is set, else the database), sql or redis."`
}

// tokenRE is what a bus namespace may be: one subject token, one key segment.
var tokenRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// Signing algorithms accepted for issued tokens.
var SigningAlgs = []string{"EdDSA", "ES256", "RS256", "HS256"}

// AuthConfig configures token issuance and verification and the bootstrap administrator.
type AuthConfig struct {
	Issuer      string   `yaml:"issuer" env:"NOPS_AUTH_ISSUER" doc:"iss of issued tokens, required on verified ones."`
	Audience    string   `yaml:"audience" env:"NOPS_AUTH_AUDIENCE" doc:"aud of issued tokens, required on verified ones."`
	SigningAlg  string   `yaml:"signing_alg" env:"NOPS_AUTH_SIGNING_ALG" doc:"Token signing algorithm: EdDSA, ES256, RS256 or HS256."`
	HS256Secret string   `yaml:"hs256_secret" env:"NOPS_AUTH_HS256_SECRET" secret:"true" doc:"HS256 shared secret (≥ 32 bytes); generated and stored when empty."`
	TokenTTL    Duration `yaml:"token_ttl" env:"NOPS_AUTH_TOKEN_TTL" doc:"Lifetime of issued access tokens."`
	Leeway      Duration `yaml:"leeway" env:"NOPS_AUTH_LEEWAY" doc:"Clock skew tolerated on exp/nbf/iat (at most 60s)."`
	// KeyPublishDelay and KeyReloadInterval: rotation of the signing keys (docs/operations.md, "Rotating keys").
	KeyPublishDelay        Duration `yaml:"key_publish_delay" env:"NOPS_AUTH_KEY_PUBLISH_DELAY" doc:"How long a rotated signing key is published in the JWKS before every replica signs with it (at least key_reload_interval)."`
	KeyReloadInterval      Duration `yaml:"key_reload_interval" env:"NOPS_AUTH_KEY_RELOAD_INTERVAL" doc:"How often each replica reloads the signing keys from the database (keys rotated elsewhere, retirements)."`
	BootstrapAdminPassword string   `yaml:"bootstrap_admin_password" env:"NOPS_BOOTSTRAP_ADMIN_PASSWORD" secret:"true" doc:"Password of the bootstrap SUPER_ADMIN 'admin' (≥ 12 chars); random and printed once when empty."`
}

// LogConfig configures the JSON logger.
type LogConfig struct {
	Level string `yaml:"level" env:"NOPS_LOG_LEVEL" flag:"log-level" doc:"Log level: debug, info, warn or error."`
}

// HealthConfig tunes readiness checks.
type HealthConfig struct {
	CacheTTL     Duration `yaml:"cache_ttl" env:"NOPS_HEALTH_CACHE_TTL" doc:"How long a dependency check result is reused by /_readyz and /healthz."`
	CheckTimeout Duration `yaml:"check_timeout" env:"NOPS_HEALTH_CHECK_TIMEOUT" doc:"Timeout of one dependency check."`
	// The degraded modes (docs/criticality.md).
	DegradeInterval   Duration `yaml:"degrade_interval" env:"NOPS_HEALTH_DEGRADE_INTERVAL" doc:"How often each replica re-evaluates its degraded modes (write probe, bus check, load, kernel.degrade.* flags)."`
	DegradeRecover    int      `yaml:"degrade_recover_rounds" env:"NOPS_HEALTH_DEGRADE_RECOVER_ROUNDS" doc:"Healthy rounds in a row before an automatic degraded mode is left (hysteresis against flapping)."`
	DegradeRetryAfter Duration `yaml:"degrade_retry_after" env:"NOPS_HEALTH_DEGRADE_RETRY_AFTER" doc:"Retry-After of the 503s a degraded mode answers (writes in read_only, best-effort requests in shed_best_effort)."`
}

// TelemetryConfig configures OpenTelemetry. The OTLP exporter itself is configured by the
// standard OTEL_EXPORTER_OTLP_* variables; it is enabled when OTEL_EXPORTER_OTLP_ENDPOINT is set.
type TelemetryConfig struct {
	ServiceName string `yaml:"service_name" env:"NOPS_SERVICE_NAME" doc:"service.name reported in traces and metrics."`
}

// Default returns the embedded-defaults configuration: a working kernel with no other process.
func Default() Config {
	return Config{
		DataDir: "./nops-data",
		HTTP: HTTPConfig{
			Addr:              "127.0.0.1:8080",
			ReadHeaderTimeout: Duration(5 * time.Second),
			ReadTimeout:       Duration(30 * time.Second),
			WriteTimeout:      Duration(30 * time.Second),
			IdleTimeout:       Duration(120 * time.Second),
			ShutdownTimeout:   Duration(20 * time.Second),
			MaxBodyBytes:      1 << 20,
			MaxHeaderBytes:    64 << 10,
			WriteStallTimeout: Duration(30 * time.Second),
			TLS:               TLSConfig{ReloadInterval: Duration(5 * time.Second), HSTSMaxAge: Duration(2 * 365 * 24 * time.Hour)},
		},
		Limits: LimitsConfig{
			PerIP:             "100/1m",
			RedisPrefix:       "nops:rl:",
			MaxConnsPerIP:     256,
			MaxConns:          8192,
			InFlightPerIP:     64,
			InFlightPerTenant: 256,
			InFlightMax:       1024,
		},
		Policy:  PolicyConfig{CostLimit: 10000, RefreshInterval: Duration(2 * time.Second)},
		Signing: SigningConfig{MaxSkew: Duration(5 * time.Minute), NonceStore: "auto", NonceDurability: "full", CacheTTL: Duration(time.Second), KEKReloadInterval: Duration(5 * time.Second)},
		Database: DatabaseConfig{
			MaxConns:        20,
			MinConns:        1,
			ConnectTimeout:  Duration(5 * time.Second),
			MaxConnLifetime: Duration(time.Hour),
			MaxConnIdleTime: Duration(10 * time.Minute),
			BusyTimeout:     Duration(5 * time.Second),
		},
		Redis: RedisConfig{DialTimeout: Duration(3 * time.Second)},
		Bus: BusConfig{
			Kind:           "nats",
			Namespace:      "nops",
			Durability:     "sync",
			SyncInterval:   Duration(time.Second),
			Replicas:       1,
			Retention:      Duration(7 * 24 * time.Hour),
			RedisMaxLen:    1_000_000,
			DedupWindow:    Duration(2 * time.Minute),
			PublishTimeout: Duration(5 * time.Second),
			MaxPending:     4096,
			MaxDeliveries:  5,
			BackoffInitial: Duration(200 * time.Millisecond),
			BackoffMax:     Duration(30 * time.Second),
			AckWait:        Duration(30 * time.Second),
		},
		Outbox: OutboxConfig{
			PollInterval: Duration(200 * time.Millisecond),
			Batch:        500,
			LeaseTTL:     Duration(10 * time.Second),
			Retention:    Duration(7 * 24 * time.Hour),
		},
		Idempotency: IdempotencyConfig{TTL: Duration(24 * time.Hour), Store: "auto"},
		Auth: AuthConfig{
			Issuer:     "nops-kernel",
			Audience:   "nops-api",
			SigningAlg: "EdDSA",
			TokenTTL:   Duration(15 * time.Minute),
			Leeway:     Duration(30 * time.Second),
			// Rotation of the signing keys.
			KeyPublishDelay:   Duration(time.Minute),
			KeyReloadInterval: Duration(10 * time.Second),
		},
		Log: LogConfig{Level: "info"},
		Health: HealthConfig{CacheTTL: Duration(time.Second), CheckTimeout: Duration(2 * time.Second),
			DegradeInterval: Duration(time.Second), DegradeRecover: 3, DegradeRetryAfter: Duration(5 * time.Second)},
		Telemetry: TelemetryConfig{ServiceName: "nops-kernel"},
		Registry: RegistryConfig{
			StaleAfter:     Duration(30 * time.Second),
			ZombieAfter:    Duration(2 * time.Minute),
			SweepInterval:  Duration(5 * time.Second),
			HeartbeatBatch: 64,
		},
		APIKeys: APIKeysConfig{PepperVersion: "v1", UsageFlush: Duration(30 * time.Second), PepperReloadInterval: Duration(5 * time.Second)},
		Invoke: InvokeConfig{
			Timeout:          Duration(30 * time.Second),
			MaxTimeout:       Duration(10 * time.Minute),
			AttemptTimeout:   Duration(10 * time.Second),
			MaxAttempts:      3,
			BackoffBase:      Duration(25 * time.Millisecond),
			BackoffMax:       Duration(time.Second),
			RetryBudget:      0.1,
			RetryBudgetFloor: 1,
			BreakerFailures:  5,
			BreakerDelay:     Duration(10 * time.Second),
			BreakerSuccesses: 2,
			AgentInFlight:    256,
			EjectAfter:       5,
			EjectFor:         Duration(10 * time.Second),
			Balancing:        "dynamic",
			CandidatesTTL:    Duration(time.Second),
			ResultTTL:        Duration(24 * time.Hour),
		},
		Egress:   EgressConfig{AllowLoopback: "auto", ViolationAction: "none", AllowlistReloadPeriod: Duration(10 * time.Second)},
		Identity: defaultIdentity(),
		Flags:    defaultFlags(),
		Audit: AuditConfig{
			KeyName:            "nops-kernel",
			CheckpointEvery:    1000,
			CheckpointInterval: Duration(10 * time.Second),
		},
	}
}

// ValidationError lists every invalid field of a Config.
type ValidationError struct {
	Problems []FieldProblem
}

// FieldProblem is one invalid field: its YAML path, its environment variable and what is wrong.
type FieldProblem struct {
	Field  string
	Env    string
	Reason string
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("invalid configuration:")
	for _, p := range e.Problems {
		fmt.Fprintf(&b, "\n  %s", p.Field)
		if p.Env != "" {
			fmt.Fprintf(&b, " (%s)", p.Env)
		}
		fmt.Fprintf(&b, ": %s", p.Reason)
	}
	return b.String()
}

// Validate reports every invalid field, naming it and the accepted values.
func (c Config) Validate() error {
	var v validator
	if strings.TrimSpace(c.DataDir) == "" {
		v.add("data_dir", "must not be empty")
	}
	if _, port, err := net.SplitHostPort(c.HTTP.Addr); err != nil || port == "" {
		v.add("http.addr", fmt.Sprintf("must be host:port, got %q", c.HTTP.Addr))
	}
	v.positive("http.read_header_timeout", c.HTTP.ReadHeaderTimeout)
	v.positive("http.read_timeout", c.HTTP.ReadTimeout)
	v.positive("http.write_timeout", c.HTTP.WriteTimeout)
	v.positive("http.idle_timeout", c.HTTP.IdleTimeout)
	v.positive("http.shutdown_timeout", c.HTTP.ShutdownTimeout)
	if u := c.HTTP.PublicURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || pu.RawQuery != "" || pu.Fragment != "" || pu.User != nil {
			v.add("http.public_url", fmt.Sprintf("must be an absolute http(s) URL without query or fragment, got %q", u))
		}
	}
	if c.HTTP.MaxBodyBytes < 1024 {
		v.add("http.max_body_bytes", fmt.Sprintf("must be at least 1024, got %d", c.HTTP.MaxBodyBytes))
	}
	if c.HTTP.GatewayAddr != "" {
		if _, port, err := net.SplitHostPort(c.HTTP.GatewayAddr); err != nil || port == "" {
			v.add("http.gateway_addr", fmt.Sprintf("must be host:port or empty, got %q", c.HTTP.GatewayAddr))
		}
	}
	if c.HTTP.MTLSAddr != "" {
		if _, port, err := net.SplitHostPort(c.HTTP.MTLSAddr); err != nil || port == "" {
			v.add("http.mtls_addr", fmt.Sprintf("must be host:port or empty, got %q", c.HTTP.MTLSAddr))
		}
	}
	if c.HTTP.MaxHeaderBytes < 4096 {
		v.add("http.max_header_bytes", fmt.Sprintf("must be at least 4096, got %d", c.HTTP.MaxHeaderBytes))
	}
	v.positive("http.write_stall_timeout", c.HTTP.WriteStallTimeout)
	if (c.HTTP.TLS.CertFile == "") != (c.HTTP.TLS.KeyFile == "") {
		v.add("http.tls.cert_file", "cert_file and key_file must be set together")
	}
	if c.HTTP.TLS.DevCert && c.HTTP.TLS.CertFile != "" {
		v.add("http.tls.dev_cert", "use either a generated development certificate or cert_file/key_file, not both")
	}
	v.positive("http.tls.reload_interval", c.HTTP.TLS.ReloadInterval)
	if c.HTTP.TLS.HSTSMaxAge < 0 {
		v.add("http.tls.hsts_max_age", "must not be negative")
	}
	v.limits(c.Limits)
	if c.Policy.CostLimit < 1 {
		v.add("policy.cost_limit", fmt.Sprintf("must be at least 1, got %d", c.Policy.CostLimit))
	}
	v.positive("policy.refresh_interval", c.Policy.RefreshInterval)
	if c.Signing.MaxSkew.D() < time.Second || c.Signing.MaxSkew.D() > time.Hour {
		v.add("signing.max_skew", fmt.Sprintf("must be between 1s and 1h, got %s", c.Signing.MaxSkew))
	}
	v.oneOf("signing.nonce_store", c.Signing.NonceStore, []string{"auto", "file", "sql", "redis"})
	if c.Signing.NonceStore == "redis" && c.Redis.URL == "" {
		v.add("signing.nonce_store", "redis needs redis.url (NOPS_REDIS_URL)")
	}
	if c.Signing.NonceStore == "file" && c.Database.URL != "" {
		v.add("signing.nonce_store", "file keeps the nonces of one kernel under data_dir and is for SQLite; with database.url (PostgreSQL, shared by replicas) use sql or redis")
	}
	v.oneOf("signing.nonce_durability", c.Signing.NonceDurability, []string{"full", "process"})
	if c.Signing.NonceDurability == "process" && c.NonceStoreKind() == "redis" {
		v.add("signing.nonce_durability", "process applies to the nonce journal and the database nonce store; Redis nonces follow Redis's own persistence (set signing.nonce_store: sql, or leave full)")
	}
	if c.Signing.Scheme != "" && c.Signing.Scheme != "http" && c.Signing.Scheme != "https" {
		v.add("signing.scheme", fmt.Sprintf("must be http, https or empty, got %q", c.Signing.Scheme))
	}
	if c.Signing.CacheTTL < 0 || c.Signing.CacheTTL.D() > 5*time.Second {
		v.add("signing.cache_ttl", fmt.Sprintf("must be between 0 and 5s, got %s", c.Signing.CacheTTL))
	}
	if c.Database.URL != "" {
		if u, err := url.Parse(c.Database.URL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			v.add("database.url", "must be a postgres:// or postgresql:// URL, or empty for embedded SQLite")
		}
	}
	if c.Database.MaxConns < 1 {
		v.add("database.max_conns", fmt.Sprintf("must be at least 1, got %d", c.Database.MaxConns))
	}
	if c.Database.MinConns < 0 || c.Database.MinConns > c.Database.MaxConns {
		v.add("database.min_conns", fmt.Sprintf("must be between 0 and database.max_conns (%d), got %d", c.Database.MaxConns, c.Database.MinConns))
	}
	v.positive("database.connect_timeout", c.Database.ConnectTimeout)
	v.positive("database.max_conn_lifetime", c.Database.MaxConnLifetime)
	v.positive("database.max_conn_idle_time", c.Database.MaxConnIdleTime)
	v.positive("database.busy_timeout", c.Database.BusyTimeout)
	if c.Redis.URL != "" {
		if u, err := url.Parse(c.Redis.URL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			v.add("redis.url", "must be a redis:// or rediss:// URL, or empty")
		}
	}
	v.positive("redis.dial_timeout", c.Redis.DialTimeout)
	if c.Redis.PoolSize < 0 {
		v.add("redis.pool_size", "must not be negative")
	}
	v.oneOf("bus.kind", c.Bus.Kind, []string{"nats", "redis"})
	if c.Bus.Kind == "redis" && c.Redis.URL == "" {
		v.add("bus.kind", "redis needs redis.url (NOPS_REDIS_URL)")
	}
	if c.Bus.Kind == "redis" && c.Bus.NATSURL != "" {
		v.add("bus.nats_url", "is only used with bus.kind nats: unset it or switch the bus")
	}
	if !tokenRE.MatchString(c.Bus.Namespace) {
		v.add("bus.namespace", fmt.Sprintf("must be 1 to 32 characters from a-z, 0-9 and '_', starting with a letter, got %q", c.Bus.Namespace))
	}
	v.oneOf("bus.durability", c.Bus.Durability, []string{"sync", "async"})
	if c.Bus.NATSAtomicBatchMin < -1 || c.Bus.NATSAtomicBatchMin > 1000 {
		v.add("bus.nats_atomic_batch_min", fmt.Sprintf("must be -1 (never), 0 (default) or 2 to 1000, got %d", c.Bus.NATSAtomicBatchMin))
	}
	if c.Bus.NATSAtomicBatchMin == 1 {
		v.add("bus.nats_atomic_batch_min", "must be -1 (never), 0 (default) or 2 to 1000, got 1")
	}
	v.positive("bus.sync_interval", c.Bus.SyncInterval)
	if c.Bus.Replicas != 1 && c.Bus.Replicas != 3 && c.Bus.Replicas != 5 {
		v.add("bus.replicas", fmt.Sprintf("must be 1, 3 or 5, got %d", c.Bus.Replicas))
	}
	if c.Bus.Replicas > 1 && c.Bus.NATSURL == "" {
		v.add("bus.replicas", "must be 1 with the embedded JetStream (replicas need an external NATS cluster)")
	}
	if c.Bus.Retention.D() < time.Minute {
		v.add("bus.retention", fmt.Sprintf("must be at least 1m, got %s", c.Bus.Retention))
	}
	if c.Bus.RedisMinReplicas < 0 || c.Bus.RedisMinReplicas > 16 {
		v.add("bus.redis_min_replicas", fmt.Sprintf("must be between 0 and 16, got %d", c.Bus.RedisMinReplicas))
	}
	if c.Bus.RedisMaxLen < 1000 {
		v.add("bus.redis_maxlen", fmt.Sprintf("must be at least 1000, got %d", c.Bus.RedisMaxLen))
	}
	if c.Bus.DedupWindow.D() < time.Second || c.Bus.DedupWindow.D() > c.Bus.Retention.D() {
		v.add("bus.dedup_window", fmt.Sprintf("must be between 1s and bus.retention (%s), got %s", c.Bus.Retention, c.Bus.DedupWindow))
	}
	v.positive("bus.publish_timeout", c.Bus.PublishTimeout)
	if c.Bus.MaxPending < 1 {
		v.add("bus.max_pending", fmt.Sprintf("must be at least 1, got %d", c.Bus.MaxPending))
	}
	if c.Bus.MaxDeliveries < 1 {
		v.add("bus.max_deliveries", fmt.Sprintf("must be at least 1, got %d", c.Bus.MaxDeliveries))
	}
	v.positive("bus.backoff_initial", c.Bus.BackoffInitial)
	if c.Bus.BackoffMax < c.Bus.BackoffInitial {
		v.add("bus.backoff_max", fmt.Sprintf("must be at least bus.backoff_initial (%s), got %s", c.Bus.BackoffInitial, c.Bus.BackoffMax))
	}
	if c.Bus.AckWait.D() < time.Second {
		v.add("bus.ack_wait", fmt.Sprintf("must be at least 1s, got %s", c.Bus.AckWait))
	}
	if (c.Bus.NATSTLSCert == "") != (c.Bus.NATSTLSKey == "") {
		v.add("bus.nats_tls_cert", "nats_tls_cert and nats_tls_key must be set together")
	}
	v.positive("outbox.poll_interval", c.Outbox.PollInterval)
	if c.Outbox.Batch < 1 || c.Outbox.Batch > 10000 {
		v.add("outbox.batch", fmt.Sprintf("must be between 1 and 10000, got %d", c.Outbox.Batch))
	}
	if c.Outbox.LeaseTTL.D() < time.Second {
		v.add("outbox.lease_ttl", fmt.Sprintf("must be at least 1s, got %s", c.Outbox.LeaseTTL))
	}
	if c.Outbox.Retention.D() < time.Hour {
		v.add("outbox.retention", fmt.Sprintf("must be at least 1h, got %s", c.Outbox.Retention))
	}
	if c.Idempotency.TTL.D() < time.Minute {
		v.add("idempotency.ttl", fmt.Sprintf("must be at least 1m, got %s", c.Idempotency.TTL))
	}
	v.oneOf("idempotency.store", c.Idempotency.Store, []string{"auto", "sql", "redis"})
	if c.Idempotency.Store == "redis" && c.Redis.URL == "" {
		v.add("idempotency.store", "redis needs redis.url (NOPS_REDIS_URL)")
	}
	if c.Bus.NATSURL != "" {
		for _, s := range strings.Split(c.Bus.NATSURL, ",") {
			if u, err := url.Parse(strings.TrimSpace(s)); err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" {
				v.add("bus.nats_url", "must be a comma-separated list of nats:// or tls:// URLs, or empty for embedded JetStream")
				break
			}
		}
	}
	if c.Bus.EmbeddedListen != "" {
		if _, _, err := net.SplitHostPort(c.Bus.EmbeddedListen); err != nil {
			v.add("bus.embedded_listen", fmt.Sprintf("must be host:port or empty, got %q", c.Bus.EmbeddedListen))
		}
	}
	if strings.TrimSpace(c.Auth.Issuer) == "" {
		v.add("auth.issuer", "must not be empty")
	}
	if strings.TrimSpace(c.Auth.Audience) == "" {
		v.add("auth.audience", "must not be empty")
	}
	v.oneOf("auth.signing_alg", c.Auth.SigningAlg, SigningAlgs)
	if c.Auth.HS256Secret != "" && len(c.Auth.HS256Secret) < 32 {
		v.add("auth.hs256_secret", "must be at least 32 bytes long")
	}
	if c.Auth.HS256Secret != "" && c.Auth.SigningAlg != "HS256" {
		v.add("auth.hs256_secret", fmt.Sprintf("is only used with auth.signing_alg HS256 (got %q): unset it or switch the algorithm", c.Auth.SigningAlg))
	}
	if c.Auth.TokenTTL.D() < time.Minute || c.Auth.TokenTTL.D() > 24*time.Hour {
		v.add("auth.token_ttl", fmt.Sprintf("must be between 1m and 24h, got %s", c.Auth.TokenTTL))
	}
	if c.Auth.Leeway.D() < 0 || c.Auth.Leeway.D() > time.Minute {
		v.add("auth.leeway", fmt.Sprintf("must be between 0s and 60s, got %s", c.Auth.Leeway))
	}
	if c.Auth.KeyReloadInterval.D() < 100*time.Millisecond || c.Auth.KeyReloadInterval.D() > time.Minute {
		v.add("auth.key_reload_interval", fmt.Sprintf("must be between 100ms and 1m, got %s", c.Auth.KeyReloadInterval))
	}
	if c.Auth.KeyPublishDelay.D() < c.Auth.KeyReloadInterval.D() || c.Auth.KeyPublishDelay.D() > 24*time.Hour {
		v.add("auth.key_publish_delay", fmt.Sprintf("must be at least auth.key_reload_interval (%s), so every replica holds a rotated key before it signs, and at most 24h; got %s",
			c.Auth.KeyReloadInterval, c.Auth.KeyPublishDelay))
	}
	if p := c.Auth.BootstrapAdminPassword; p != "" && len(p) < 12 {
		v.add("auth.bootstrap_admin_password", "must be at least 12 characters long")
	}
	v.oneOf("log.level", c.Log.Level, []string{"debug", "info", "warn", "error"})
	v.positive("health.cache_ttl", c.Health.CacheTTL)
	v.positive("health.check_timeout", c.Health.CheckTimeout)
	v.positive("health.degrade_interval", c.Health.DegradeInterval)
	v.positive("health.degrade_retry_after", c.Health.DegradeRetryAfter)
	if c.Health.DegradeRecover < 1 || c.Health.DegradeRecover > 100 {
		v.add("health.degrade_recover_rounds", "must be 1 to 100")
	}
	if strings.TrimSpace(c.Telemetry.ServiceName) == "" {
		v.add("telemetry.service_name", "must not be empty")
	}
	c.validateInvoke(&v)
	c.validateIdentity(&v)
	c.validateFlags(&v)
	v.positive("registry.stale_after", c.Registry.StaleAfter)
	if c.Registry.ZombieAfter <= c.Registry.StaleAfter {
		v.add("registry.zombie_after", fmt.Sprintf("must be longer than registry.stale_after (%s), got %s", c.Registry.StaleAfter, c.Registry.ZombieAfter))
	}
	v.positive("registry.sweep_interval", c.Registry.SweepInterval)
	if c.Registry.HeartbeatBatch < 0 || c.Registry.HeartbeatBatch > 10000 {
		v.add("registry.heartbeat_batch", fmt.Sprintf("must be between 0 and 10000, got %d", c.Registry.HeartbeatBatch))
	}
	if p := c.APIKeys.Pepper; p != "" && (len(p) < 32 || len(p) > 64) {
		v.add("api_keys.pepper", "must be 32 to 64 printable bytes")
	}
	if strings.TrimSpace(c.APIKeys.PepperVersion) == "" {
		v.add("api_keys.pepper_version", "must not be empty")
	}
	v.positive("api_keys.usage_flush", c.APIKeys.UsageFlush)
	if c.APIKeys.PreviousPeppers != "" && c.APIKeys.Pepper == "" {
		v.add("api_keys.previous_peppers", "needs api_keys.pepper: with a pepper file, older peppers live in the file")
	}
	v.positive("api_keys.pepper_reload_interval", c.APIKeys.PepperReloadInterval)
	v.positive("signing.kek_reload_interval", c.Signing.KEKReloadInterval)
	if strings.TrimSpace(c.Audit.KeyName) == "" {
		v.add("audit.key_name", "must not be empty")
	}
	if c.Audit.CheckpointEvery < 1 {
		v.add("audit.checkpoint_every", fmt.Sprintf("must be at least 1, got %d", c.Audit.CheckpointEvery))
	}
	v.positive("audit.checkpoint_interval", c.Audit.CheckpointInterval)
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.problems}
}

type validator struct{ problems []FieldProblem }

func (v *validator) add(field, reason string) {
	v.problems = append(v.problems, FieldProblem{Field: field, Env: envOf(field), Reason: reason})
}

func (v *validator) positive(field string, d Duration) {
	if d <= 0 {
		v.add(field, fmt.Sprintf("must be a positive duration such as 5s or 1m, got %s", d))
	}
}

func (v *validator) oneOf(field, got string, accepted []string) {
	if !slices.Contains(accepted, got) {
		v.add(field, fmt.Sprintf("must be one of %s, got %q", strings.Join(accepted, ", "), got))
	}
}

// envOf returns the environment variable of a YAML path, or "".
func envOf(field string) string {
	for _, f := range Fields() {
		if f.Path == field {
			return f.Env
		}
	}
	return ""
}
