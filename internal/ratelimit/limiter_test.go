package ratelimit_test

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/ratelimit"
	"github.com/nops-kernel/nops/internal/store/sqlite"
	"github.com/nops-kernel/nops/internal/testutil/faultproxy"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

var (
	ipA = netip.MustParseAddr("203.0.113.7")
	ipB = netip.MustParseAddr("198.51.100.9")
	ipC = netip.MustParseAddr("192.0.2.33")
)

const (
	tenantA = "ten_01jz8y3w6v6r3b5q8x9k2m4n7q"
	tenantB = "ten_01jz8y3w6v6r3b5q8x9k2m4n7r"
)

func rule(limit int) ratelimit.Rule {
	return ratelimit.Rule{Limit: limit, Period: time.Minute}
}

// allowedOf runs n checks and returns how many passed.
func allowedOf(t *testing.T, l *ratelimit.Limiter, req ratelimit.Request, n int) int {
	t.Helper()
	allowed := 0
	for range n {
		if l.Check(t.Context(), req).Allowed {
			allowed++
		}
	}
	return allowed
}

func TestLimiterRefusesExactlyAfterTheLimit(t *testing.T) {
	c := newClock()
	l := newLimiter(t, ratelimit.Config{PerIP: rule(5)}, ratelimit.Options{Now: c.Now})
	req := ratelimit.Request{IP: ipA}
	for i := range 5 {
		d := l.Check(t.Context(), req)
		if !d.Allowed || d.Remaining != 4-i || d.Rule != ratelimit.RulePerIP || d.Key != "ip:203.0.113.7" || d.Degraded {
			t.Fatalf("request %d: %+v", i+1, d)
		}
		if d.Refusal() != nil {
			t.Fatalf("request %d: Refusal = %v", i+1, d.Refusal())
		}
	}
	d := l.Check(t.Context(), req)
	if d.Allowed || d.Rule != ratelimit.RulePerIP || d.RetryAfter != 12*time.Second {
		t.Fatalf("request 6: %+v, want refused by per_ip with RetryAfter 12s", d)
	}
	e := errs.As(d.Refusal())
	if e == nil || e.Code != errs.RateLimited || e.RetryAfter != 12*time.Second {
		t.Fatalf("Refusal = %v, want rate_limited with RetryAfter 12s", d.Refusal())
	}
	if !l.Check(t.Context(), ratelimit.Request{IP: ipB}).Allowed {
		t.Fatal("another address was refused")
	}
}

