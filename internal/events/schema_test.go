package events_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// schemaDir is api/events, read from disk: Go files may not live under api/events, so nothing
// embeds it for this package.
const schemaDir = "../../api/events"

func loadSchemas(t *testing.T) *events.Schemas {
	t.Helper()
	s, err := events.LoadSchemas(os.DirFS(schemaDir))
	if err != nil {
		t.Fatalf("LoadSchemas: %v", err)
	}
	return s
}

// schemaDoc reads one schema file as plain JSON.
func schemaDoc(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(schemaDir, name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

func TestSchemaFilesMatchCatalogue(t *testing.T) {
	entries, err := os.ReadDir(schemaDir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := []string{events.EnvelopeSchemaFile}
	for _, typ := range events.Catalogue() {
		want = append(want, events.SchemaFile(typ))
	}
	sort.Strings(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files in api/events (-want +got):\n%s", diff)
	}
	for _, name := range want {
		doc := schemaDoc(t, name)
		if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema = %v, want draft 2020-12", name, doc["$schema"])
		}
	}
}

func TestCatalogue(t *testing.T) {
	types := events.Catalogue()
	if len(types) != 22 {
		t.Errorf("catalogue has %d types, want the 13 of issue 3, nops.billing.usage.v1, the two route, two invocation and the breaker events of issue 6, nops.flag.changed.v1, nops.apikey.rotation_required.v1 and nops.degradation.changed.v1", len(types))
	}
	covered := map[events.Type]bool{}
	for _, s := range samples() {
		covered[s.typ] = true
		if s.payload.EventType() != s.typ {
			t.Errorf("%s: payload's EventType = %s", s.name, s.payload.EventType())
		}
	}
	for _, typ := range types {
		if !typ.Valid() || !typ.Known() {
			t.Errorf("%s: Valid %v, Known %v", typ, typ.Valid(), typ.Known())
		}
		if !covered[typ] {
			t.Errorf("%s has no sample", typ)
		}
	}
	types[0] = "changed"
	if events.Catalogue()[0] == "changed" {
		t.Error("Catalogue returns shared state")
	}
}

func TestTypeValid(t *testing.T) {
	for typ, want := range map[events.Type]bool{
		"nops.agent.registered.v1":       true,
		"nops.agent.status_changed.v12":  true,
		"nops.flags2.toggled.v3":         true,
		"nops.agent.registered.v0":       false,
		"nops.agent.registered.v01":      false,
		"nops.agent.registered.v":        false,
		"nops.agent.registered.1":        false,
		"nops.agent.registered":          false,
		"nops.agent.x.registered.v1":     false,
		"nops.Agent.registered.v1":       false,
		"nops.agent_x.registered.v1":     false,
		"nops.agent._x.v1":               false,
		"nops.1agent.registered.v1":      false,
		"com.example.agent.v1":           false,
		"":                               false,
		"nops.agent.registered.v1 ":      false,
		"nops.agent.registered.v1234567": true,
	} {
		if got := typ.Valid(); got != want {
			t.Errorf("Type(%q).Valid() = %v, want %v", typ, got, want)
		}
	}
}

func TestNamingConventions(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{events.DataSchemaURI(events.TypeAgentHeartbeat), "urn:nops:events:nops.agent.heartbeat.v1"},
		{events.EnvelopeSchemaURI, "urn:nops:events:cloudevent"},
		{events.SchemaFile(events.TypeTenantDeleted), "nops.tenant.deleted.v1.json"},
		{events.TenantSource("ten_1"), "/nops/tenants/ten_1"},
		{events.AgentSubject("agt_1"), "agents/agt_1"},
		{events.APIKeySubject("key_1"), "api-keys/key_1"},
		{events.TenantSubject("ten_1"), "tenants/ten_1"},
		{events.UsageSubject("ten_1"), "tenants/ten_1/usage"},
		{events.RouteSubject("text.summarize"), "routes/text.summarize"},
		{events.InvocationSubject("ten_1"), "tenants/ten_1/invocations"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestSamplesMatchSchemas(t *testing.T) {
	s := loadSchemas(t)
	for _, smp := range samples() {
		t.Run(smp.name, func(t *testing.T) {
			e := newEvent(t, smp)
			if err := s.Validate(mustMarshal(t, e)); err != nil {
				t.Errorf("Validate: %v", err)
			}
			e.TraceParent = ""
			e.Extensions = map[string]any{"region": "eu", "sampled": false, "prio": -3}
			if err := s.Validate(mustMarshal(t, e)); err != nil {
				t.Errorf("Validate with extensions: %v", err)
			}
		})
	}
}

// requiredPaths lists the member paths the schema node requires, recursively, resolving local
// $refs against root.
func requiredPaths(root, node map[string]any, prefix []string) [][]string {
	var out [][]string
	props := map[string]any{}
	var required []any
	for n := node; n != nil; {
		if p, ok := n["properties"].(map[string]any); ok {
			for k, v := range p {
				if _, seen := props[k]; !seen {
					props[k] = v
				}
			}
		}
		if r, ok := n["required"].([]any); ok {
			required = append(required, r...)
		}
		ref, _ := n["$ref"].(string)
		name, ok := strings.CutPrefix(ref, "#/$defs/")
		if !ok {
			break
		}
		n = root["$defs"].(map[string]any)[name].(map[string]any)
	}
	for _, r := range required {
		path := append(slices.Clone(prefix), r.(string))
		out = append(out, path)
		if sub, ok := props[r.(string)].(map[string]any); ok {
			out = append(out, requiredPaths(root, sub, path)...)
		}
	}
	return out
}

func TestMissingRequiredFieldFailsValidation(t *testing.T) {
	s := loadSchemas(t)
	full := map[events.Type]events.Payload{}
	for _, smp := range samples() {
		if _, ok := full[smp.typ]; !ok {
			full[smp.typ] = smp.payload
		}
	}
	for _, typ := range events.Catalogue() {
		root := schemaDoc(t, events.SchemaFile(typ))
		paths := requiredPaths(root, root, nil)
		if len(paths) == 0 {
			t.Errorf("%s requires nothing", typ)
		}
		for _, path := range paths {
			t.Run(string(typ)+"/"+strings.Join(path, "."), func(t *testing.T) {
				raw, err := json.Marshal(full[typ])
				if err != nil {
					t.Fatal(err)
				}
				var data map[string]any
				if err := json.Unmarshal(raw, &data); err != nil {
					t.Fatal(err)
				}
				parent := data
				for _, k := range path[:len(path)-1] {
					parent = parent[k].(map[string]any)
				}
				if _, ok := parent[path[len(path)-1]]; !ok {
					t.Fatalf("sample lacks %v", path)
				}
				delete(parent, path[len(path)-1])
				if err := s.ValidateData(typ, data); !errs.Is(err, errs.Invalid) {
					t.Errorf("ValidateData without %v: %v, want errs.Invalid", path, err)
				}
				// The Go decoder refuses it too, except for a false boolean or a zero count, which
				// it cannot tell from an absent one.
				b, _ := json.Marshal(data)
				if _, err := events.Parse(envelopeWith(t, typ, b)); err == nil && !zeroDecodable[path[len(path)-1]] {
					t.Errorf("Parse without %v succeeded", path)
				}
			})
		}
	}
	t.Run("envelope", func(t *testing.T) {
		env := schemaDoc(t, events.EnvelopeSchemaFile)
		for _, path := range requiredPaths(env, env, nil) {
			_, m := canonical(t)
			delete(m, path[0])
			if err := s.Validate(encode(t, m)); !errs.Is(err, errs.Invalid) {
				t.Errorf("Validate without %s: %v, want errs.Invalid", path[0], err)
			}
		}
	})
}

// zeroDecodable are the required members whose zero value is valid, so Go decodes their absence
// as a valid payload; only the schemas refuse it.
var zeroDecodable = map[string]bool{
	"cascade": true, "request_bytes": true, "response_bytes": true, "duration_ms": true,
	"retryable": true, "attempts": true, "async": true,
}

// envelopeWith wraps data in a valid envelope of type typ for the samples' tenant and subjects.
func envelopeWith(t *testing.T, typ events.Type, data []byte) []byte {
	t.Helper()
	for _, smp := range samples() {
		if smp.typ == typ {
			e := newEvent(t, smp)
			var m map[string]any
			if err := json.Unmarshal(mustMarshal(t, e), &m); err != nil {
				t.Fatal(err)
			}
			m["data"] = json.RawMessage(data)
			return encode(t, m)
		}
	}
	t.Fatalf("no sample of %s", typ)
	return nil
}

func TestSchemasRejectWhatGoRejects(t *testing.T) {
	s := loadSchemas(t)
	tests := []struct {
		name   string
		typ    events.Type
		change func(data map[string]any)
	}{
		{"undeclared secret", events.TypeAPIKeyCreated, func(d map[string]any) { d["key"].(map[string]any)["secret"] = "nops_x_y" }},
		{"undeclared top-level member", events.TypeAgentRegistered, func(d map[string]any) { d["extra"] = 1 }},
		{"agent status outside the enum", events.TypeAgentRegistered, func(d map[string]any) { d["agent"].(map[string]any)["status"] = "dead" }},
		{"criticality outside the enum", events.TypeAgentUpdated, func(d map[string]any) { d["agent"].(map[string]any)["criticality"] = "vital" }},
		{"relative endpoint", events.TypeAgentUpdated, func(d map[string]any) { d["agent"].(map[string]any)["endpoint"] = "/x" }},
		{"id with a dot", events.TypeAgentDeregistered, func(d map[string]any) { d["agent"].(map[string]any)["id"] = "agt.1" }},
		{"time with an offset", events.TypeAgentHeartbeat, func(d map[string]any) { d["heartbeat_at"] = "2025-03-14T16:09:26+01:00" }},
		{"time not a time", events.TypeAgentHeartbeat, func(d map[string]any) { d["heartbeat_at"] = "yesterdayZ" }},
		{"error rate above 1", events.TypeAgentHeartbeat, func(d map[string]any) { d["load"].(map[string]any)["error_rate"] = 1.5 }},
		{"negative in-flight", events.TypeAgentHeartbeat, func(d map[string]any) { d["load"].(map[string]any)["in_flight"] = -1 }},
		{"status unchanged", events.TypeAgentStatusChanged, func(d map[string]any) { d["to"] = d["from"] }},
		{"revoked without revoked_at", events.TypeAPIKeyRevoked, func(d map[string]any) { delete(d["key"].(map[string]any), "revoked_at") }},
		{"suspended but active", events.TypeTenantSuspended, func(d map[string]any) { d["tenant"].(map[string]any)["status"] = "active" }},
		{"resumed but suspended", events.TypeTenantResumed, func(d map[string]any) { d["tenant"].(map[string]any)["status"] = "suspended" }},
		{"cascade not a boolean", events.TypeTenantDeleted, func(d map[string]any) { d["cascade"] = "yes" }},
		{"usage source outside the enum", events.TypeBillingUsage, func(d map[string]any) { d["source"] = "batch" }},
		{"gateway usage without a route", events.TypeBillingUsage, func(d map[string]any) { delete(d, "route") }},
		{"invocation usage without a capability", events.TypeBillingUsage, func(d map[string]any) {
			d["source"] = "invocation"
			delete(d, "capability")
		}},
		{"usage route with a newline", events.TypeBillingUsage, func(d map[string]any) { d["route"] = "GET /v1\n" }},
		{"usage route too long", events.TypeBillingUsage, func(d map[string]any) { d["route"] = strings.Repeat("r", 257) }},
		{"usage capability with a space", events.TypeBillingUsage, func(d map[string]any) { d["capability"] = "text summarize" }},
		{"usage request id with a slash", events.TypeBillingUsage, func(d map[string]any) { d["request_id"] = "req/1" }},
		{"usage agent id with a dot", events.TypeBillingUsage, func(d map[string]any) { d["agent_id"] = "agt.1" }},
		{"usage status below 100", events.TypeBillingUsage, func(d map[string]any) { d["status"] = 99 }},
		{"usage status above 599", events.TypeBillingUsage, func(d map[string]any) { d["status"] = 600 }},
		{"usage status not an integer", events.TypeBillingUsage, func(d map[string]any) { d["status"] = 200.5 }},
		{"negative request bytes", events.TypeBillingUsage, func(d map[string]any) { d["request_bytes"] = -1 }},
		{"negative response bytes", events.TypeBillingUsage, func(d map[string]any) { d["response_bytes"] = -1 }},
		{"negative duration", events.TypeBillingUsage, func(d map[string]any) { d["duration_ms"] = -0.5 }},
		{"usage start with an offset", events.TypeBillingUsage, func(d map[string]any) { d["started_at"] = "2025-03-14T16:09:26+01:00" }},
		{"usage secret", events.TypeBillingUsage, func(d map[string]any) { d["authorization"] = "Bearer x" }},
		{"route without targets", events.TypeRouteUpdated, func(d map[string]any) { d["route"].(map[string]any)["targets"] = []any{} }},
		{"route target with agent and version", events.TypeRouteUpdated, func(d map[string]any) {
			d["route"].(map[string]any)["targets"].([]any)[1].(map[string]any)["agent_id"] = "agt_x"
		}},
		{"route target with neither", events.TypeRouteUpdated, func(d map[string]any) {
			delete(d["route"].(map[string]any)["targets"].([]any)[0].(map[string]any), "agent_id")
		}},
		{"route weight too big", events.TypeRouteUpdated, func(d map[string]any) {
			d["route"].(map[string]any)["targets"].([]any)[1].(map[string]any)["weight"] = 10001
		}},
		{"route priority negative", events.TypeRouteDeleted, func(d map[string]any) {
			d["route"].(map[string]any)["targets"].([]any)[1].(map[string]any)["priority"] = -1
		}},
		{"route sticky header with a space", events.TypeRouteUpdated, func(d map[string]any) { d["route"].(map[string]any)["sticky_header"] = "X Y" }},
		{"route timeout zero", events.TypeRouteUpdated, func(d map[string]any) { d["route"].(map[string]any)["timeout_ms"] = 0 }},
		{"route hedge of three", events.TypeRouteUpdated, func(d map[string]any) {
			d["route"].(map[string]any)["hedge"].(map[string]any)["max_extra"] = 3
		}},
		{"route revision zero", events.TypeRouteDeleted, func(d map[string]any) { d["route"].(map[string]any)["revision"] = 0 }},
		{"requested without capability", events.TypeInvocationRequested, func(d map[string]any) { delete(d, "capability") }},
		{"requested id with a slash", events.TypeInvocationRequested, func(d map[string]any) { d["invocation_id"] = "inv/1" }},
		{"requested with a body", events.TypeInvocationRequested, func(d map[string]any) { d["body"] = "secret input" }},
		{"completed outcome outside the enum", events.TypeInvocationCompleted, func(d map[string]any) { d["outcome"] = "maybe" }},
		{"completed negative attempts", events.TypeInvocationCompleted, func(d map[string]any) { d["attempts"] = -1 }},
		{"completed status above 599", events.TypeInvocationCompleted, func(d map[string]any) { d["status"] = 600 }},
		{"completed async not a boolean", events.TypeInvocationCompleted, func(d map[string]any) { d["async"] = "yes" }},
		{"completed without async", events.TypeInvocationCompleted, func(d map[string]any) { delete(d, "async") }},
		{"completed with headers", events.TypeInvocationCompleted, func(d map[string]any) { d["headers"] = map[string]any{"authorization": "Bearer x"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p events.Payload
			for _, smp := range samples() {
				if smp.typ == tt.typ {
					p = smp.payload
					break
				}
			}
			raw, _ := json.Marshal(p)
			var data map[string]any
			if err := json.Unmarshal(raw, &data); err != nil {
				t.Fatal(err)
			}
			tt.change(data)
			if err := s.ValidateData(tt.typ, data); !errs.Is(err, errs.Invalid) {
				t.Errorf("ValidateData: %v, want errs.Invalid", err)
			}
		})
	}
}

func TestSchemasValidateRejects(t *testing.T) {
	s := loadSchemas(t)
	_, m := canonical(t)
	m["type"], m["dataschema"] = "nops.agent.teleported.v2", "urn:nops:events:nops.agent.teleported.v2"
	for name, input := range map[string][]byte{
		"not JSON":                   []byte("{"),
		"type outside the catalogue": encode(t, m),
		"an array":                   []byte("[]"),
	} {
		if err := s.Validate(input); !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: Validate = %v, want errs.Invalid", name, err)
		}
	}
	for name, change := range map[string]func(map[string]any){
		"data_base64":            func(m map[string]any) { m["data_base64"] = "e30=" },
		"upper-case extension":   func(m map[string]any) { m["Zone"] = "a" },
		"object extension":       func(m map[string]any) { m["zone"] = map[string]any{} },
		"extension beyond int32": func(m map[string]any) { m["n"] = 1 << 31 },
		"zero trace id":          func(m map[string]any) { m["traceparent"] = "00-00000000000000000000000000000000-00f067aa0ba902b7-01" },
		"foreign dataschema":     func(m map[string]any) { m["dataschema"] = "https://example.com/schema.json" },
		"other content type":     func(m map[string]any) { m["datacontenttype"] = "text/plain" },
	} {
		_, m := canonical(t)
		change(m)
		if err := s.Validate(encode(t, m)); !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: Validate = %v, want errs.Invalid", name, err)
		}
	}
}

// schemaNode resolves a local $ref of node against root.
func schemaNode(root, node map[string]any) map[string]any {
	if ref, ok := node["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/$defs/")
		return root["$defs"].(map[string]any)[name].(map[string]any)
	}
	return node
}

// compareStruct checks that struct type typ and object schema node declare the same members,
// require the same ones (the fields without omitempty) and close the object.
func compareStruct(t *testing.T, where string, root, node map[string]any, typ reflect.Type) {
	t.Helper()
	node = schemaNode(root, node)
	if node["type"] != "object" || node["additionalProperties"] != false {
		t.Errorf("%s: schema is not a closed object", where)
	}
	props, _ := node["properties"].(map[string]any)
	var goNames, goRequired []string
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		goNames = append(goNames, name)
		if opts != "omitempty" {
			goRequired = append(goRequired, name)
		}
		sub, ok := props[name].(map[string]any)
		if !ok {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Time]() {
			compareStruct(t, where+"."+name, root, sub, ft)
		}
	}
	var schemaNames, schemaRequired []string
	for k := range props {
		schemaNames = append(schemaNames, k)
	}
	required, _ := node["required"].([]any) // absent when nothing is
	for _, r := range required {
		schemaRequired = append(schemaRequired, r.(string))
	}
	sort.Strings(goNames)
	sort.Strings(goRequired)
	sort.Strings(schemaNames)
	sort.Strings(schemaRequired)
	if diff := cmp.Diff(goNames, schemaNames); diff != "" {
		t.Errorf("%s: members (-Go +schema):\n%s", where, diff)
	}
	if diff := cmp.Diff(goRequired, schemaRequired); diff != "" {
		t.Errorf("%s: required members (-Go +schema):\n%s", where, diff)
	}
}

func TestSchemasMatchPayloads(t *testing.T) {
	done := map[events.Type]bool{}
	for _, smp := range samples() {
		if done[smp.typ] {
			continue
		}
		done[smp.typ] = true
		root := schemaDoc(t, events.SchemaFile(smp.typ))
		compareStruct(t, string(smp.typ), root, root, reflect.TypeOf(deref(smp.payload)))
	}
}

func TestEnumsAgree(t *testing.T) {
	enum := func(file string, path ...string) []string {
		root := schemaDoc(t, file)
		node := root
		for _, p := range path {
			node = schemaNode(root, node)["properties"].(map[string]any)[p].(map[string]any)
		}
		var out []string
		for _, v := range node["enum"].([]any) {
			out = append(out, v.(string))
		}
		return out
	}
	registered := events.SchemaFile(events.TypeAgentRegistered)
	changed := events.SchemaFile(events.TypeAgentStatusChanged)
	statuses := enum(registered, "agent", "status")
	for _, other := range [][]string{enum(changed, "from"), enum(changed, "to")} {
		if diff := cmp.Diff(statuses, other); diff != "" {
			t.Errorf("status enums differ (-agent.status +status_changed):\n%s", diff)
		}
	}
	accepts := func(name string, values []string, build func(v string) events.Payload) {
		for _, v := range values {
			if err := build(v).Validate(); err != nil {
				t.Errorf("%s %q is in the schema but Go rejects it: %v", name, v, err)
			}
		}
		if err := build("not-in-the-schema").Validate(); err == nil {
			t.Errorf("%s: Go accepts a value outside the schema's enum", name)
		}
	}
	accepts("agent status", statuses, func(v string) events.Payload {
		a := agentFull()
		a.Status = v
		return events.AgentRegistered{Agent: a}
	})
	accepts("criticality", enum(registered, "agent", "criticality"), func(v string) events.Payload {
		a := agentFull()
		a.Criticality = v
		return events.AgentRegistered{Agent: a}
	})
	accepts("tenant status", enum(events.SchemaFile(events.TypeTenantUpdated), "tenant", "status"), func(v string) events.Payload {
		return events.TenantUpdated{Tenant: tenantSnap(v)}
	})
	accepts("usage source", enum(events.SchemaFile(events.TypeBillingUsage), "source"), func(v string) events.Payload {
		return events.BillingUsage{
			Tenant: tenantA, Source: v, Route: "GET /v1/agents", Capability: "text.summarize",
			Status: 200, StartedAt: base,
		}
	})
}

func TestNoSecretsInPayloads(t *testing.T) {
	secretish := regexp.MustCompile(`(?i)secret|hash|pepper|password|token|private|credential`)
	var walk func(file string, v any)
	walk = func(file string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if props, ok := x["properties"].(map[string]any); ok {
				for name := range props {
					if secretish.MatchString(name) {
						t.Errorf("%s declares %q", file, name)
					}
				}
			}
			for _, sub := range x {
				walk(file, sub)
			}
		case []any:
			for _, sub := range x {
				walk(file, sub)
			}
		}
	}
	for _, typ := range events.Catalogue() {
		walk(events.SchemaFile(typ), schemaDoc(t, events.SchemaFile(typ)))
	}
	var fields func(typ reflect.Type)
	fields = func(typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ == reflect.TypeFor[time.Time]() {
			return
		}
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			if secretish.MatchString(f.Name) || secretish.MatchString(f.Tag.Get("json")) {
				t.Errorf("%s.%s looks like a secret", typ.Name(), f.Name)
			}
			fields(f.Type)
		}
	}
	for _, smp := range samples() {
		fields(reflect.TypeOf(smp.payload))
	}
}

