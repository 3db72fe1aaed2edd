package httpapi

import (
	"strings"
	"testing"
)

func TestPolicies(t *testing.T) {
	w := newManagedWorld(t, nil)
	admin, operator := w.keys["ADMIN"], w.keys["OPERATOR"]
	// Deny policies that match nothing this test sends, so that the policies it creates never
	// stand in its way once enforced.
	spec := map[string]any{"name": "no-deletes-of-critical-agents", "description": "Change management only.",
		"effect": "deny", "expression": `action == "agents.delete" && resource.criticality == "critical"`}

	// Refusals first.
	w.must(403, "GET", "/v1/policies", w.keys["VIEWER"], nil)
	w.must(403, "POST", "/v1/policies", operator, spec)
	for _, tc := range []struct {
		change map[string]any
		field  string
		reason string
	}{
		{map[string]any{"expression": "action ==== 1"}, "body.expression", "Syntax error"},
		{map[string]any{"expression": `action + 1`}, "body.expression", "no matching overload"},
		{map[string]any{"expression": `principal.nmae == "x"`}, "body.expression", "undefined field"},
		{map[string]any{"expression": `"not a bool"`}, "body.expression", "bool"},
		{map[string]any{"effect": "maybe"}, "body.effect", ""},
		{map[string]any{"name": " padded "}, "body.name", ""},
		{map[string]any{"name": ""}, "body.name", ""},
	} {
		body := map[string]any{}
		for k, v := range spec {
			body[k] = v
		}
		for k, v := range tc.change {
			body[k] = v
		}
		_, bad := w.must(400, "POST", "/v1/policies", admin, body)
		wantFields(t, bad, tc.field)
		reason := bad["errors"].([]any)[0].(map[string]any)["reason"].(string)
		if !strings.Contains(reason, tc.reason) {
			t.Errorf("%v: reason %q does not say %q", tc.change, reason, tc.reason)
		}
	}
	w.must(404, "POST", "/v1/policies?tenant="+w.b, admin, spec)
	w.must(404, "POST", "/v1/policies?tenant=ten_01jz8y3w6v6r3b5q8x9k2m4n7a", w.admin, spec)

	// Create in tenant a (its ADMIN), read, list.
	hdr, p := w.must(201, "POST", "/v1/policies", admin, spec)
	id, etag := p["id"].(string), hdr.Get("ETag")
	if etag == "" || p["tenant"] != w.a || p["enabled"] != true || p["version"] != float64(1) || p["effect"] != "deny" {
		t.Fatalf("created %v (ETag %q)", p, etag)
	}
	w.must(409, "POST", "/v1/policies", admin, spec)
	hdr, _ = w.must(200, "GET", "/v1/policies/"+id, operator, nil)
	if hdr.Get("ETag") != etag {
		t.Fatalf("get ETag %q, created %q", hdr.Get("ETag"), etag)
	}
	_, list := w.must(200, "GET", "/v1/policies?limit=500", operator, nil)
	if ids := itemIDs(list, "id"); len(ids) != 1 || ids[0] != id {
		t.Fatalf("tenant a's policies %v", ids)
	}

	// Another tenant sees none of it.
	other := w.otherAdmin
	w.must(404, "GET", "/v1/policies/"+id, other, nil)
	w.must(404, "PUT", "/v1/policies/"+id, other, spec, "If-Match", "*")
	w.must(404, "DELETE", "/v1/policies/"+id, other, nil)
	w.must(404, "GET", "/v1/policies?tenant="+w.a, other, nil)
	w.must(404, "GET", "/v1/policies/"+id+"?tenant="+w.a, other, nil)
	_, list = w.must(200, "GET", "/v1/policies", other, nil)
	if len(list["items"].([]any)) != 0 {
		t.Fatalf("tenant b lists %v", list)
	}

	// The SUPER_ADMIN: global policies without a tenant, a tenant's with one.
	_, g := w.must(201, "POST", "/v1/policies", w.admin, map[string]any{"name": "global", "effect": "deny", "expression": `request.ip == "203.0.113.250"`, "enabled": false})
	if _, ok := g["tenant"]; ok || g["enabled"] != false {
		t.Fatalf("global policy %v", g)
	}
	_, list = w.must(200, "GET", "/v1/policies", w.admin, nil)
	if ids := itemIDs(list, "id"); len(ids) != 1 || ids[0] != g["id"] {
		t.Fatalf("global policies %v", ids)
	}
	_, list = w.must(200, "GET", "/v1/policies?tenant="+w.a, w.admin, nil)
	if ids := itemIDs(list, "id"); len(ids) != 1 || ids[0] != id {
		t.Fatalf("tenant a's policies, by the SUPER_ADMIN %v", ids)
	}
	w.must(200, "GET", "/v1/policies/"+id+"?tenant="+w.a, w.admin, nil)
	w.must(404, "GET", "/v1/policies/"+id+"?tenant="+w.b, w.admin, nil)
	w.must(404, "GET", "/v1/policies/"+g["id"].(string), admin, nil) // a global policy is not the tenant's

	// Update: If-Match required, a stale one is refused.
	spec["description"] = "Through change management only."
	_, bad := w.must(400, "PUT", "/v1/policies/"+id, admin, spec)
	// The binding of the generated code reports the missing header (today as "path.If-Match":
	// paramError does not tell a missing header apart).
	if names := fieldNames(bad); len(names) != 1 || !strings.HasSuffix(names[0], ".If-Match") {
		t.Fatalf("PUT without If-Match: %v", bad)
	}
	hdr, p = w.must(200, "PUT", "/v1/policies/"+id, admin, spec, "If-Match", etag)
	etag2 := hdr.Get("ETag")
	if p["version"] != float64(2) || p["description"] != spec["description"] || etag2 == etag {
		t.Fatalf("updated %v (ETag %q)", p, etag2)
	}
	w.must(412, "PUT", "/v1/policies/"+id, admin, spec, "If-Match", etag)
	w.must(412, "DELETE", "/v1/policies/"+id, admin, nil, "If-Match", etag)
	w.must(204, "DELETE", "/v1/policies/"+id, admin, nil, "If-Match", etag2)
	w.must(404, "GET", "/v1/policies/"+id, admin, nil)
	w.must(204, "DELETE", "/v1/policies/"+g["id"].(string), w.admin, nil)

	if got := w.auditOf(admin, "policy.create"); len(got) != 1 {
		t.Fatalf("tenant a's policy.create records %q", got)
	}
	if got := w.auditOf(admin, "policy.update"); len(got) != 1 {
		t.Fatalf("tenant a's policy.update records %q", got)
	}
	if got := w.auditOf(w.admin, "policy.delete"); len(got) != 1 {
		t.Fatalf("global policy.delete records %q", got)
	}
}