// TestLimiterRulesByCaller checks which rules apply to whom.
func TestLimiterRulesByCaller(t *testing.T) {
	cfg := ratelimit.Config{
		PerIP:        rule(100),
		PerTenant:    rule(3),
		PerPrincipal: rule(2),
		Classes:      map[string]ratelimit.Rule{"auth": rule(4)},
	}
	t.Run("unauthenticated requests meet neither tenant nor principal rules", func(t *testing.T) {
		l := newLimiter(t, cfg, ratelimit.Options{Now: newClock().Now})
		if got := allowedOf(t, l, ratelimit.Request{IP: ipA, RouteClass: "read"}, 50); got != 50 {
			t.Fatalf("%d of 50 unauthenticated requests allowed, want all (only per_ip 100 applies)", got)
		}
	})
	t.Run("tenant refuses before principal", func(t *testing.T) {
		l := newLimiter(t, cfg, ratelimit.Options{Now: newClock().Now})
		allowedOf(t, l, ratelimit.Request{IP: ipA, Tenant: tenantA, Principal: "usr_1"}, 2)
		d := l.Check(t.Context(), ratelimit.Request{IP: ipA, Tenant: tenantA, Principal: "usr_1"})
		if d.Allowed || d.Rule != ratelimit.RulePerPrincipal || d.Key != "principal:usr_1" {
			t.Fatalf("third request of usr_1: %+v, want refused by per_principal", d)
		}
		// Another principal of the tenant takes the tenant's last request, then the tenant is out.
		if d := l.Check(t.Context(), ratelimit.Request{IP: ipB, Tenant: tenantA, Principal: "usr_2"}); !d.Allowed {
			t.Fatalf("usr_2: %+v", d)
		}
		d = l.Check(t.Context(), ratelimit.Request{IP: ipB, Tenant: tenantA, Principal: "usr_2"})
		if d.Allowed || d.Rule != ratelimit.RulePerTenant || d.Key != "tenant:"+tenantA {
			t.Fatalf("fourth request of the tenant: %+v, want refused by per_tenant", d)
		}
		if d := l.Check(t.Context(), ratelimit.Request{IP: ipB, Tenant: tenantB, Principal: "usr_3"}); !d.Allowed {
			t.Fatalf("another tenant: %+v", d)
		}
	})
	t.Run("a principal without tenant meets the principal rule only", func(t *testing.T) {
		l := newLimiter(t, cfg, ratelimit.Options{Now: newClock().Now})
		if got := allowedOf(t, l, ratelimit.Request{IP: ipA, Principal: "usr_admin"}, 10); got != 2 {
			t.Fatalf("%d of 10 requests of a SUPER_ADMIN allowed, want 2 (per_principal)", got)
		}
	})
	t.Run("class rules count per address before authentication, per principal after", func(t *testing.T) {
		l := newLimiter(t, cfg, ratelimit.Options{Now: newClock().Now})
		login := ratelimit.Request{IP: ipA, Route: "POST /v1/auth/token", RouteClass: "auth"}
		if got := allowedOf(t, l, login, 10); got != 4 {
			t.Fatalf("%d of 10 logins from one address allowed, want 4", got)
		}
		d := l.Check(t.Context(), login)
		if d.Rule != "class_auth" || d.Key != "class:auth:ip:203.0.113.7" {
			t.Fatalf("refusal %+v, want class_auth on class:auth:ip:203.0.113.7", d)
		}
		if got := allowedOf(t, l, ratelimit.Request{IP: ipB, RouteClass: "auth"}, 1); got != 1 {
			t.Fatal("another address is refused on the auth class")
		}
		authed := ratelimit.Request{IP: ipA, Tenant: tenantB, Principal: "usr_9", RouteClass: "auth"}
		if d := l.Check(t.Context(), authed); !d.Allowed {
			t.Fatalf("a principal from the exhausted address: %+v, want allowed (its own class bucket)", d)
		}
		// Unconfigured classes limit nothing.
		if got := allowedOf(t, l, ratelimit.Request{IP: ipC, RouteClass: "read"}, 20); got != 20 {
			t.Fatalf("%d of 20 requests of an unconfigured class allowed", got)
		}
	})
	t.Run("the allowed decision reports the rule with the least quota left", func(t *testing.T) {
		l := newLimiter(t, cfg, ratelimit.Options{Now: newClock().Now})
		d := l.Check(t.Context(), ratelimit.Request{IP: ipA, Tenant: tenantA, Principal: "usr_1", RouteClass: "auth"})
		if !d.Allowed || d.Rule != ratelimit.RulePerPrincipal || d.Remaining != 1 || d.Limit != 2 {
			t.Fatalf("decision %+v, want per_principal with 1 of 2 left", d)
		}
		if d := l.Check(t.Context(), ratelimit.Request{IP: ipC}); d.Rule != ratelimit.RulePerIP || d.Remaining != 99 {
			t.Fatalf("decision %+v, want per_ip with 99 left", d)
		}
	})
	t.Run("no rule at all", func(t *testing.T) {
		l := newLimiter(t, ratelimit.Config{}, ratelimit.Options{})
		d := l.Check(t.Context(), ratelimit.Request{IP: ipA})
		if !d.Allowed || d.Rule != "" {
			t.Fatalf("decision %+v, want allowed without a rule", d)
		}
	})
}

// TestLimiterTwoStages: CheckIP applies global and per-IP only, CheckPrincipal the rest.
func TestLimiterTwoStages(t *testing.T) {
	cfg := ratelimit.Config{Global: rule(1000), PerIP: rule(3), PerPrincipal: rule(2)}
	l := newLimiter(t, cfg, ratelimit.Options{Now: newClock().Now})
	req := ratelimit.Request{IP: ipA, Tenant: tenantA, Principal: "usr_1"}
	for i := range 3 {
		if d := l.CheckIP(t.Context(), req); !d.Allowed {
			t.Fatalf("CheckIP %d: %+v", i+1, d)
		}
	}
	if d := l.CheckIP(t.Context(), req); d.Allowed || d.Rule != ratelimit.RulePerIP {
		t.Fatalf("CheckIP 4: %+v, want refused by per_ip", d)
	}
	for i := range 2 {
		if d := l.CheckPrincipal(t.Context(), req); !d.Allowed {
			t.Fatalf("CheckPrincipal %d: %+v (the per-IP rule must not apply)", i+1, d)
		}
	}
	if d := l.CheckPrincipal(t.Context(), req); d.Allowed || d.Rule != ratelimit.RulePerPrincipal {
		t.Fatalf("CheckPrincipal 3: %+v, want refused by per_principal", d)
	}
}

