package flags

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/errs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memStore is a hand-written in-memory Store with the adapters' compare-and-set semantics (the
// adapters themselves pass internal/store/storetest's flags suite).
type memStore struct {
	mu      sync.Mutex
	flags   map[string]Flag
	listErr error
}

func newMemStore() *memStore { return &memStore{flags: map[string]Flag{}} }

func (m *memStore) Flag(_ context.Context, key string) (Flag, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.flags[key]
	if !ok {
		return Flag{}, errs.New(errs.NotFound, "flag not found")
	}
	return f, nil
}

func (m *memStore) ListFlags(_ context.Context, after string, limit int) ([]Flag, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.listErr != nil {
		return nil, m.listErr
	}
	var keys []string
	for k := range m.flags {
		if k > after {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var out []Flag
	for _, k := range keys[:min(limit, len(keys))] {
		out = append(out, m.flags[k])
	}
	return out, nil
}

func (m *memStore) CreateFlag(_ context.Context, f Flag) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.flags[f.Key]; ok {
		return errs.Wrap(errs.Conflict, ErrRevisionConflict, "exists")
	}
	m.flags[f.Key] = f
	return nil
}

func (m *memStore) UpdateFlag(_ context.Context, f Flag, prev int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.flags[f.Key]
	switch {
	case !ok:
		return errs.New(errs.NotFound, "gone")
	case cur.Revision != prev:
		return errs.Wrap(errs.Conflict, ErrRevisionConflict, "changed")
	}
	m.flags[f.Key] = f
	return nil
}

func (m *memStore) DeleteFlag(_ context.Context, key string, rev int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.flags[key]
	switch {
	case !ok:
		return errs.New(errs.NotFound, "gone")
	case cur.Revision != rev:
		return errs.Wrap(errs.Conflict, ErrRevisionConflict, "changed")
	}
	delete(m.flags, key)
	return nil
}

func fieldNames(t *testing.T, err error) []string {
	t.Helper()
	var e *errs.Error
	if !errs.Is(err, errs.Invalid) {
		t.Fatalf("error %v, want invalid", err)
	}
	e = err.(*errs.Error)
	var names []string
	for _, f := range e.Fields {
		names = append(names, f.Name)
	}
	return names
}

func TestNormalize(t *testing.T) {
	ok := Spec{Type: TypeBoolean, DefaultVariant: "false", Rules: []Rule{{Expression: `tenant.name == "acme"`, Variant: "true"}}}
	got, err := ok.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Variants, []string{"false", "true"}) {
		t.Errorf("boolean variants = %v", got.Variants)
	}
	tests := []struct {
		name   string
		spec   Spec
		fields []string
	}{
		{"unknown type", Spec{Type: "number", DefaultVariant: "x"}, []string{"body.type"}},
		{"boolean default not a variant", Spec{Type: TypeBoolean, DefaultVariant: "yes"}, []string{"body.default_variant"}},
		{"boolean with other variants", Spec{Type: TypeBoolean, Variants: []string{"on", "off"}, DefaultVariant: "false"}, []string{"body.variants"}},
		{"variant without variants", Spec{Type: TypeVariant, DefaultVariant: "a"}, []string{"body.variants", "body.default_variant"}},
		{"duplicate and malformed variants", Spec{Type: TypeVariant, Variants: []string{"a", "a", "b c"}, DefaultVariant: "a"}, []string{"body.variants[1]", "body.variants[2]"}},
		{"invalid CEL", Spec{Type: TypeBoolean, DefaultVariant: "false", Rules: []Rule{{Expression: "true", Variant: "true"}, {Expression: "tenant.name ==", Variant: "true"}}}, []string{"body.rules[1].expression"}},
		{"unknown variable", Spec{Type: TypeBoolean, DefaultVariant: "false", Rules: []Rule{{Expression: "user.id == 'x'", Variant: "true"}}}, []string{"body.rules[0].expression"}},
		{"not a bool", Spec{Type: TypeBoolean, DefaultVariant: "false", Rules: []Rule{{Expression: "tenant.name", Variant: "true"}}}, []string{"body.rules[0].expression"}},
		{"empty expression", Spec{Type: TypeBoolean, DefaultVariant: "false", Rules: []Rule{{Expression: " ", Variant: "true"}}}, []string{"body.rules[0].expression"}},
		{"rule variant unknown", Spec{Type: TypeVariant, Variants: []string{"a"}, DefaultVariant: "a", Rules: []Rule{{Expression: "true", Variant: "b"}}}, []string{"body.rules[0].variant"}},
		{"description too long", Spec{Type: TypeBoolean, DefaultVariant: "true", Description: strings.Repeat("d", MaxDescriptionLen+1)}, []string{"body.description"}},
		{"too many rules", Spec{Type: TypeBoolean, DefaultVariant: "true", Rules: make([]Rule, MaxRules+1)}, []string{"body.rules"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.spec.Normalize()
			if d := cmp.Diff(tt.fields, fieldNames(t, err)); d != "" {
				t.Errorf("fields (-want +got):\n%s", d)
			}
		})
	}
}

