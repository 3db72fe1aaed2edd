package httpapi

import (
	"net/http"
	"slices"
	"testing"

	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/perimeter"
	"github.com/nops-kernel/nops/internal/policy"
	"github.com/nops-kernel/nops/internal/ratelimit"
	"github.com/nops-kernel/nops/internal/store/sqlite"
)

// managedWorld is the events world (two tenants, keys of each role in the first) with the
// perimeter's managed state enabled: rate-limit overrides, ABAC policies and perimeter settings
// over the world's SQLite store.
type managedWorld struct {
	*eventsWorld
	ctl *control.Control
}

// newManagedWorld builds a managedWorld; more, when set, enables more (request keys).
func newManagedWorld(t *testing.T, more func(t *testing.T, c *control.Control, st *sqlite.Store)) *managedWorld {
	t.Helper()
	var ctl *control.Control
	w := newEventsWorld(t, func(d *Deps) {
		st, ok := d.AuditLog.(*sqlite.Store)
		if !ok {
			t.Fatalf("the flow's audit log is a %T, not the SQLite store", d.AuditLog)
		}
		c := d.Control
		ctl = c
		c.RateLimits = ratelimit.NewOverrides(st, ratelimit.OverridesOptions{})
		engine, err := policy.NewEngine(st, policy.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := engine.Refresh(t.Context()); err != nil {
			t.Fatal(err)
		}
		if c.Policies, err = policy.NewService(st, engine, policy.ServiceOptions{}); err != nil {
			t.Fatal(err)
		}
		if c.Perimeter, err = perimeter.NewService(st, perimeter.Options{}); err != nil {
			t.Fatal(err)
		}
		if more != nil {
			more(t, c, st)
		}
	})
	return &managedWorld{eventsWorld: w, ctl: ctl}
}

// wantFields fails unless the problem names exactly fields.
func wantFields(t *testing.T, problem map[string]any, fields ...string) {
	t.Helper()
	if got := fieldNames(problem); !slices.Equal(got, fields) {
		t.Fatalf("problem names fields %v, want %v: %v", got, fields, problem)
	}
}

func TestPerimeterSettings(t *testing.T) {
	w := newManagedWorld(t, nil)
	admin := w.keys["ADMIN"]
	path := "/v1/tenants/" + w.a + "/perimeter"

	// Refusals first: another tenant's settings do not exist for a tenant's ADMIN; roles below
	// ADMIN have no perimeter scope; an unknown tenant is not found.
	w.must(404, "GET", "/v1/tenants/"+w.b+"/perimeter", admin, nil)
	w.must(404, "PUT", "/v1/tenants/"+w.b+"/perimeter", admin, map[string]any{"require_signatures": false, "gateway_origins": []string{}})
	w.must(403, "GET", path, w.keys["OPERATOR"], nil)
	w.must(403, "PUT", path, w.keys["VIEWER"], map[string]any{"require_signatures": false, "gateway_origins": []string{}})
	w.must(404, "GET", "/v1/tenants/ten_01jz8y3w6v6r3b5q8x9k2m4n7a/perimeter", w.admin, nil)
	w.must(404, "GET", "/v1/tenants/nope/perimeter", w.admin, nil)
	_, bad := w.must(400, "PUT", path, admin, map[string]any{"require_signatures": false, "gateway_origins": []string{"10.0.0.0/8", "10.0.0.1/8", "nope"}})
	wantFields(t, bad, "body.gateway_origins[1]", "body.gateway_origins[2]")
	_, bad = w.must(400, "PUT", path, admin, map[string]any{"gateway_origins": []string{}})
	wantFields(t, bad, "body.require_signatures")

	// The defaults, then a conditional first write.
	hdr, def := w.must(200, "GET", path, admin, nil)
	if def["version"] != float64(0) || def["require_signatures"] != false || len(def["gateway_origins"].([]any)) != 0 || def["updated_at"] != nil {
		t.Fatalf("defaults %v", def)
	}
	etag0 := hdr.Get("ETag")
	hdr, got := w.must(200, "PUT", path, admin, map[string]any{"require_signatures": false,
		"gateway_origins": []string{"2001:db8::/32", "203.0.113.0/24", "192.0.2.7", "203.0.113.0/24"}}, "If-Match", etag0)
	if got["version"] != float64(1) || got["tenant"] != w.a || got["updated_at"] == nil ||
		!slices.Equal(strs(got["gateway_origins"]), []string{"192.0.2.7/32", "203.0.113.0/24", "2001:db8::/32"}) {
		t.Fatalf("after PUT %v", got)
	}
	etag1 := hdr.Get("ETag")
	if etag1 == "" || etag1 == etag0 {
		t.Fatalf("ETag %q after a change from %q", etag1, etag0)
	}
	// A stale ETag: 412, nothing changed.
	w.must(412, "PUT", path, admin, map[string]any{"require_signatures": false, "gateway_origins": []string{}}, "If-Match", etag0)
	hdr, got = w.must(200, "GET", path, w.admin, nil) // the SUPER_ADMIN reads any tenant's
	if hdr.Get("ETag") != etag1 || got["version"] != float64(1) {
		t.Fatalf("after a refused PUT: %v (ETag %q)", got, hdr.Get("ETag"))
	}
	// The same settings again change nothing; the new ones are in force on this replica at once.
	_, got = w.must(200, "PUT", path, admin, map[string]any{"require_signatures": false, "gateway_origins": []string{"192.0.2.7/32", "203.0.113.0/24", "2001:db8::/32"}})
	if got["version"] != float64(1) {
		t.Fatalf("an unchanged PUT gave %v", got)
	}
	if s := w.ctl.Perimeter.Lookup(w.a); s.Version != 1 || len(s.GatewayOrigins) != 3 {
		t.Fatalf("Lookup after the PUT = %+v", s)
	}
	_, got = w.must(200, "PUT", path, w.admin, map[string]any{"require_signatures": true, "gateway_origins": []string{}}, "If-Match", "*")
	if got["version"] != float64(2) || got["require_signatures"] != true || len(got["gateway_origins"].([]any)) != 0 {
		t.Fatalf("the SUPER_ADMIN's PUT gave %v", got)
	}
	if reasons := w.auditOf(w.admin, "tenant.perimeter.update"); len(reasons) != 0 {
		t.Fatalf("the global tree records perimeter changes: %v", reasons)
	}
	_, page := w.must(200, "GET", "/v1/audit?limit=500&action=tenant.perimeter.update&tenant="+w.a, w.admin, nil)
	var reasons []string
	for _, it := range page["items"].([]any) {
		rec := it.(map[string]any)
		if rec["resource"] != "tenants/"+w.a+"/perimeter" {
			t.Fatalf("audit record %v", rec)
		}
		reasons = append(reasons, rec["decision"].(map[string]any)["reason"].(string))
	}
	want := []string{"allowed: require_signatures=false, 3 gateway origins, version 1", "allowed: no change", "allowed: require_signatures=true, 0 gateway origins, version 2"}
	if !slices.Equal(reasons, want) {
		t.Fatalf("audit reasons %q, want %q", reasons, want)
	}
}

func TestManagedStateWithoutServices(t *testing.T) {
	w := newEventsWorld(t, nil)
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/tenants/" + w.a + "/perimeter"},
		{"GET", "/v1/policies"},
		{"GET", "/v1/rate-limits"},
		{"GET", "/v1/request-keys?tenant=" + w.a},
	} {
		if code, _, out := w.call(c.method, c.path, w.admin, nil); code != http.StatusServiceUnavailable {
			t.Errorf("%s %s without the service: %d %v, want 503", c.method, c.path, code, out)
		}
	}
}
