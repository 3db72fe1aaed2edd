package httpapi

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/apikey"
)

func keyIDOf(t *testing.T, cred string) string {
	t.Helper()
	id, _, err := apikey.Parse(strings.TrimPrefix(cred, "key:"))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// POST /v1/admin/api-keys/{key_id}/force-rotate sets a deadline the key's holder is told on every
// response and that refuses the key once passed; a rotation clears it. GET
// /v1/admin/api-keys/expiring lists the keys due, within the caller's reach only.
func TestForceRotateAndExpiringKeys(t *testing.T) {
	w := newEventsWorld(t, nil)
	viewer, operator := keyIDOf(t, w.keys["VIEWER"]), keyIDOf(t, w.keys["OPERATOR"])
	force := func(id string) string { return "/v1/admin/api-keys/" + id + "/force-rotate" }

	// Refused: roles without apikeys:write, another tenant's admin, bad deadlines.
	w.must(403, "POST", force(viewer), w.keys["VIEWER"], map[string]any{"deadline": "1h"})
	w.must(404, "POST", force(viewer), w.otherAdmin, map[string]any{"deadline": "1h"})
	for _, bad := range []string{"soon", "-1h", "2161h"} {
		_, p := w.must(400, "POST", force(viewer), w.keys["ADMIN"], map[string]any{"deadline": bad})
		if !slices.Contains(fieldNames(p), "body.deadline") {
			t.Fatalf("deadline %q: problem %v does not name body.deadline", bad, p)
		}
	}
	h, _ := w.must(200, "GET", "/v1/agents", w.keys["VIEWER"], nil)
	if got := h.Get(HeaderAPIKeyRotateBy); got != "" {
		t.Fatalf("%s = %q before any deadline", HeaderAPIKeyRotateBy, got)
	}

	before := time.Now()
	_, k := w.must(200, "POST", force(viewer), w.keys["ADMIN"], map[string]any{"deadline": "1h"})
	by, err := time.Parse(time.RFC3339, k["rotate_by"].(string))
	if err != nil || by.Before(before.Add(time.Hour-time.Second)) || by.After(time.Now().Add(time.Hour)) {
		t.Fatalf("rotate_by %v (%v), want about an hour from now", k["rotate_by"], err)
	}
	// A later deadline does not postpone it.
	_, k = w.must(200, "POST", force(viewer), w.keys["ADMIN"], map[string]any{"deadline": "48h"})
	if again, err := time.Parse(time.RFC3339, k["rotate_by"].(string)); err != nil || !again.Equal(by) {
		t.Fatalf("rotate_by moved from %v to %v (%v)", by, k["rotate_by"], err)
	}
	h, _ = w.must(200, "GET", "/v1/agents", w.keys["VIEWER"], nil)
	if got := h.Get(HeaderAPIKeyRotateBy); got != by.UTC().Format(time.RFC3339) {
		t.Fatalf("%s = %q, want %s", HeaderAPIKeyRotateBy, got, by.UTC().Format(time.RFC3339))
	}
	if got := w.auditOf(w.keys["ADMIN"], "apikey.force_rotate"); len(got) != 2 || !strings.HasPrefix(got[0], "rotate by ") {
		t.Fatalf("audit of apikey.force_rotate: %v", got)
	}

	// Listed as due for the tenant's admin and for SUPER_ADMIN (every tenant), not for another
	// tenant's admin; outside a window shorter than the deadline.
	for _, c := range []struct {
		name, cred, query string
		want              bool
	}{
		{"tenant admin", w.keys["ADMIN"], "", true},
		{"super admin, every tenant", w.admin, "", true},
		{"super admin, the tenant", w.admin, "?tenant=" + w.a, true},
		{"super admin, another tenant", w.admin, "?tenant=" + w.b, false},
		{"other tenant's admin", w.otherAdmin, "", false},
		{"short window", w.keys["ADMIN"], "?within=30m", false},
	} {
		_, page := w.must(200, "GET", "/v1/admin/api-keys/expiring"+c.query, c.cred, nil)
		if got := slices.Contains(itemIDs(page, "id"), viewer); got != c.want {
			t.Errorf("%s: viewer key listed %v, want %v (%v)", c.name, got, c.want, page)
		}
	}
	_, p := w.must(400, "GET", "/v1/admin/api-keys/expiring?within=forever", w.keys["ADMIN"], nil)
	if !slices.Contains(fieldNames(p), "query.within") {
		t.Fatalf("problem %v does not name query.within", p)
	}
	w.must(404, "GET", "/v1/admin/api-keys/expiring?tenant="+w.b, w.keys["ADMIN"], nil)

	// 0s: refused at once, still rotatable by an administrator; the new secret works and has no
	// deadline.
	w.must(200, "POST", force(operator), w.keys["ADMIN"], map[string]any{"deadline": "0s"})
	w.must(401, "GET", "/v1/agents", w.keys["OPERATOR"], nil)
	_, rotated := w.must(200, "POST", "/v1/api-keys/"+operator+"/rotate", w.keys["ADMIN"], map[string]any{"grace_period": "0s"})
	if _, has := rotated["rotate_by"]; has {
		t.Fatalf("rotated key still has rotate_by: %v", rotated)
	}
	h, _ = w.must(200, "GET", "/v1/agents", "key:"+rotated["secret"].(string), nil)
	if got := h.Get(HeaderAPIKeyRotateBy); got != "" {
		t.Fatalf("%s = %q after the rotation", HeaderAPIKeyRotateBy, got)
	}
	w.must(401, "GET", "/v1/agents", w.keys["OPERATOR"], nil)

	// A revoked key cannot be given a deadline.
	w.must(204, "DELETE", "/v1/api-keys/"+viewer, w.keys["ADMIN"], nil)
	w.must(409, "POST", force(viewer), w.keys["ADMIN"], map[string]any{"deadline": "1h"})
}
