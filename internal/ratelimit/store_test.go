package ratelimit_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/ratelimit"
)

// storeCase is one Store implementation under test. exactTime is true for stores that use the
// caller's clock (memory); Redis uses its own, so its times are only bounded.
type storeCase struct {
	name      string
	exactTime bool
	open      func(t *testing.T) ratelimit.Store
}

func storeCases() []storeCase {
	return []storeCase{
		{"memory", true, func(*testing.T) ratelimit.Store { return ratelimit.NewMemoryStore(0) }},
		{"redis", false, func(t *testing.T) ratelimit.Store {
			c, prefix := redisNS(t)
			return ratelimit.NewRedisStore(c, prefix)
		}},
	}
}

var perMinute5 = ratelimit.Rule{Name: "r", Limit: 5, Period: time.Minute}

func TestStoreRefusesExactlyAfterTheLimit(t *testing.T) {
	for _, sc := range storeCases() {
		t.Run(sc.name, func(t *testing.T) {
			s, now := sc.open(t), newClock().Now()
			for i := range 5 {
				d, err := s.Take(t.Context(), "k", perMinute5, now)
				if err != nil {
					t.Fatal(err)
				}
				if !d.Allowed || d.Remaining != 4-i || d.Limit != 5 || d.Rule != "r" || d.Key != "k" {
					t.Fatalf("request %d: %+v, want allowed with %d remaining", i+1, d, 4-i)
				}
			}
			d, err := s.Take(t.Context(), "k", perMinute5, now)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed || d.Remaining != 0 {
				t.Fatalf("request 6: %+v, want refused", d)
			}
			// One request passes every 12 s; the refusal says when the next one does.
			if sc.exactTime && (d.RetryAfter != 12*time.Second || d.Reset != time.Minute) {
				t.Fatalf("request 6: RetryAfter %v, Reset %v, want 12s and 1m0s", d.RetryAfter, d.Reset)
			}
			if d.RetryAfter <= 0 || d.RetryAfter > 12*time.Second || d.Reset > time.Minute {
				t.Fatalf("request 6: RetryAfter %v, Reset %v, want within (0, 12s] and at most 1m0s", d.RetryAfter, d.Reset)
			}
			// Another key is independent.
			if d, err := s.Take(t.Context(), "other", perMinute5, now); err != nil || !d.Allowed {
				t.Fatalf("another key: %+v, %v", d, err)
			}
		})
	}
}

func TestStoreBurst(t *testing.T) {
	rule := ratelimit.Rule{Name: "b", Limit: 5, Period: time.Minute, Burst: 3}
	for _, sc := range storeCases() {
		t.Run(sc.name, func(t *testing.T) {
			s, now := sc.open(t), newClock().Now()
			allowed := 0
			for range 20 {
				d, err := s.Take(t.Context(), "k", rule, now)
				if err != nil {
					t.Fatal(err)
				}
				if d.Allowed {
					allowed++
				}
			}
			if allowed != 8 {
				t.Fatalf("%d of 20 back-to-back requests allowed, want limit+burst = 8", allowed)
			}
		})
	}
}

// TestMemoryStoreRefill: after the refusal, the next request passes exactly at RetryAfter, and
// only one.
func TestMemoryStoreRefill(t *testing.T) {
	s, c := ratelimit.NewMemoryStore(0), newClock()
	for range 5 {
		if d, _ := s.Take(t.Context(), "k", perMinute5, c.Now()); !d.Allowed {
			t.Fatal("refused within the limit")
		}
	}
	d, _ := s.Take(t.Context(), "k", perMinute5, c.Now())
	c.Advance(d.RetryAfter - time.Microsecond)
	if d, _ := s.Take(t.Context(), "k", perMinute5, c.Now()); d.Allowed {
		t.Fatal("allowed before RetryAfter")
	}
	c.Advance(time.Microsecond)
	if d, _ := s.Take(t.Context(), "k", perMinute5, c.Now()); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("at RetryAfter: %+v, want allowed with 0 remaining", d)
	}
	if d, _ := s.Take(t.Context(), "k", perMinute5, c.Now()); d.Allowed {
		t.Fatal("a second request passed at RetryAfter")
	}
	// A full period later the whole quota is back.
	c.Advance(time.Minute)
	for i := range 5 {
		if d, _ := s.Take(t.Context(), "k", perMinute5, c.Now()); !d.Allowed {
			t.Fatalf("request %d after a full period refused", i+1)
		}
	}
}

