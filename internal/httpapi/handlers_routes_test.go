package httpapi

import (
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/routing"
	"github.com/nops-kernel/nops/internal/store/sqlite"
)

// newRoutesWorld is the managed world with a routing service whose cache holds reads for an hour,
// so the test sees whether a write invalidates it.
func newRoutesWorld(t *testing.T) (*managedWorld, *routing.Cache) {
	t.Helper()
	var cache *routing.Cache
	w := newManagedWorld(t, func(t *testing.T, c *control.Control, st *sqlite.Store) {
		cache = routing.NewCache(st, time.Hour, routing.CacheOptions{})
		svc, err := routing.NewService(st, routing.ServiceOptions{Cache: cache})
		if err != nil {
			t.Fatal(err)
		}
		c.Routes = svc
	})
	return w, cache
}

func TestRoutes(t *testing.T) {
	w, cache := newRoutesWorld(t)
	admin, operator, viewer := w.keys["ADMIN"], w.keys["OPERATOR"], w.keys["VIEWER"]
	const path = "/v1/routes/text.summarize"
	spec := map[string]any{
		"targets": []map[string]any{
			{"version": "v1.4", "weight": 90},
			{"version": "1.5.0", "weight": 10},
			{"version": "1", "weight": 1, "priority": 1},
		},
		"sticky_header": "x-session-id", "timeout_ms": 5000, "retryable": true,
		"hedge": map[string]any{"delay_ms": 200, "max_extra": 1},
	}

	// Refusals first: roles, validation naming the field, bad names.
	w.must(403, "PUT", path, viewer, spec)
	w.must(403, "DELETE", path, viewer, nil)
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"targets": []map[string]any{{"version": "1", "weight": 1}, {"version": "2", "weight": 20000}}}, "body.targets[1].weight"},
		{map[string]any{"targets": []map[string]any{{"version": "1", "agent_id": "agt_01jz0000000000000000000001", "weight": 1}}}, "body.targets[0]"},
		{map[string]any{"targets": []map[string]any{{"version": "latest", "weight": 1}}}, "body.targets[0].version"},
		{map[string]any{"targets": []map[string]any{{"agent_id": "agt_nope", "weight": 1}}}, "body.targets[0].agent_id"},
		{map[string]any{"targets": []map[string]any{{"version": "1", "weight": 1, "priority": 16}}}, "body.targets[0].priority"},
		{map[string]any{"targets": []map[string]any{{"version": "1", "weight": 1}, {"version": "v1", "weight": 2}}}, "body.targets[1]"},
		{map[string]any{"targets": []map[string]any{{"version": "1", "weight": 1}}, "sticky_header": "Authorization"}, "body.sticky_header"},
		{map[string]any{"targets": []map[string]any{{"version": "1", "weight": 1}}, "timeout_ms": 100, "hedge": map[string]any{"delay_ms": 100, "max_extra": 1}}, "body.hedge.delay_ms"},
	} {
		_, bad := w.must(400, "PUT", path, admin, tc.body)
		wantFields(t, bad, tc.field)
	}
	_, bad := w.must(400, "PUT", "/v1/routes/Not.A.Capability", admin, spec)
	wantFields(t, bad, "path.capability")
	if got := w.auditOf(admin, "route.create"); len(got) != 0 {
		t.Fatalf("refused writes were audited: %q", got)
	}

	// Create (201), read, list; the ETag guards later writes.
	w.must(404, "GET", path, operator, nil)
	hdr, r := w.must(201, "PUT", path, admin, spec, "If-None-Match", "*")
	etag := hdr.Get("ETag")
	if etag == "" || r["tenant"] != w.a || r["capability"] != "text.summarize" || r["revision"] != float64(1) ||
		r["sticky_header"] != "X-Session-Id" || r["retryable"] != true || r["timeout_ms"] != float64(5000) {
		t.Fatalf("created %v (ETag %q)", r, etag)
	}
	if v := r["targets"].([]any)[0].(map[string]any)["version"]; v != "1.4" {
		t.Fatalf("the version target is not canonical: %v", v)
	}
	if got, err := cache.Get(t.Context(), w.a, "text.summarize"); err != nil || got == nil {
		t.Fatalf("this replica's cache does not see the new route: %v, %v", got, err)
	}
	hdr, _ = w.must(200, "GET", path, viewer, nil)
	if hdr.Get("ETag") != etag {
		t.Fatalf("GET ETag %q, PUT's %q", hdr.Get("ETag"), etag)
	}
	w.must(412, "PUT", path, admin, spec, "If-None-Match", "*")
	// The same spec again: 200, nothing changes.
	hdr, r = w.must(200, "PUT", path, admin, spec, "If-Match", etag)
	if hdr.Get("ETag") != etag || r["revision"] != float64(1) {
		t.Fatalf("an unchanged PUT changed the route: %v (ETag %q)", r, hdr.Get("ETag"))
	}
	// A replacement (an operator may: routing is agent management).
	spec["retryable"] = false
	hdr, r = w.must(200, "PUT", path, operator, spec, "If-Match", etag)
	etag2 := hdr.Get("ETag")
	if etag2 == etag || r["revision"] != float64(2) || r["retryable"] != false {
		t.Fatalf("replaced %v (ETag %q)", r, etag2)
	}
	w.must(412, "PUT", path, admin, spec, "If-Match", etag)
	w.must(412, "PUT", "/v1/routes/text.other", admin, spec, "If-Match", "*")

	w.must(201, "PUT", "/v1/routes/a.first", admin, map[string]any{"targets": []map[string]any{{"agent_id": "agt_01jz0000000000000000000001", "weight": 0}}})
	_, list := w.must(200, "GET", "/v1/routes?limit=1", viewer, nil)
	if ids := itemIDs(list, "capability"); len(ids) != 1 || ids[0] != "a.first" || list["next_cursor"] != "a.first" {
		t.Fatalf("first page %v", list)
	}
	_, list = w.must(200, "GET", "/v1/routes?limit=500&cursor=a.first", viewer, nil)
	if ids := itemIDs(list, "capability"); len(ids) != 1 || ids[0] != "text.summarize" || list["next_cursor"] != nil {
		t.Fatalf("second page %v", list)
	}
	_, bad = w.must(400, "GET", "/v1/routes?cursor=NOPE", viewer, nil)
	wantFields(t, bad, "query.cursor")

	// Another tenant sees none of it, and cannot change it.
	other := w.otherAdmin
	w.must(404, "GET", path, other, nil)
	w.must(404, "GET", path+"?tenant="+w.a, other, nil)
	w.must(404, "DELETE", path, other, nil)
	w.must(412, "PUT", path, other, spec, "If-Match", etag2) // its own tenant has no such route
	w.must(404, "GET", "/v1/routes?tenant="+w.a, other, nil)
	_, list = w.must(200, "GET", "/v1/routes", other, nil)
	if len(list["items"].([]any)) != 0 {
		t.Fatalf("tenant b lists %v", list)
	}

	// The SUPER_ADMIN names the tenant.
	_, bad = w.must(400, "GET", "/v1/routes", w.admin, nil)
	wantFields(t, bad, "query.tenant")
	hdr, _ = w.must(200, "GET", path+"?tenant="+w.a, w.admin, nil)
	if hdr.Get("ETag") != etag2 {
		t.Fatalf("the SUPER_ADMIN reads ETag %q, want %q", hdr.Get("ETag"), etag2)
	}
	w.must(404, "GET", path+"?tenant="+w.b, w.admin, nil)

	// Delete: a stale If-Match is refused; then it is gone, from this replica's cache too.
	w.must(412, "DELETE", path, admin, nil, "If-Match", etag)
	w.must(204, "DELETE", path, admin, nil, "If-Match", etag2)
	w.must(404, "GET", path, admin, nil)
	w.must(404, "DELETE", path, admin, nil)
	if got, err := cache.Get(t.Context(), w.a, "text.summarize"); err != nil || got != nil {
		t.Fatalf("this replica's cache still holds the deleted route: %v, %v", got, err)
	}

	if got := w.auditOf(admin, "route.create"); len(got) != 2 {
		t.Fatalf("route.create records %q", got)
	}
	if got := w.auditOf(admin, "route.update"); len(got) != 2 || got[0] == got[1] {
		t.Fatalf("route.update records %q (one unchanged, one change)", got)
	}
	if got := w.auditOf(admin, "route.delete"); len(got) != 1 {
		t.Fatalf("route.delete records %q", got)
	}
}

func TestRoutesUnavailable(t *testing.T) {
	w := newManagedWorld(t, nil)
	w.must(503, "GET", "/v1/routes", w.keys["ADMIN"], nil)
	w.must(503, "PUT", "/v1/routes/c", w.keys["ADMIN"], map[string]any{"targets": []map[string]any{{"version": "1", "weight": 1}}})
}