func TestValidKey(t *testing.T) {
	for k, want := range map[string]bool{"a": true, "checkout.fast-path_2": true, "": false, "A": false, "1a": false, "a b": false, strings.Repeat("a", MaxKeyLen+1): false} {
		if got := ValidKey(k); got != want {
			t.Errorf("ValidKey(%q) = %v", k, got)
		}
	}
}

func newService(t *testing.T, st Store) *Service {
	t.Helper()
	s, err := NewService(st, ServiceOptions{Now: func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 6789, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestServicePutDelete(t *testing.T) {
	st := newMemStore()
	s, ctx := newService(t, st), t.Context()
	spec := Spec{Type: TypeBoolean, DefaultVariant: "false", Enabled: true}
	if _, err := s.Put(ctx, "Bad Key", Preconditions{}, spec); !slices.Equal(fieldNames(t, err), []string{"path.key"}) {
		t.Fatalf("bad key: %v", err)
	}
	ch, err := s.Put(ctx, "f", Preconditions{IfNoneMatch: "*"}, spec)
	if err != nil || !ch.Created || !ch.Changed || ch.After.Revision != 1 || ch.After.CreatedAt.Nanosecond()%1000 != 0 {
		t.Fatalf("create = %+v, %v", ch, err)
	}
	if _, err := s.Put(ctx, "f", Preconditions{IfNoneMatch: "*"}, spec); errs.CodeOf(err) != errs.PreconditionFailed {
		t.Fatalf("If-None-Match on an existing flag: %v", err)
	}
	if ch, err = s.Put(ctx, "f", Preconditions{}, spec); err != nil || ch.Changed {
		t.Fatalf("same spec = %+v, %v", ch, err)
	}
	tag := ch.After.ETag()
	spec.Enabled = false
	if ch, err = s.Put(ctx, "f", Preconditions{IfMatch: tag}, spec); err != nil || ch.After.Revision != 2 || ch.Before == nil {
		t.Fatalf("update = %+v, %v", ch, err)
	}
	if _, err := s.Put(ctx, "f", Preconditions{IfMatch: tag}, spec); errs.CodeOf(err) != errs.PreconditionFailed {
		t.Fatalf("stale If-Match: %v", err)
	}
	if _, err := s.Delete(ctx, "f", tag); errs.CodeOf(err) != errs.PreconditionFailed {
		t.Fatalf("delete with a stale If-Match: %v", err)
	}
	if f, err := s.Delete(ctx, "f", ""); err != nil || f.Revision != 2 {
		t.Fatalf("delete = %+v, %v", f, err)
	}
	if _, err := s.Get(ctx, "f"); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := s.Delete(ctx, "f", ""); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("delete again: %v", err)
	}
}

func TestServiceList(t *testing.T) {
	st := newMemStore()
	s, ctx := newService(t, st), t.Context()
	for _, k := range []string{"c", "a", "b"} {
		if _, err := s.Put(ctx, k, Preconditions{}, Spec{Type: TypeBoolean, DefaultVariant: "true"}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := s.List(ctx, ListInput{Limit: 2})
	if err != nil || len(p.Flags) != 2 || p.NextCursor == "" {
		t.Fatalf("page 1 = %+v, %v", p, err)
	}
	p, err = s.List(ctx, ListInput{Cursor: p.NextCursor, Limit: 2})
	if err != nil || len(p.Flags) != 1 || p.Flags[0].Key != "c" || p.NextCursor != "" {
		t.Fatalf("page 2 = %+v, %v", p, err)
	}
	if _, err := s.List(ctx, ListInput{Cursor: "NOT A KEY"}); !slices.Equal(fieldNames(t, err), []string{"query.cursor"}) {
		t.Fatalf("bad cursor: %v", err)
	}
}

// newEvaluator returns an evaluator over st with a manual metric reader.
func newEvaluator(t *testing.T, st Store) (*Evaluator, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	e, err := NewEvaluator(st, EvaluatorOptions{Meter: mp.Meter("test")})
	if err != nil {
		t.Fatal(err)
	}
	return e, reader
}

func put(t *testing.T, s *Service, key string, spec Spec) {
	t.Helper()
	if _, err := s.Put(t.Context(), key, Preconditions{}, spec); err != nil {
		t.Fatal(err)
	}
}

var (
	acme   = Subject{Tenant: Tenant{ID: "ten_01jq7x3k9m2v8w4y6z0a1b2c3d", Name: "acme", Status: "active"}}
	globex = Subject{Tenant: Tenant{ID: "ten_01jq7x3k9m2v8w4y6z0a1b2c3e", Name: "globex", Status: "suspended"}}
)

func TestEvaluate(t *testing.T) {
	st := newMemStore()
	s := newService(t, st)
	put(t, s, "tiers", Spec{Type: TypeVariant, Variants: []string{"bronze", "silver", "gold"}, DefaultVariant: "bronze", Enabled: true,
		Rules: []Rule{
			{Expression: `attributes.plan == "enterprise"`, Variant: "gold"}, // errors when the attribute is missing: no match
			{Expression: `tenant.status == "suspended"`, Variant: "bronze"},
			{Expression: `tenant.name.startsWith("ac")`, Variant: "silver"},
			{Expression: `true`, Variant: "gold"},
		}})
	put(t, s, "off", Spec{Type: TypeBoolean, DefaultVariant: "false", Enabled: false, Rules: []Rule{{Expression: "true", Variant: "true"}}})
	e, reader := newEvaluator(t, st)
	if _, ok := e.Evaluate(t.Context(), "tiers", acme); ok {
		t.Fatal("evaluated before any load")
	}
	if err := e.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	enterprise := acme
	enterprise.Attributes = map[string]any{"plan": "enterprise"}
	tests := []struct {
		name string
		key  string
		s    Subject
		want Result
	}{
		{"first matching rule", "tiers", acme, Result{Key: "tiers", Type: TypeVariant, Variant: "silver", Reason: ReasonTargetingMatch, Rule: 2, Revision: 1}},
		{"an earlier rule wins", "tiers", globex, Result{Key: "tiers", Type: TypeVariant, Variant: "bronze", Reason: ReasonTargetingMatch, Rule: 1, Revision: 1}},
		{"attributes", "tiers", enterprise, Result{Key: "tiers", Type: TypeVariant, Variant: "gold", Reason: ReasonTargetingMatch, Rule: 0, Revision: 1}},
		{"disabled", "off", acme, Result{Key: "off", Type: TypeBoolean, Variant: "false", Reason: ReasonDisabled, Rule: -1, Revision: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := e.Evaluate(t.Context(), tt.key, tt.s)
			if !ok {
				t.Fatal("not found")
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	put(t, s, "plain", Spec{Type: TypeBoolean, DefaultVariant: "true", Enabled: true, Rules: []Rule{{Expression: `tenant.name == "nobody"`, Variant: "false"}}})
	if _, ok := e.Evaluate(t.Context(), "plain", acme); ok {
		t.Fatal("a flag created after the load is evaluated before a reload")
	}
	if err := e.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.Evaluate(t.Context(), "plain", acme); got.Reason != ReasonDefault || !got.Bool() {
		t.Fatalf("default: %+v", got)
	}

	// nops_flag_evaluations_total{flag,variant,reason}.
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "nops_flag_evaluations_total" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				get := func(k string) string { v, _ := dp.Attributes.Value(attribute.Key(k)); return v.AsString() }
				counts[get("flag")+"/"+get("variant")+"/"+get("reason")] += dp.Value
			}
		}
	}
	want := map[string]int64{"tiers/silver/TARGETING_MATCH": 1, "tiers/bronze/TARGETING_MATCH": 1, "tiers/gold/TARGETING_MATCH": 1, "off/false/DISABLED": 1, "plain/true/DEFAULT": 1}
	if d := cmp.Diff(want, counts); d != "" {
		t.Errorf("evaluation counts (-want +got):\n%s", d)
	}
}

func TestEvaluatorRunFollowsChangesAndSurvivesOutages(t *testing.T) {
	st := newMemStore()
	s := newService(t, st)
	e, err := NewEvaluator(st, EvaluatorOptions{RefreshInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	put(t, s, "f", Spec{Type: TypeBoolean, DefaultVariant: "true", Enabled: true})
	e.Notify()
	waitFor("the new flag after Notify", func() bool { _, ok := e.Flag("f"); return ok })

	// The store fails: the last flags keep answering.
	st.mu.Lock()
	st.listErr = fmt.Errorf("database down")
	st.mu.Unlock()
	e.Notify()
	if err := e.Reload(t.Context()); err == nil {
		t.Fatal("Reload with the store down succeeded")
	}
	if r, ok := e.Evaluate(t.Context(), "f", acme); !ok || !r.Bool() {
		t.Fatalf("during the outage: %+v %v", r, ok)
	}
	st.mu.Lock()
	st.listErr = nil
	st.mu.Unlock()
	if _, err := s.Delete(t.Context(), "f", ""); err != nil {
		t.Fatal(err)
	}
	e.Notify()
	waitFor("the deletion after Notify", func() bool { _, ok := e.Flag("f"); return !ok })
}

func TestProvider(t *testing.T) {
	st := newMemStore()
	s := newService(t, st)
	put(t, s, "beta", Spec{Type: TypeBoolean, DefaultVariant: "false", Enabled: true,
		Rules: []Rule{{Expression: `tenant.name == "acme" && attributes.region == "eu"`, Variant: "true"}}})
	put(t, s, "color", Spec{Type: TypeVariant, Variants: []string{"red", "blue"}, DefaultVariant: "red", Enabled: true,
		Rules: []Rule{{Expression: `tenant.status == "active"`, Variant: "blue"}}})
	put(t, s, "dark", Spec{Type: TypeBoolean, DefaultVariant: "true", Enabled: false})
	e, _ := newEvaluator(t, st)
	if err := e.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	var resolved int
	resolve := func(_ context.Context, id string) (Tenant, error) {
		resolved++
		for _, s := range []Subject{acme, globex} {
			if s.Tenant.ID == id {
				return s.Tenant, nil
			}
		}
		return Tenant{}, errs.New(errs.NotFound, "no tenant")
	}
	api := isolated.NewAPI()
	t.Cleanup(func() { _ = api.Shutdown(context.Background()) })
	if err := api.SetProviderAndWait(t.Context(), NewProvider(e, resolve)); err != nil {
		t.Fatal(err)
	}
	c := api.NewClient()
	ctx := t.Context()
	eu := openfeature.NewEvaluationContext(acme.Tenant.ID, map[string]any{"region": "eu"})
	us := openfeature.NewEvaluationContext(acme.Tenant.ID, map[string]any{"region": "us"})

	b, err := c.BooleanValueDetails(ctx, "beta", false, eu)
	if err != nil || !b.Value || b.Reason != openfeature.TargetingMatchReason || b.Variant != "true" {
		t.Errorf("beta for acme in eu: %+v, %v", b, err)
	}
	if b, err = c.BooleanValueDetails(ctx, "beta", true, us); err != nil || b.Value || b.Reason != openfeature.DefaultReason {
		t.Errorf("beta for acme in us: %+v, %v", b, err)
	}
	str, err := c.StringValueDetails(ctx, "color", "green", openfeature.NewEvaluationContext(globex.Tenant.ID, nil))
	if err != nil || str.Value != "red" || str.Reason != openfeature.DefaultReason {
		t.Errorf("color for suspended globex: %+v, %v", str, err)
	}
	if str, err = c.StringValueDetails(ctx, "color", "green", eu); err != nil || str.Value != "blue" || str.Reason != openfeature.TargetingMatchReason {
		t.Errorf("color for acme: %+v, %v", str, err)
	}
	// Disabled: the caller's default, reason DISABLED, no error; the tenant is not looked up.
	before := resolved
	if b, err = c.BooleanValueDetails(ctx, "dark", false, eu); err != nil || b.Value || b.Reason != openfeature.DisabledReason {
		t.Errorf("disabled flag: %+v, %v", b, err)
	}
	if resolved != before {
		t.Errorf("the tenant was resolved for a flag without rules to read it")
	}
	errorsOf := []struct {
		name string
		eval func() (openfeature.ErrorCode, any)
		code openfeature.ErrorCode
		def  any
	}{
		{"unknown flag", func() (openfeature.ErrorCode, any) {
			d, _ := c.BooleanValueDetails(ctx, "nope", true, eu)
			return d.ErrorCode, d.Value
		}, openfeature.FlagNotFoundCode, true},
		{"boolean read as string", func() (openfeature.ErrorCode, any) {
			d, _ := c.StringValueDetails(ctx, "beta", "dflt", eu)
			return d.ErrorCode, d.Value
		}, openfeature.TypeMismatchCode, "dflt"},
		{"variant read as boolean", func() (openfeature.ErrorCode, any) {
			d, _ := c.BooleanValueDetails(ctx, "color", true, eu)
			return d.ErrorCode, d.Value
		}, openfeature.TypeMismatchCode, true},
		{"variant read as int", func() (openfeature.ErrorCode, any) {
			d, _ := c.IntValueDetails(ctx, "color", 7, eu)
			return d.ErrorCode, d.Value
		}, openfeature.TypeMismatchCode, int64(7)},
		{"unknown flag read as float", func() (openfeature.ErrorCode, any) {
			d, _ := c.FloatValueDetails(ctx, "nope", 1.5, eu)
			return d.ErrorCode, d.Value
		}, openfeature.FlagNotFoundCode, 1.5},
		{"no targeting key", func() (openfeature.ErrorCode, any) {
			d, _ := c.BooleanValueDetails(ctx, "beta", true, openfeature.NewTargetlessEvaluationContext(nil))
			return d.ErrorCode, d.Value
		}, openfeature.TargetingKeyMissingCode, true},
		{"targeting key not a tenant", func() (openfeature.ErrorCode, any) {
			d, _ := c.BooleanValueDetails(ctx, "beta", true, openfeature.NewEvaluationContext("user-1", nil))
			return d.ErrorCode, d.Value
		}, openfeature.InvalidContextCode, true},
	}
	for _, tt := range errorsOf {
		code, val := tt.eval()
		if code != tt.code || val != tt.def {
			t.Errorf("%s: code %q value %v, want %q and the default %v", tt.name, code, val, tt.code, tt.def)
		}
	}
	if got := NewProvider(e, nil).Metadata().Name; got != ProviderName {
		t.Errorf("metadata name %q", got)
	}
}
