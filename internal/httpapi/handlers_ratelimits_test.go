package httpapi

import (
	"testing"
)

func TestRateLimitOverrides(t *testing.T) {
	w := newManagedWorld(t, nil)
	cidr := map[string]any{"kind": "cidr", "target": "10.20.0.0/16", "limit": 1000, "period": "1m", "burst": 100}

	// Refusals first: overrides are the operator's; malformed input names its field; unknown
	// IDs are not found.
	for _, role := range []string{"ADMIN", "OPERATOR", "VIEWER"} {
		w.must(403, "GET", "/v1/rate-limits", w.keys[role], nil)
		w.must(403, "POST", "/v1/rate-limits", w.keys[role], cidr)
	}
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"kind": "cidr", "target": "10.20.0.1/16", "limit": 1, "period": "1m"}, "body.target"},
		{map[string]any{"kind": "tenant", "target": "acme", "limit": 1, "period": "1m"}, "body.target"},
		{map[string]any{"kind": "route", "target": "get /v1/agents", "limit": 1, "period": "1m"}, "body.target"},
		{map[string]any{"kind": "cidr", "target": "10.0.0.0/8", "limit": 1, "period": "soon"}, "body.period"},
		{map[string]any{"kind": "cidr", "target": "10.0.0.0/8", "limit": 1, "period": "100ms"}, "body.period"},
		{map[string]any{"kind": "cidr", "target": "10.0.0.0/8", "limit": 1, "period": "48h"}, "body.period"},
		{map[string]any{"kind": "ip", "target": "10.0.0.0/8", "limit": 1, "period": "1m"}, "body.kind"},
		{map[string]any{"kind": "cidr", "target": "10.0.0.0/8", "limit": -1, "period": "1m"}, "body.limit"},
	} {
		_, bad := w.must(400, "POST", "/v1/rate-limits", w.admin, tc.body)
		wantFields(t, bad, tc.field)
	}
	w.must(404, "GET", "/v1/rate-limits/rlo_01jz8y3w6v6r3b5q8x9k2m4n7a", w.admin, nil)
	w.must(404, "GET", "/v1/rate-limits/nope", w.admin, nil)
	w.must(404, "DELETE", "/v1/rate-limits/rlo_01jz8y3w6v6r3b5q8x9k2m4n7a", w.admin, nil)
	if reasons := w.auditOf(w.admin, "ratelimit.override.put"); len(reasons) != 0 {
		t.Fatalf("refused requests were recorded: %v", reasons)
	}

	// Create (201), replace (200, same id), read, list, delete.
	_, o := w.must(201, "POST", "/v1/rate-limits", w.admin, cidr)
	id := o["id"].(string)
	if o["target"] != "10.20.0.0/16" || o["period"] != "1m0s" || o["limit"] != float64(1000) || o["burst"] != float64(100) {
		t.Fatalf("created %v", o)
	}
	cidr["limit"], cidr["burst"] = 0, 0
	_, o = w.must(200, "POST", "/v1/rate-limits", w.admin, cidr)
	if o["id"] != id || o["limit"] != float64(0) {
		t.Fatalf("replaced %v, want id %s and limit 0", o, id)
	}
	_, tenantOverride := w.must(201, "POST", "/v1/rate-limits", w.admin, map[string]any{"kind": "tenant", "target": w.a, "limit": 50, "period": "1s"})
	_, route := w.must(201, "POST", "/v1/rate-limits", w.admin, map[string]any{"kind": "route", "target": "POST /v1/agents", "limit": 5, "period": "1m"})
	_, got := w.must(200, "GET", "/v1/rate-limits/"+id, w.admin, nil)
	if got["limit"] != float64(0) || got["kind"] != "cidr" {
		t.Fatalf("get %v", got)
	}
	_, list := w.must(200, "GET", "/v1/rate-limits", w.admin, nil)
	if ids := itemIDs(list, "id"); len(ids) != 3 || ids[0] != id || ids[1] != route["id"] || ids[2] != tenantOverride["id"] {
		t.Fatalf("list %v, want kind then target order", ids)
	}
	// The limiter's table follows at once on this replica.
	if cached := w.ctl.RateLimits.Cached(); len(cached) != 3 {
		t.Fatalf("limiter cache %+v", cached)
	}
	w.must(204, "DELETE", "/v1/rate-limits/"+id, w.admin, nil)
	w.must(404, "GET", "/v1/rate-limits/"+id, w.admin, nil)
	w.must(404, "DELETE", "/v1/rate-limits/"+id, w.admin, nil)
	if reasons := w.auditOf(w.admin, "ratelimit.override.put"); len(reasons) != 4 || reasons[0] != "allowed: cidr 10.20.0.0/16 set to 1000/1m0s+100" {
		t.Fatalf("audit of puts %q", reasons)
	}
	if reasons := w.auditOf(w.admin, "ratelimit.override.delete"); len(reasons) != 1 {
		t.Fatalf("audit of deletes %q", reasons)
	}
}