// TestStoreTakeAllIsAllOrNothing: when one cell refuses, the others are not charged.
func TestStoreTakeAllIsAllOrNothing(t *testing.T) {
	wide := ratelimit.Rule{Name: "wide", Limit: 100, Period: time.Minute}
	narrow := ratelimit.Rule{Name: "narrow", Limit: 1, Period: time.Minute}
	cells := []ratelimit.Cell{{Key: "wide", Rule: wide}, {Key: "narrow", Rule: narrow}}
	for _, sc := range storeCases() {
		t.Run(sc.name, func(t *testing.T) {
			s, now := sc.open(t), newClock().Now()
			ds, err := s.TakeAll(t.Context(), cells, now)
			if err != nil || !ds[0].Allowed || !ds[1].Allowed || ds[0].Remaining != 99 {
				t.Fatalf("first TakeAll = %+v, %v", ds, err)
			}
			for range 10 {
				ds, err := s.TakeAll(t.Context(), cells, now)
				if err != nil {
					t.Fatal(err)
				}
				if !ds[0].Allowed || ds[1].Allowed || ds[0].Rule != "wide" || ds[1].Rule != "narrow" {
					t.Fatalf("TakeAll = %+v, want wide conforming and narrow refused", ds)
				}
				if ds[0].Remaining != 99 {
					t.Fatalf("wide reports %d remaining while nothing was taken, want 99", ds[0].Remaining)
				}
			}
			d, err := s.Take(t.Context(), "wide", wide, now)
			if err != nil || !d.Allowed || d.Remaining != 98 {
				t.Fatalf("wide after ten refused TakeAlls: %+v, %v, want 98 remaining (charged once)", d, err)
			}
		})
	}
}

func TestStoreRefusesBadCells(t *testing.T) {
	for _, sc := range storeCases() {
		t.Run(sc.name, func(t *testing.T) {
			s, now := sc.open(t), newClock().Now()
			for name, cells := range map[string][]ratelimit.Cell{
				"no cells":      nil,
				"duplicate key": {{Key: "k", Rule: perMinute5}, {Key: "k", Rule: perMinute5}},
				"no period":     {{Key: "k", Rule: ratelimit.Rule{Name: "x", Limit: 5}}},
			} {
				if _, err := s.TakeAll(t.Context(), cells, now); err == nil {
					t.Errorf("%s: TakeAll succeeded", name)
				}
			}
			// A disabled rule always allows and keeps nothing.
			d, err := s.Take(t.Context(), "k", ratelimit.Rule{Name: "off"}, now)
			if err != nil || !d.Allowed {
				t.Fatalf("disabled rule: %+v, %v", d, err)
			}
		})
	}
}

// TestRedisStoreLayout: one integer string per key under the prefix, expiring at its TAT.
func TestRedisStoreLayout(t *testing.T) {
	c, prefix := redisNS(t)
	s := ratelimit.NewRedisStore(c, prefix)
	for range 3 {
		if _, err := s.Take(t.Context(), "ip:203.0.113.7", perMinute5, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	key := s.Key("ip:203.0.113.7")
	if key != prefix+"ip:203.0.113.7" {
		t.Fatalf("Key = %q", key)
	}
	v, err := c.Get(t.Context(), key).Result()
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	tat, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("stored TAT %q is not an integer: %v", v, err)
	}
	srv, err := c.Time(t.Context()).Result()
	if err != nil {
		t.Fatal(err)
	}
	// Three requests of 12 s each: the TAT is 36 s ahead of the server's clock, less the time
	// since, and the key expires with it.
	if ahead := time.Duration(tat-srv.UnixMicro()) * time.Microsecond; ahead <= 0 || ahead > 36*time.Second {
		t.Errorf("TAT is %v ahead of the server clock, want within (0, 36s]", ahead)
	}
	ttl, err := c.PTTL(t.Context(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 0 || ttl > 36*time.Second+time.Millisecond {
		t.Errorf("PTTL = %v, want within (0, 36s]", ttl)
	}
}

// TestMemoryStoreIsBounded: far more keys than the bound never hold more than it.
func TestMemoryStoreIsBounded(t *testing.T) {
	s, now := ratelimit.NewMemoryStore(128), newClock().Now()
	for i := range 10_000 {
		if _, err := s.Take(t.Context(), "k"+strconv.Itoa(i), perMinute5, now); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Len(); n > 128 {
		t.Fatalf("Len = %d after 10000 live keys, want at most 128", n)
	}
}