// TestLimiterBlockedClientDoesNotDrainGlobal: refusals charge nothing, so one address hammering
// the API leaves the global ceiling to others.
func TestLimiterBlockedClientDoesNotDrainGlobal(t *testing.T) {
	l := newLimiter(t, ratelimit.Config{Global: rule(5), PerIP: rule(2)}, ratelimit.Options{Now: newClock().Now})
	if got := allowedOf(t, l, ratelimit.Request{IP: ipA}, 100); got != 2 {
		t.Fatalf("%d of 100 requests of A allowed, want 2", got)
	}
	if got := allowedOf(t, l, ratelimit.Request{IP: ipB}, 10); got != 2 {
		t.Fatalf("%d requests of B allowed, want 2", got)
	}
	if got := allowedOf(t, l, ratelimit.Request{IP: ipC}, 10); got != 1 {
		t.Fatalf("%d requests of C allowed, want the global ceiling's last 1", got)
	}
	if d := l.Check(t.Context(), ratelimit.Request{IP: netip.MustParseAddr("192.0.2.99")}); d.Allowed || d.Rule != ratelimit.RuleGlobal || d.Key != "global" {
		t.Fatalf("a fourth address: %+v, want refused by the global ceiling", d)
	}
}

func TestLimiterIPv6Prefix(t *testing.T) {
	for _, tt := range []struct {
		name   string
		prefix int
		a, b   string
		shared bool
	}{
		{"same /64 shares a bucket", 0, "2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true},
		{"other /64 does not", 0, "2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"/128 counts addresses apart", 128, "2001:db8:1:2::1", "2001:db8:1:2::2", false},
		{"/48", 48, "2001:db8:1:2::1", "2001:db8:1:ff::2", true},
		{"IPv4-mapped is IPv4", 0, "::ffff:203.0.113.7", "203.0.113.7", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := newLimiter(t, ratelimit.Config{PerIP: rule(2), IPv6Prefix: tt.prefix}, ratelimit.Options{Now: newClock().Now})
			allowedOf(t, l, ratelimit.Request{IP: netip.MustParseAddr(tt.a)}, 2)
			got := l.Check(t.Context(), ratelimit.Request{IP: netip.MustParseAddr(tt.b)}).Allowed
			if got == tt.shared {
				t.Fatalf("%s after %s exhausted its bucket: allowed %t, want %t", tt.b, tt.a, got, !tt.shared)
			}
		})
	}
	l := newLimiter(t, ratelimit.Config{PerIP: rule(1)}, ratelimit.Options{Now: newClock().Now})
	if d := l.Check(t.Context(), ratelimit.Request{}); d.Key != "ip:unknown" {
		t.Fatalf("no address: key %q, want ip:unknown", d.Key)
	}
	if d := l.Check(t.Context(), ratelimit.Request{IP: netip.MustParseAddr("2001:db8::1")}); d.Key != "ip:2001:db8::/64" {
		t.Fatalf("IPv6 key %q, want ip:2001:db8::/64", d.Key)
	}
}

// openOverrides returns an Overrides service over a fresh SQLite database.
func openOverrides(t *testing.T, c *clock) (*ratelimit.Overrides, *sqlite.Store) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "nops.db")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.MigrateUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	return ratelimit.NewOverrides(st, ratelimit.OverridesOptions{Now: c.Now}), st
}

func put(t *testing.T, o *ratelimit.Overrides, kind ratelimit.OverrideKind, target string, limit int) ratelimit.Override {
	t.Helper()
	got, err := o.Put(t.Context(), ratelimit.OverrideInput{Kind: kind, Target: target, Limit: limit, Period: time.Minute})
	if err != nil {
		t.Fatalf("Put %s %s: %v", kind, target, err)
	}
	return got
}

