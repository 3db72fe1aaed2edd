package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// flagPropagation is the documented bound (docs/flags.md) on how long a flag change made through
// one replica takes to be evaluated by every other replica while the bus works.
const flagPropagation = 2 * time.Second

type flagDoc struct {
	Key            string   `json:"key"`
	Type           string   `json:"type"`
	Variants       []string `json:"variants"`
	DefaultVariant string   `json:"default_variant"`
	Enabled        bool     `json:"enabled"`
	Revision       int64    `json:"revision"`
}

type flagEval struct {
	Key      string `json:"key"`
	Tenant   string `json:"tenant"`
	Variant  string `json:"variant"`
	Reason   string `json:"reason"`
	Rule     *int   `json:"rule"`
	Revision int64  `json:"revision"`
}

// Flags are global objects managed by SUPER_ADMIN: tenant roles may evaluate them for their own
// tenant only, and neither read nor write them. Changes are audited in the global tree.
func TestFlagsAPI(t *testing.T) {
	f := newFixture(t)
	k, super := f.k, f.admin
	other := newTenant(t, k, super, "globex")
	_, otherViewer := newKey(t, k, super, other, "VIEWER", nil)

	spec := map[string]any{
		"type": "variant", "variants": []string{"classic", "fast"}, "default_variant": "classic", "enabled": true,
		"rules": []map[string]any{{"expression": `tenant.name == "acme"`, "variant": "fast"}},
	}
	// RBAC negatives: no tenant role writes or reads flags.
	for _, role := range []string{"VIEWER", "OPERATOR", "ADMIN"} {
		resp, body := k.Do(t, "PUT", "/v1/flags/checkout", spec, f.keys[role])
		mustStatus(t, resp, body, http.StatusForbidden)
		resp, body = k.Do(t, "GET", "/v1/flags", nil, f.keys[role])
		mustStatus(t, resp, body, http.StatusForbidden)
	}
	resp, body := k.Do(t, "DELETE", "/v1/flags/checkout", nil, f.keys["VIEWER"])
	mustStatus(t, resp, body, http.StatusForbidden)

	// Invalid CEL: 400 naming the rule's field; nothing created.
	bad := map[string]any{"type": "boolean", "default_variant": "false",
		"rules": []map[string]any{{"expression": "true", "variant": "true"}, {"expression": "tenant.name ==", "variant": "true"}}}
	resp, body = k.Do(t, "PUT", "/v1/flags/checkout", bad, super)
	mustStatus(t, resp, body, http.StatusBadRequest)
	if p := decodeProblem(t, resp, body); len(p.Errors) != 1 || p.Errors[0].Name != "body.rules[1].expression" {
		t.Fatalf("invalid CEL: %+v", p)
	}
	bad["rules"] = []map[string]any{{"expression": `tenant.name`, "variant": "true"}}
	resp, body = k.Do(t, "PUT", "/v1/flags/checkout", bad, super)
	mustStatus(t, resp, body, http.StatusBadRequest)
	if p := decodeProblem(t, resp, body); len(p.Errors) != 1 || p.Errors[0].Name != "body.rules[0].expression" {
		t.Fatalf("non-bool CEL: %+v", p)
	}
	resp, body = k.Do(t, "GET", "/v1/flags/checkout", nil, super)
	mustStatus(t, resp, body, http.StatusNotFound)

	// Create, read, evaluate per tenant.
	resp, body = k.Do(t, "PUT", "/v1/flags/checkout", spec, super, "If-None-Match: *")
	mustStatus(t, resp, body, http.StatusCreated)
	created := decode[flagDoc](t, body)
	etag := resp.Header.Get("ETag")
	if created.Revision != 1 || created.Type != "variant" || etag == "" {
		t.Fatalf("created %+v etag %q", created, etag)
	}
	resp, body = k.Do(t, "GET", "/v1/flags", nil, super)
	mustStatus(t, resp, body, http.StatusOK)
	if page := decode[struct{ Items []flagDoc }](t, body); len(page.Items) != 1 || page.Items[0].Key != "checkout" {
		t.Fatalf("list %s", body)
	}
	resp, body = k.Do(t, "GET", "/v1/flags/checkout/evaluation", nil, f.keys["VIEWER"])
	mustStatus(t, resp, body, http.StatusOK)
	if ev := decode[flagEval](t, body); ev.Tenant != f.tenant || ev.Variant != "fast" || ev.Reason != "TARGETING_MATCH" || ev.Rule == nil || *ev.Rule != 0 {
		t.Fatalf("evaluation for acme: %+v", ev)
	}
	resp, body = k.Do(t, "GET", "/v1/flags/checkout/evaluation", nil, otherViewer)
	mustStatus(t, resp, body, http.StatusOK)
	if ev := decode[flagEval](t, body); ev.Tenant != other || ev.Variant != "classic" || ev.Reason != "DEFAULT" {
		t.Fatalf("evaluation for globex: %+v", ev)
	}
	// A tenant's principal cannot evaluate for another tenant.
	resp, body = k.Do(t, "GET", "/v1/flags/checkout/evaluation?tenant="+other, nil, f.keys["VIEWER"])
	mustStatus(t, resp, body, http.StatusNotFound)
	resp, body = k.Do(t, "GET", "/v1/flags/checkout/evaluation?tenant="+other, nil, super)
	mustStatus(t, resp, body, http.StatusOK)

	// The OpenFeature client of the kernel answers the same.
	client := k.Flags()
	ctx := context.Background()
	d, err := client.StringValueDetails(ctx, "checkout", "none", openfeature.NewEvaluationContext(f.tenant, nil))
	if err != nil || d.Value != "fast" || d.Reason != openfeature.TargetingMatchReason {
		t.Fatalf("OpenFeature for acme: %+v, %v", d, err)
	}
	if _, err := client.BooleanValueDetails(ctx, "checkout", true, openfeature.NewEvaluationContext(f.tenant, nil)); err == nil {
		t.Fatal("a variant flag evaluated as a boolean: no TYPE_MISMATCH")
	}

	// Evaluations are counted by flag, variant and reason.
	resp, body = k.Do(t, "GET", "/metrics", nil)
	mustStatus(t, resp, body, http.StatusOK)
	for _, series := range []string{
		`nops_flag_evaluations_total{flag="checkout",`, `reason="TARGETING_MATCH"`, `variant="fast"`, `reason="DEFAULT"`, `variant="classic"`,
	} {
		if !strings.Contains(string(body), series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}

	// Update: stale ETag refused; disable.
	spec["enabled"] = false
	resp, body = k.Do(t, "PUT", "/v1/flags/checkout", spec, super, "If-Match: "+etag)
	mustStatus(t, resp, body, http.StatusOK)
	resp, body = k.Do(t, "PUT", "/v1/flags/checkout", spec, super, "If-Match: "+etag)
	mustStatus(t, resp, body, http.StatusPreconditionFailed)
	resp, body = k.Do(t, "GET", "/v1/flags/checkout/evaluation", nil, f.keys["VIEWER"])
	mustStatus(t, resp, body, http.StatusOK)
	if ev := decode[flagEval](t, body); ev.Variant != "classic" || ev.Reason != "DISABLED" || ev.Revision != 2 {
		t.Fatalf("evaluation of the disabled flag: %+v", ev)
	}

	// Delete, then 404 everywhere.
	resp, body = k.Do(t, "DELETE", "/v1/flags/checkout", nil, super)
	mustStatus(t, resp, body, http.StatusNoContent)
	resp, body = k.Do(t, "GET", "/v1/flags/checkout/evaluation", nil, f.keys["VIEWER"])
	mustStatus(t, resp, body, http.StatusNotFound)
	resp, body = k.Do(t, "DELETE", "/v1/flags/checkout", nil, super)
	mustStatus(t, resp, body, http.StatusNotFound)

	// Audit: the three changes in the global tree, by the admin.
	for _, action := range []string{"flag.create", "flag.update", "flag.delete"} {
		resp, body = k.Do(t, "GET", "/v1/audit?action="+action, nil, super)
		mustStatus(t, resp, body, http.StatusOK)
		page := decode[auditPage](t, body)
		if len(page.Items) != 1 || page.Items[0].Resource != "flags/checkout" || !page.Items[0].Decision.Allowed || page.Items[0].Actor.Principal == "" {
			t.Errorf("audit of %s: %s", action, body)
		}
	}
	// Tenant trees hold none of them.
	resp, body = k.Do(t, "GET", "/v1/audit?action=flag.create", nil, f.keys["ADMIN"])
	mustStatus(t, resp, body, http.StatusOK)
	if page := decode[auditPage](t, body); len(page.Items) != 0 {
		t.Errorf("a tenant's trail holds flag changes: %s", body)
	}
}

// A flag change made through one replica is evaluated by another within the documented time.
// The replicas share PostgreSQL and the bus (NATS, or Redis Streams); their periodic reload is set
// to a minute, so only the change event on the bus can bring the change in time.
func TestFlagChangeReachesTwoReplicas(t *testing.T) {
	buses := []struct {
		name string
		bus  func(t *testing.T) func(*config.Config)
	}{
		{"nats", func(t *testing.T) func(*config.Config) {
			url, ns := services.NATSNamespace(t)
			return func(c *config.Config) { c.Bus.NATSURL, c.Bus.Namespace = url, ns }
		}},
		{"redis", func(t *testing.T) func(*config.Config) {
			url, ns := services.RedisNamespace(t)
			return func(c *config.Config) { c.Bus.Kind, c.Redis.URL, c.Bus.Namespace = "redis", url, ns }
		}},
	}
	for _, bc := range buses {
		t.Run(bc.name, func(t *testing.T) { testFlagChangeReachesTwoReplicas(t, bc.bus(t)) })
	}
}

func testFlagChangeReachesTwoReplicas(t *testing.T, onBus func(*config.Config)) {
	dbURL := services.Postgres(t)
	secrets := t.TempDir()
	shared := func(c *config.Config) {
		c.Database.URL = dbURL
		onBus(c)
		c.APIKeys.PepperFile, c.Signing.KEKFile = filepath.Join(secrets, "pepper.json"), filepath.Join(secrets, "kek.json")
		c.Flags.RefreshInterval = config.Duration(time.Minute)
	}
	f := newFixture(t, shared)
	b := kerneltest.Start(t, shared)
	viewer := f.keys["VIEWER"]
	evalOn := func(k *kerneltest.Kernel) (flagEval, int) {
		resp, body := k.Do(t, "GET", "/v1/flags/rollout/evaluation", nil, viewer)
		if resp.StatusCode != http.StatusOK {
			return flagEval{}, resp.StatusCode
		}
		return decode[flagEval](t, body), resp.StatusCode
	}
	if _, status := evalOn(b); status != http.StatusNotFound {
		t.Fatalf("B before the flag exists: %d", status)
	}
	spec := map[string]any{"type": "boolean", "default_variant": "false", "enabled": true}
	steps := []struct {
		name  string
		apply func()
		want  func(flagEval, int) bool
	}{
		{"create", func() {
			resp, body := f.k.Do(t, "PUT", "/v1/flags/rollout", spec, f.admin)
			mustStatus(t, resp, body, http.StatusCreated)
		}, func(e flagEval, s int) bool { return s == http.StatusOK && e.Variant == "false" && e.Revision == 1 }},
		{"update", func() {
			spec["rules"] = []map[string]any{{"expression": `tenant.id == "` + f.tenant + `"`, "variant": "true"}}
			resp, body := f.k.Do(t, "PUT", "/v1/flags/rollout", spec, f.admin)
			mustStatus(t, resp, body, http.StatusOK)
		}, func(e flagEval, s int) bool {
			return s == http.StatusOK && e.Variant == "true" && e.Reason == "TARGETING_MATCH"
		}},
		{"delete", func() {
			resp, body := f.k.Do(t, "DELETE", "/v1/flags/rollout", nil, f.admin)
			mustStatus(t, resp, body, http.StatusNoContent)
		}, func(_ flagEval, s int) bool { return s == http.StatusNotFound }},
	}
	for _, st := range steps {
		st.apply()
		// The writing replica evaluates its own change at once.
		if e, s := evalOn(f.k); !st.want(e, s) {
			t.Fatalf("%s: replica A right after its own write: %+v (%d)", st.name, e, s)
		}
		took := kerneltest.WaitFor(t, flagPropagation, st.name+" reaching replica B", func() bool { return st.want(evalOn(b)) })
		t.Logf("%s reached replica B in %s", st.name, took)
	}
}
