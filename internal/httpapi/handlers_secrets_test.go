package httpapi

import (
	"context"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/control"
)

type fixedSecrets struct{ st control.SecretsStatus }

func (f fixedSecrets) Status(context.Context) (control.SecretsStatus, error) { return f.st, nil }

// GET /v1/admin/secrets/status is SUPER_ADMIN's, returns versions and counts without key
// material, and answers 503 on a kernel without it.
func TestSecretsStatusEndpoint(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := control.SecretsStatus{
		CheckedAt: created.Add(time.Hour),
		Pepper: control.PepperStatus{Source: "file", ReloadError: "pepper file broken", PepperStatus: apikey.PepperStatus{Current: "v2",
			Versions: []apikey.PepperVersionStatus{
				{PepperUse: apikey.PepperUse{Version: "v1", Keys: 2, PreviousSecrets: 1, Inactive: 4}, State: apikey.PepperOlder, CreatedAt: created},
				{PepperUse: apikey.PepperUse{Version: "v2", Keys: 7}, State: apikey.PepperCurrent},
			}}},
		KEK: control.KEKStatus{Current: "k1", Versions: []control.KEKVersionStatus{
			{Version: "k1", State: "current", RequestKeySecrets: 3, CAKeys: 2, SigningKeys: 4},
			{Version: "k0", State: "unknown", RequestKeySecrets: 1},
		}},
	}
	w := newEventsWorld(t, func(d *Deps) { d.Secrets = fixedSecrets{st} })
	for _, role := range []string{"ADMIN", "OPERATOR", "VIEWER"} {
		w.must(403, "GET", "/v1/admin/secrets/status", w.keys[role], nil)
	}
	_, got := w.must(200, "GET", "/v1/admin/secrets/status", w.admin, nil)
	pepper := got["api_key_pepper"].(map[string]any)
	v1 := pepper["versions"].([]any)[0].(map[string]any)
	if pepper["current"] != "v2" || pepper["source"] != "file" || pepper["reload_error"] != "pepper file broken" ||
		v1["state"] != "older" || v1["in_use"] != float64(3) || v1["inactive"] != float64(4) || v1["created_at"] != "2026-01-02T03:04:05Z" {
		t.Fatalf("pepper %v", pepper)
	}
	if _, has := pepper["versions"].([]any)[1].(map[string]any)["created_at"]; has {
		t.Fatal("a pepper without a creation time has created_at")
	}
	kek := got["kek"].(map[string]any)
	k1 := kek["versions"].([]any)[0].(map[string]any)
	k0 := kek["versions"].([]any)[1].(map[string]any)
	if kek["current"] != "k1" || k0["state"] != "unknown" || k0["in_use"] != float64(1) || k0["signing_keys"] != float64(0) ||
		k1["signing_keys"] != float64(4) || k1["in_use"] != float64(9) {
		t.Fatalf("kek %v", kek)
	}
	if _, has := kek["reload_error"]; has {
		t.Fatal("reload_error present without an error")
	}

	off := newEventsWorld(t, nil)
	off.must(503, "GET", "/v1/admin/secrets/status", off.admin, nil)
}