// realFS copies api/events into a MapFS that tests can change.
func realFS(t *testing.T) fstest.MapFS {
	t.Helper()
	fsys := fstest.MapFS{}
	entries, err := os.ReadDir(schemaDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(schemaDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		fsys[e.Name()] = &fstest.MapFile{Data: b}
	}
	return fsys
}

func TestLoadSchemasRefuses(t *testing.T) {
	registered := events.SchemaFile(events.TypeAgentRegistered)
	tests := []struct {
		name   string
		change func(fsys fstest.MapFS)
		want   string
	}{
		{"missing data schema", func(f fstest.MapFS) { delete(f, registered) }, "missing: " + registered},
		{"missing envelope schema", func(f fstest.MapFS) { delete(f, events.EnvelopeSchemaFile) }, "missing: cloudevent.json"},
		{"schema of no catalogue type", func(f fstest.MapFS) {
			f["nops.agent.teleported.v1.json"] = f[registered]
		}, "no catalogue event type"},
		{"wrong $id", func(f fstest.MapFS) {
			f[registered] = &fstest.MapFile{Data: []byte(strings.Replace(string(f[registered].Data),
				"urn:nops:events:nops.agent.registered.v1", "urn:nops:events:nops.agent.updated.v1", 1))}
		}, "$id"},
		{"not JSON", func(f fstest.MapFS) { f[registered] = &fstest.MapFile{Data: []byte("{")} }, "parse event schema"},
		{"remote $ref", func(f fstest.MapFS) {
			f[registered] = &fstest.MapFile{Data: []byte(`{"$schema":"https://json-schema.org/draft/2020-12/schema",` +
				`"$id":"urn:nops:events:nops.agent.registered.v1","$ref":"https://example.com/agent.json"}`)}
		}, "load nothing from outside"},
		{"invalid schema", func(f fstest.MapFS) {
			f[registered] = &fstest.MapFile{Data: []byte(`{"$id":"urn:nops:events:nops.agent.registered.v1","type":12}`)}
		}, "compile event schema " + registered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := realFS(t)
			tt.change(fsys)
			_, err := events.LoadSchemas(fsys)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadSchemas: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	t.Run("other files ignored", func(t *testing.T) {
		fsys := realFS(t)
		fsys["README.md"] = &fstest.MapFile{Data: []byte("# event schemas")}
		fsys["drafts/x.json"] = &fstest.MapFile{Data: []byte("{")}
		if _, err := events.LoadSchemas(fsys); err != nil {
			t.Errorf("LoadSchemas: %v", err)
		}
	})
}
