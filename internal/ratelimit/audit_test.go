package ratelimit_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/ratelimit"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// TestAggregatedAudit: a thousand blocks of one key in one window are one record; the next
// window's first block is the second, and reports the thousand. Metrics count every block.
func TestAggregatedAudit(t *testing.T) {
	c := newClock()
	rec := &recorder{}
	mp, reader := meter(t)
	l, err := ratelimit.New(ratelimit.Config{PerIP: rule(5)}, ratelimit.Options{Now: c.Now, Recorder: rec, MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(context.Background()) }()

	req := ratelimit.Request{IP: ipA}
	if got := allowedOf(t, l, req, 1005); got != 5 {
		t.Fatalf("%d of 1005 allowed, want 5", got)
	}
	if got := rec.waitCalls(t, 1); len(got) != 1 {
		t.Fatalf("recorder calls after the first window's blocks: %d, want 1", len(got))
	}
	c.Advance(time.Minute) // the next window; the bucket is whole again
	if got := allowedOf(t, l, req, 10); got != 5 {
		t.Fatalf("%d of 10 allowed in the next window, want 5", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []recorded{
		{"", "ip:203.0.113.7", "per_ip", "rate limit ip:203.0.113.7 per_ip 5/1m0s exceeded"},
		{"", "ip:203.0.113.7", "per_ip", "rate limit ip:203.0.113.7 per_ip 5/1m0s exceeded; 1000 blocked in the previous window"},
	}
	if diff := cmp.Diff(want, rec.snapshot(), cmp.AllowUnexported(recorded{})); diff != "" {
		t.Fatalf("recorder calls (-want +got):\n%s", diff)
	}
	if got := sum(t, reader, "nops_ratelimit_blocked_total", map[string]string{"tenant": "", "rule": "per_ip"}); got != 1005 {
		t.Errorf("nops_ratelimit_blocked_total{tenant=\"\",rule=per_ip} = %d, want 1005", got)
	}
	if got := sum(t, reader, "nops_ratelimit_requests_total", map[string]string{"decision": "blocked", "rule": "per_ip"}); got != 1005 {
		t.Errorf("nops_ratelimit_requests_total{decision=blocked,rule=per_ip} = %d, want 1005", got)
	}
	if got := sum(t, reader, "nops_ratelimit_requests_total", map[string]string{"decision": "allowed"}); got != 10 {
		t.Errorf("nops_ratelimit_requests_total{decision=allowed} = %d, want 10", got)
	}
}

// TestAuditTenantOfBlocks: blocks of a tenant's keys go to its tree and its metric label, blocks of
// address keys to the global tree.
func TestAuditTenantOfBlocks(t *testing.T) {
	rec := &recorder{}
	mp, reader := meter(t)
	l := newLimiter(t, ratelimit.Config{PerIP: rule(1), PerTenant: rule(1)}, ratelimit.Options{Now: newClock().Now, Recorder: rec, MeterProvider: mp})
	allowedOf(t, l, ratelimit.Request{IP: ipA, Tenant: tenantA, Principal: "usr_1"}, 2) // second: per_ip (first in order)
	allowedOf(t, l, ratelimit.Request{IP: ipB, Tenant: tenantA, Principal: "usr_1"}, 1) // per_tenant
	got := rec.waitCalls(t, 2)
	want := []recorded{
		{"", "ip:203.0.113.7", "per_ip", "rate limit ip:203.0.113.7 per_ip 1/1m0s exceeded"},
		{tenantA, "tenant:" + tenantA, "per_tenant", "rate limit tenant:" + tenantA + " per_tenant 1/1m0s exceeded"},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(recorded{})); diff != "" {
		t.Fatalf("recorder calls (-want +got):\n%s", diff)
	}
	if got := sum(t, reader, "nops_ratelimit_blocked_total", map[string]string{"tenant": tenantA}); got != 2 {
		t.Errorf("nops_ratelimit_blocked_total{tenant=%s} = %d, want 2 (both requests were the tenant's)", tenantA, got)
	}
}

// TestAggregatedAuditAcrossReplicas: two replicas sharing Redis record one window once.
func TestAggregatedAuditAcrossReplicas(t *testing.T) {
	url, ns := services.RedisNamespace(t)
	rec := &recorder{}
	c := newClock()
	cfg := ratelimit.Config{PerIP: rule(2), RedisPrefix: ns + ":rl:"}
	one := newLimiter(t, cfg, ratelimit.Options{Redis: openRedis(t, url), Recorder: rec, Now: c.Now})
	two := newLimiter(t, cfg, ratelimit.Options{Redis: openRedis(t, url), Recorder: rec, Now: c.Now})
	for range 50 {
		one.Check(t.Context(), ratelimit.Request{IP: ipA})
		two.Check(t.Context(), ratelimit.Request{IP: ipA})
	}
	if err := one.Close(); err != nil {
		t.Fatal(err)
	}
	if err := two.Close(); err != nil {
		t.Fatal(err)
	}
	if got := rec.snapshot(); len(got) != 1 {
		t.Fatalf("%d records of one key's window from two replicas, want 1: %+v", len(got), got)
	}
}

// TestAuditorDropsInsteadOfBlocking: a full queue or too many keys drop records and count them;
// the request path never waits.
func TestAuditorDropsInsteadOfBlocking(t *testing.T) {
	mp, reader := meter(t)
	rec := &recorder{}
	c := newClock()
	// Run is not started: nothing leaves the queue of one until Close drains it.
	l, err := ratelimit.New(ratelimit.Config{PerIP: rule(1), AuditQueue: 1, AuditMaxKeys: 3},
		ratelimit.Options{Now: c.Now, Recorder: rec, MeterProvider: mp})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		allowedOf(t, l, ratelimit.Request{IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})}, 2)
	}
	if got := sum(t, reader, "nops_ratelimit_audit_dropped_total", map[string]string{"reason": "queue_full"}); got != 2 {
		t.Errorf("dropped for a full queue = %d, want 2 (3 keys remembered, 1 queued)", got)
	}
	if got := sum(t, reader, "nops_ratelimit_audit_dropped_total", map[string]string{"reason": "too_many_keys"}); got != 2 {
		t.Errorf("dropped for too many keys = %d, want 2", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := rec.snapshot(); len(got) != 1 {
		t.Fatalf("records after Close = %d, want the 1 queued", len(got))
	}
}

// TestAuditorForgetsOldWindows: keys whose windows are over are swept when the map is full.
func TestAuditorForgetsOldWindows(t *testing.T) {
	rec := &recorder{}
	a, err := ratelimit.NewBlockAuditor(rec, ratelimit.AuditorOptions{MaxKeys: 10, QueueSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	c := newClock()
	r := ratelimit.Rule{Name: "per_ip", Limit: 1, Period: time.Minute}
	for i := range 10 {
		a.Block(t.Context(), "", fmt.Sprintf("ip:%d", i), r, c.Now())
	}
	c.Advance(2 * time.Minute)
	for i := 10; i < 20; i++ {
		a.Block(t.Context(), "", fmt.Sprintf("ip:%d", i), r, c.Now())
	}
	if n := a.Keys(); n != 10 {
		t.Fatalf("Keys = %d, want 10 (the old windows swept)", n)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got := rec.snapshot(); len(got) != 20 {
		t.Fatalf("records = %d, want 20", len(got))
	}
}