func TestLimiterOverrides(t *testing.T) {
	c := newClock()
	ov, _ := openOverrides(t, c)
	put(t, ov, ratelimit.KindCIDR, "10.1.0.0/16", 4)
	put(t, ov, ratelimit.KindCIDR, "10.0.0.0/8", 3)
	put(t, ov, ratelimit.KindCIDR, "192.0.2.0/24", 0)
	put(t, ov, ratelimit.KindTenant, tenantA, 2)
	put(t, ov, ratelimit.KindRoute, "GET /v1/agents", 1)
	if err := ov.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	cfg := ratelimit.Config{
		PerIP:     rule(6),
		PerTenant: rule(50),
		Classes:   map[string]ratelimit.Rule{"read": rule(100)},
		Overrides: []ratelimit.OverrideInput{
			{Kind: ratelimit.KindCIDR, Target: "10.0.0.0/8", Limit: 2, Period: time.Minute},    // the DB's /8 wins the tie
			{Kind: ratelimit.KindCIDR, Target: "10.1.2.0/24", Limit: 1, Period: time.Minute},   // longer than the DB's /16
			{Kind: ratelimit.KindCIDR, Target: "2001:db8::/32", Limit: 5, Period: time.Minute}, // no DB rival
			{Kind: ratelimit.KindTenant, Target: tenantA, Limit: 9, Period: time.Minute},       // the DB's wins
			{Kind: ratelimit.KindTenant, Target: tenantB, Limit: 3, Period: time.Minute},
		},
	}
	l := newLimiter(t, cfg, ratelimit.Options{Now: c.Now, Overrides: ov})
	for _, tt := range []struct {
		name string
		req  ratelimit.Request
		n    int
		want int
	}{
		{"no override: the per-IP rule", ratelimit.Request{IP: ipA}, 20, 6},
		{"CIDR: the DB's wins a tie with the config's", ratelimit.Request{IP: netip.MustParseAddr("10.9.9.9")}, 20, 3},
		{"CIDR: the longest prefix wins (DB /16)", ratelimit.Request{IP: netip.MustParseAddr("10.1.9.9")}, 20, 4},
		{"CIDR: the longest prefix wins (config /24)", ratelimit.Request{IP: netip.MustParseAddr("10.1.2.3")}, 20, 1},
		{"CIDR: IPv6 from the config", ratelimit.Request{IP: netip.MustParseAddr("2001:db8:5::1")}, 20, 5},
		{"CIDR: limit 0 is unlimited", ratelimit.Request{IP: netip.MustParseAddr("192.0.2.50")}, 500, 500},
		{"tenant: the DB's wins", ratelimit.Request{IP: netip.MustParseAddr("192.0.2.51"), Tenant: tenantA}, 20, 2},
		{"tenant: the config's", ratelimit.Request{IP: netip.MustParseAddr("192.0.2.52"), Tenant: tenantB}, 20, 3},
		{"route: replaces the class rule", ratelimit.Request{IP: netip.MustParseAddr("192.0.2.53"), Route: "GET /v1/agents", RouteClass: "read"}, 20, 1},
		{"route: another route keeps the class rule", ratelimit.Request{IP: netip.MustParseAddr("192.0.2.54"), Route: "GET /v1/tenants", RouteClass: "read"}, 200, 100},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := allowedOf(t, l, tt.req, tt.n); got != tt.want {
				t.Fatalf("%d of %d requests allowed, want %d", got, tt.n, tt.want)
			}
		})
	}

	// A deleted override stops applying once the cache is refreshed.
	list, err := ov.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list {
		if o.Kind == ratelimit.KindRoute {
			if _, err := ov.Delete(t.Context(), o.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := ov.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := allowedOf(t, l, ratelimit.Request{IP: netip.MustParseAddr("192.0.2.55"), Route: "GET /v1/agents", RouteClass: "read"}, 20); got != 20 {
		t.Fatalf("after deleting the route override: %d of 20 allowed, want the class rule's 20", got)
	}
}

func TestLimiterSharedByReplicasThroughRedis(t *testing.T) {
	url, ns := services.RedisNamespace(t)
	cfg := ratelimit.Config{PerIP: rule(10), RedisPrefix: ns + ":rl:"}
	one := newLimiter(t, cfg, ratelimit.Options{Redis: openRedis(t, url)})
	two := newLimiter(t, cfg, ratelimit.Options{Redis: openRedis(t, url)})
	allowed := 0
	for i := range 40 {
		l := one
		if i%2 == 1 {
			l = two
		}
		d := l.Check(t.Context(), ratelimit.Request{IP: ipA})
		if d.Degraded {
			t.Fatalf("request %d degraded", i)
		}
		if d.Allowed {
			allowed++
		}
	}
	if allowed != 10 {
		t.Fatalf("two replicas allowed %d of 40 requests, want the one shared limit of 10", allowed)
	}
}

// TestLimiterDegradesWhenRedisIsDown: with Redis cut off, requests are decided locally, marked
// degraded and counted, the limits still hold, and nothing errors; when Redis is back, the next
// retry uses it again.
func TestLimiterDegradesWhenRedisIsDown(t *testing.T) {
	url, ns := services.RedisNamespace(t)
	proxy := faultproxy.New(t, services.HostPort(t, url))
	client := openRedis(t, services.WithHost(t, url, proxy.Addr()))
	mp, reader := meter(t)
	c := newClock()
	l := newLimiter(t, ratelimit.Config{PerIP: rule(3), RedisPrefix: ns + ":rl:", RedisTimeout: 5 * time.Second},
		ratelimit.Options{Redis: client, Now: c.Now, MeterProvider: mp})

	if d := l.Check(t.Context(), ratelimit.Request{IP: ipA}); !d.Allowed || d.Degraded {
		t.Fatalf("with Redis up: %+v", d)
	}
	if got := gauge(t, reader, "nops_ratelimit_redis_up"); got != 1 {
		t.Fatalf("nops_ratelimit_redis_up = %d with Redis up", got)
	}

	proxy.Cut()
	var ds []ratelimit.Decision
	for range 5 {
		ds = append(ds, l.Check(t.Context(), ratelimit.Request{IP: ipB}))
	}
	for i, d := range ds {
		if !d.Degraded {
			t.Fatalf("request %d during the outage not degraded: %+v", i, d)
		}
		if want := i < 3; d.Allowed != want {
			t.Fatalf("request %d during the outage: allowed %t, want %t (local limit of 3)", i, d.Allowed, want)
		}
	}
	if got := sum(t, reader, "nops_ratelimit_degraded_total", nil); got != 5 {
		t.Errorf("nops_ratelimit_degraded_total = %d, want 5", got)
	}
	if got := gauge(t, reader, "nops_ratelimit_redis_up"); got != 0 {
		t.Errorf("nops_ratelimit_redis_up = %d during the outage, want 0", got)
	}

	proxy.Restore()
	// Until the retry time, requests stay local without trying Redis.
	if d := l.Check(t.Context(), ratelimit.Request{IP: ipC}); !d.Degraded {
		t.Fatalf("before the retry time: %+v, want degraded", d)
	}
	c.Advance(ratelimit.DefaultRedisRetry)
	if d := l.Check(t.Context(), ratelimit.Request{IP: ipC}); d.Degraded || !d.Allowed {
		t.Fatalf("after the retry time with Redis back: %+v, want shared again", d)
	}
	if got := gauge(t, reader, "nops_ratelimit_redis_up"); got != 1 {
		t.Errorf("nops_ratelimit_redis_up = %d after recovery, want 1", got)
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []struct {
		field string
		cfg   ratelimit.Config
	}{
		{"per_ip.limit", ratelimit.Config{PerIP: ratelimit.Rule{Limit: -1, Period: time.Minute}}},
		{"global.period", ratelimit.Config{Global: ratelimit.Rule{Limit: 5}}},
		{"per_tenant.period", ratelimit.Config{PerTenant: ratelimit.Rule{Limit: 5, Period: 500 * time.Millisecond}}},
		{"per_principal.period", ratelimit.Config{PerPrincipal: ratelimit.Rule{Limit: 5, Period: 25 * time.Hour}}},
		{"per_ip.burst", ratelimit.Config{PerIP: ratelimit.Rule{Limit: 5, Period: time.Minute, Burst: -1}}},
		{"per_ip.burst", ratelimit.Config{PerIP: ratelimit.Rule{Burst: 3}}},
		{"per_ip.limit", ratelimit.Config{PerIP: ratelimit.Rule{Limit: ratelimit.MaxLimit + 1, Period: time.Minute}}},
		{"classes", ratelimit.Config{Classes: map[string]ratelimit.Rule{"Bad Class": rule(1)}}},
		{"classes.auth.period", ratelimit.Config{Classes: map[string]ratelimit.Rule{"auth": {Limit: 1}}}},
		{"overrides[1].target", ratelimit.Config{Overrides: []ratelimit.OverrideInput{
			{Kind: ratelimit.KindCIDR, Target: "10.0.0.0/8", Limit: 1, Period: time.Minute},
			{Kind: ratelimit.KindCIDR, Target: "10.0.0.1/8", Limit: 1, Period: time.Minute}}}},
		{"name", ratelimit.Config{PerIP: ratelimit.Rule{Name: `"quoted"`, Limit: 1, Period: time.Minute}}},
		{"ipv6_prefix", ratelimit.Config{IPv6Prefix: 16}},
		{"redis_timeout", ratelimit.Config{RedisTimeout: -time.Second}},
	}
	for _, tt := range bad {
		err := tt.cfg.Validate()
		e := errs.As(err)
		if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != tt.field {
			t.Errorf("Validate(%+v) = %v, want an invalid error naming %s", tt.cfg, err, tt.field)
		}
		if _, err := ratelimit.New(tt.cfg, ratelimit.Options{}); err == nil {
			t.Errorf("New accepted %+v", tt.cfg)
		}
	}
	if err := ratelimit.DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig does not validate: %v", err)
	}
	if d := ratelimit.DefaultConfig().PerIP; d.Limit != 100 || d.Period != time.Minute {
		t.Fatalf("default per-IP rule %v, want 100/1m0s", d)
	}
}

// TestLimiterCheckDuration: every check is timed, by stage and by the store that decided: the
// memory store without Redis, Redis when it answers, memory again while it is down.
func TestLimiterCheckDuration(t *testing.T) {
	const name = "nops_ratelimit_check_duration_seconds"
	mp, reader := meter(t)
	l := newLimiter(t, ratelimit.Config{PerIP: rule(100), PerPrincipal: rule(100)}, ratelimit.Options{MeterProvider: mp})
	l.CheckIP(t.Context(), ratelimit.Request{IP: ipA})
	l.CheckIP(t.Context(), ratelimit.Request{IP: ipA})
	l.CheckPrincipal(t.Context(), ratelimit.Request{IP: ipA, Tenant: "ten_a", Principal: "key_a"})
	if got := histCount(t, reader, name, map[string]string{"stage": "ip", "store": "memory"}); got != 2 {
		t.Errorf("ip checks in memory timed %d times, want 2", got)
	}
	if got := histCount(t, reader, name, map[string]string{"stage": "principal", "store": "memory"}); got != 1 {
		t.Errorf("principal checks in memory timed %d times, want 1", got)
	}

	url, ns := services.RedisNamespace(t)
	proxy := faultproxy.New(t, services.HostPort(t, url))
	mp, reader = meter(t)
	l = newLimiter(t, ratelimit.Config{PerIP: rule(100), RedisPrefix: ns + ":rl:", RedisTimeout: 5 * time.Second},
		ratelimit.Options{Redis: openRedis(t, services.WithHost(t, url, proxy.Addr())), MeterProvider: mp})
	if d := l.CheckIP(t.Context(), ratelimit.Request{IP: ipA}); d.Degraded {
		t.Fatalf("with Redis up: %+v", d)
	}
	proxy.Cut()
	if d := l.CheckIP(t.Context(), ratelimit.Request{IP: ipA}); !d.Degraded {
		t.Fatalf("with Redis cut: %+v", d)
	}
	if got := histCount(t, reader, name, map[string]string{"stage": "ip", "store": "redis"}); got != 1 {
		t.Errorf("ip checks decided by Redis timed %d times, want 1", got)
	}
	if got := histCount(t, reader, name, map[string]string{"stage": "ip", "store": "memory"}); got != 1 {
		t.Errorf("ip checks decided locally while Redis was down timed %d times, want 1", got)
	}
}
