package registry_test

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
)

// validInput returns a registration that passes every rule.
func validInput() registry.AgentInput {
	return registry.AgentInput{
		Name:    "summarizer",
		Version: "1.2.3",
		Capabilities: []registry.Capability{
			{
				Name:         "text.summarize",
				Description:  "Summarizes text.\nLine two\twith a tab.",
				InputSchema:  json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}`),
				OutputSchema: json.RawMessage(`{"type":"string"}`),
			},
			{Name: "text.translate"},
		},
		Endpoint:    "https://agent.example.com:8443/v1?x=1",
		Labels:      map[string]string{"env": "prod", "example.com/tier": "gold", "gpu": ""},
		Metadata:    map[string]any{"owner": "team-a", "limits": map[string]any{"rps": 10.0}},
		Criticality: registry.CriticalityEssential,
	}
}

// fieldNames returns the offending field names of an errs.Invalid, failing on anything else.
func fieldNames(t *testing.T, err error) []string {
	t.Helper()
	e := errs.As(err)
	if e == nil || e.Code != errs.Invalid {
		t.Fatalf("err = %v, want errs.Invalid", err)
	}
	var names []string
	for _, f := range e.Fields {
		names = append(names, f.Name)
	}
	return names
}

func TestNormalizeAcceptsAndCanonicalises(t *testing.T) {
	in := validInput()
	in.Version = "v1.2.3-rc.1+build.7"
	in.Criticality = ""
	in.Labels = nil
	in.Metadata = nil
	got, err := in.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	want := in
	want.Version = "1.2.3-rc.1"
	want.Criticality = registry.CriticalityBestEffort
	want.Labels = map[string]string{}
	want.Metadata = map[string]any{}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Normalize (-want +got):\n%s", diff)
	}

	in.Capabilities = nil
	got, err = in.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if got.Capabilities == nil || len(got.Capabilities) != 0 {
		t.Errorf("Capabilities = %#v, want empty non-nil", got.Capabilities)
	}
}

func TestNormalizeRules(t *testing.T) {
	deep := func(levels int) map[string]any {
		m := map[string]any{"leaf": 1.0}
		for range levels - 1 {
			m = map[string]any{"n": m}
		}
		return m
	}
	manyLabels := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("k%d", i)] = "v"
		}
		return m
	}
	caps := func(n int) []registry.Capability {
		var cs []registry.Capability
		for i := range n {
			cs = append(cs, registry.Capability{Name: fmt.Sprintf("c%d", i)})
		}
		return cs
	}
	tests := []struct {
		name   string
		mutate func(*registry.AgentInput)
		bad    []string // offending fields; nil means valid
	}{
		// name
		{"name 63 chars", func(in *registry.AgentInput) { in.Name = strings.Repeat("a", 63) }, nil},
		{"name with digits and dash", func(in *registry.AgentInput) { in.Name = "a-1" }, nil},
		{"name missing", func(in *registry.AgentInput) { in.Name = "" }, []string{"body.name"}},
		{"name 64 chars", func(in *registry.AgentInput) { in.Name = strings.Repeat("a", 64) }, []string{"body.name"}},
		{"name upper case", func(in *registry.AgentInput) { in.Name = "Agent" }, []string{"body.name"}},
		{"name underscore", func(in *registry.AgentInput) { in.Name = "my_agent" }, []string{"body.name"}},
		{"name trailing dash", func(in *registry.AgentInput) { in.Name = "agent-" }, []string{"body.name"}},
		// version
		{"version with v", func(in *registry.AgentInput) { in.Version = "v2.0.0" }, nil},
		{"version prerelease", func(in *registry.AgentInput) { in.Version = "1.0.0-alpha.1" }, nil},
		{"version missing", func(in *registry.AgentInput) { in.Version = "" }, []string{"body.version"}},
		{"version shorthand", func(in *registry.AgentInput) { in.Version = "1.2" }, []string{"body.version"}},
		{"version go shorthand", func(in *registry.AgentInput) { in.Version = "v1" }, []string{"body.version"}},
		{"version leading zero", func(in *registry.AgentInput) { in.Version = "01.2.3" }, []string{"body.version"}},
		{"version words", func(in *registry.AgentInput) { in.Version = "latest" }, []string{"body.version"}},
		{"version too long", func(in *registry.AgentInput) { in.Version = "1.2.3-" + strings.Repeat("a", 123) }, []string{"body.version"}},
		// capabilities
		{"no capabilities", func(in *registry.AgentInput) { in.Capabilities = nil }, nil},
		{"64 capabilities", func(in *registry.AgentInput) { in.Capabilities = caps(64) }, nil},
		{"65 capabilities", func(in *registry.AgentInput) { in.Capabilities = caps(65) }, []string{"body.capabilities"}},
		{"schemas at the total bound", func(in *registry.AgentInput) { in.Capabilities = bigSchemas(registry.MaxSchemaTotalBytes) }, nil},
		{"schemas over the total bound", func(in *registry.AgentInput) { in.Capabilities = bigSchemas(registry.MaxSchemaTotalBytes + 1) }, []string{"body.capabilities"}},
		{"capability name missing", func(in *registry.AgentInput) { in.Capabilities[1].Name = "" }, []string{"body.capabilities[1].name"}},
		{"capability name bad", func(in *registry.AgentInput) { in.Capabilities[1].Name = "Text.Translate" }, []string{"body.capabilities[1].name"}},
		{"capability name duplicate", func(in *registry.AgentInput) { in.Capabilities[1].Name = "text.summarize" }, []string{"body.capabilities[1].name"}},
		{"description 1024 runes", func(in *registry.AgentInput) { in.Capabilities[0].Description = strings.Repeat("ü", 1024) }, nil},
		{"description 1025 runes", func(in *registry.AgentInput) { in.Capabilities[0].Description = strings.Repeat("ü", 1025) }, []string{"body.capabilities[0].description"}},
		{"description control", func(in *registry.AgentInput) { in.Capabilities[0].Description = "a\x1bb" }, []string{"body.capabilities[0].description"}},
		{"description invalid utf-8", func(in *registry.AgentInput) { in.Capabilities[0].Description = "\xc3" }, []string{"body.capabilities[0].description"}},
		{"input schema invalid", func(in *registry.AgentInput) { in.Capabilities[1].InputSchema = json.RawMessage(`{"type":5}`) }, []string{"body.capabilities[1].input_schema"}},
		{"output schema invalid", func(in *registry.AgentInput) { in.Capabilities[0].OutputSchema = json.RawMessage(`{"minimum":"x"}`) }, []string{"body.capabilities[0].output_schema"}},
		{"schema not json", func(in *registry.AgentInput) { in.Capabilities[0].InputSchema = json.RawMessage(`{`) }, []string{"body.capabilities[0].input_schema"}},
		// endpoint
		{"endpoint http", func(in *registry.AgentInput) { in.Endpoint = "http://10.0.0.1/" }, nil},
		{"endpoint ipv6", func(in *registry.AgentInput) { in.Endpoint = "http://[::1]:8080/x" }, nil},
		{"endpoint upper scheme", func(in *registry.AgentInput) { in.Endpoint = "HTTPS://agent.example.com" }, nil},
		{"endpoint missing", func(in *registry.AgentInput) { in.Endpoint = "" }, []string{"body.endpoint"}},
		{"endpoint relative", func(in *registry.AgentInput) { in.Endpoint = "/v1/agent" }, []string{"body.endpoint"}},
		{"endpoint ftp", func(in *registry.AgentInput) { in.Endpoint = "ftp://agent.example.com" }, []string{"body.endpoint"}},
		{"endpoint file", func(in *registry.AgentInput) { in.Endpoint = "file:///etc/passwd" }, []string{"body.endpoint"}},
		{"endpoint opaque", func(in *registry.AgentInput) { in.Endpoint = "http:agent.example.com" }, []string{"body.endpoint"}},
		{"endpoint userinfo", func(in *registry.AgentInput) { in.Endpoint = "https://user:pw@agent.example.com" }, []string{"body.endpoint"}},
		{"endpoint user only", func(in *registry.AgentInput) { in.Endpoint = "https://user@agent.example.com" }, []string{"body.endpoint"}},
		{"endpoint fragment", func(in *registry.AgentInput) { in.Endpoint = "https://agent.example.com/#frag" }, []string{"body.endpoint"}},
		{"endpoint empty fragment", func(in *registry.AgentInput) { in.Endpoint = "https://agent.example.com/#" }, []string{"body.endpoint"}},
		{"endpoint no host", func(in *registry.AgentInput) { in.Endpoint = "https:///path" }, []string{"body.endpoint"}},
		{"endpoint port only", func(in *registry.AgentInput) { in.Endpoint = "https://:8080/" }, []string{"body.endpoint"}},
		{"endpoint empty port", func(in *registry.AgentInput) { in.Endpoint = "https://agent.example.com:/" }, []string{"body.endpoint"}},
		{"endpoint port 0", func(in *registry.AgentInput) { in.Endpoint = "https://agent.example.com:0/" }, []string{"body.endpoint"}},
		{"endpoint port too big", func(in *registry.AgentInput) { in.Endpoint = "https://agent.example.com:65536/" }, []string{"body.endpoint"}},
		{"endpoint space", func(in *registry.AgentInput) { in.Endpoint = "https://agent.example.com/a b" }, []string{"body.endpoint"}},
		{"endpoint newline", func(in *registry.AgentInput) { in.Endpoint = "https://agent.example.com/\n" }, []string{"body.endpoint"}},
		{"endpoint too long", func(in *registry.AgentInput) { in.Endpoint = "https://a.example.com/" + strings.Repeat("a", 2048) }, []string{"body.endpoint"}},
		{"endpoint bad escape", func(in *registry.AgentInput) { in.Endpoint = "https://agent.example.com/%zz" }, []string{"body.endpoint"}},
		// labels
		{"64 labels", func(in *registry.AgentInput) { in.Labels = manyLabels(64) }, nil},
		{"label max sizes", func(in *registry.AgentInput) {
			l63 := strings.Repeat("a", 63)
			prefix := l63 + "." + l63 + "." + l63 + "." + strings.Repeat("b", 61) // 253 bytes
			in.Labels = map[string]string{prefix + "/" + strings.Repeat("B", 63): "x" + strings.Repeat("-", 61) + "Z"}
		}, nil},
		{"label dotted name", func(in *registry.AgentInput) {
			in.Labels = map[string]string{"app.kubernetes.io/part-of": "nops_kernel.v1"}
		}, nil},
		{"65 labels", func(in *registry.AgentInput) { in.Labels = manyLabels(65) }, []string{"body.labels"}},
		{"label empty key", func(in *registry.AgentInput) { in.Labels = map[string]string{"": "x"} }, []string{`body.labels[""]`}},
		{"label key bad char", func(in *registry.AgentInput) { in.Labels = map[string]string{"a b": "x"} }, []string{`body.labels["a b"]`}},
		{"label key name too long", func(in *registry.AgentInput) { in.Labels = map[string]string{strings.Repeat("a", 64): "x"} }, []string{`body.labels["` + strings.Repeat("a", 64) + `"]`}},
		{"label key empty prefix", func(in *registry.AgentInput) { in.Labels = map[string]string{"/a": "x"} }, []string{`body.labels["/a"]`}},
		{"label key empty name", func(in *registry.AgentInput) { in.Labels = map[string]string{"example.com/": "x"} }, []string{`body.labels["example.com/"]`}},
		{"label key upper prefix", func(in *registry.AgentInput) { in.Labels = map[string]string{"Example.com/a": "x"} }, []string{`body.labels["Example.com/a"]`}},
		{"label key two slashes", func(in *registry.AgentInput) { in.Labels = map[string]string{"a/b/c": "x"} }, []string{`body.labels["a/b/c"]`}},
		{"label key prefix label too long", func(in *registry.AgentInput) { in.Labels = map[string]string{strings.Repeat("a", 64) + "/b": "x"} }, []string{`body.labels["` + strings.Repeat("a", 64) + `/b"]`}},
		{"label key prefix too long", func(in *registry.AgentInput) { in.Labels = map[string]string{strings.Repeat("a.", 127) + "a/b": "x"} }, []string{`body.labels["` + strings.Repeat("a.", 40) + `…"]`}},
		{"label key dash start", func(in *registry.AgentInput) { in.Labels = map[string]string{"-a": "x"} }, []string{`body.labels["-a"]`}},
		{"label value too long", func(in *registry.AgentInput) { in.Labels = map[string]string{"a": strings.Repeat("v", 64)} }, []string{`body.labels["a"]`}},
		{"label value bad char", func(in *registry.AgentInput) { in.Labels = map[string]string{"a": "x/y"} }, []string{`body.labels["a"]`}},
		{"label value dot end", func(in *registry.AgentInput) { in.Labels = map[string]string{"a": "x."} }, []string{`body.labels["a"]`}},
		{"label key and value bad", func(in *registry.AgentInput) { in.Labels = map[string]string{"-": "-"} }, []string{`body.labels["-"]`, `body.labels["-"]`}},
		// metadata
		{"metadata nested 16", func(in *registry.AgentInput) { in.Metadata = deep(16) }, nil},
		{"metadata nested 17", func(in *registry.AgentInput) { in.Metadata = deep(17) }, []string{"body.metadata"}},
		{"metadata at size limit", func(in *registry.AgentInput) {
			in.Metadata = map[string]any{"k": strings.Repeat("x", registry.MaxMetadataBytes-len(`{"k":""}`))}
		}, nil},
		{"metadata too big", func(in *registry.AgentInput) {
			in.Metadata = map[string]any{"k": strings.Repeat("x", registry.MaxMetadataBytes)}
		}, []string{"body.metadata"}},
		{"metadata not json", func(in *registry.AgentInput) { in.Metadata = map[string]any{"n": math.NaN()} }, []string{"body.metadata"}},
		// criticality
		{"criticality critical", func(in *registry.AgentInput) { in.Criticality = registry.CriticalityCritical }, nil},
		{"criticality best effort", func(in *registry.AgentInput) { in.Criticality = registry.CriticalityBestEffort }, nil},
		{"criticality unknown", func(in *registry.AgentInput) { in.Criticality = "urgent" }, []string{"body.criticality"}},
		{"criticality wrong case", func(in *registry.AgentInput) { in.Criticality = "Critical" }, []string{"body.criticality"}},
		// several at once, reported together in input order
		{"several", func(in *registry.AgentInput) {
			in.Name = ""
			in.Version = "x"
			in.Capabilities[1].OutputSchema = json.RawMessage(`{"$ref":"https://example.com/s.json"}`)
			in.Endpoint = "mailto:a@b"
			in.Labels = map[string]string{"ok": "fine", "b@d": "v"}
			in.Criticality = "x"
		}, []string{"body.name", "body.version", "body.capabilities[1].output_schema", "body.endpoint", `body.labels["b@d"]`, "body.criticality"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := validInput()
			tt.mutate(&in)
			_, err := in.Normalize()
			if tt.bad == nil {
				if err != nil {
					t.Fatalf("Normalize() = %v, want nil", err)
				}
				return
			}
			if diff := cmp.Diff(tt.bad, fieldNames(t, err)); diff != "" {
				t.Errorf("offending fields (-want +got):\n%s\nerr: %v", diff, err)
			}
		})
	}
}

// bigSchemas returns capabilities whose schemas, each within MaxSchemaBytes, total exactly n
// bytes.
func bigSchemas(n int) []registry.Capability {
	var caps []registry.Capability
	for i := 0; n > 0; i++ {
		size := min(n, registry.MaxSchemaBytes)
		if rest := n - size; rest > 0 && rest < 20 {
			size -= 20 // keep the last schema large enough to be valid JSON
		}
		n -= size
		doc := `{"description":"` + strings.Repeat("x", size-len(`{"description":""}`)) + `"}`
		caps = append(caps, registry.Capability{Name: fmt.Sprintf("c%d", i), InputSchema: json.RawMessage(doc)})
	}
	return caps
}

func TestNormalizeCopies(t *testing.T) {
	in := validInput()
	out, err := in.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	in.Labels["env"] = "changed"
	in.Metadata["owner"] = "changed"
	in.Capabilities[0].Name = "changed"
	if out.Labels["env"] != "prod" || out.Metadata["owner"] != "team-a" || out.Capabilities[0].Name != "text.summarize" {
		t.Errorf("Normalize output shares collections with its input: %+v", out)
	}
}

func TestCanonicalVersion(t *testing.T) {
	tests := []struct {
		in, want string // want "" means invalid
	}{
		{"1.2.3", "1.2.3"},
		{"v1.2.3", "1.2.3"},
		{"0.0.0", "0.0.0"},
		{"10.20.30", "10.20.30"},
		{"1.2.3-rc.1", "1.2.3-rc.1"},
		{"v1.2.3-0.3.7", "1.2.3-0.3.7"},
		{"1.2.3+build.5", "1.2.3"},
		{"1.2.3-beta+exp.sha.5114f85", "1.2.3-beta"},
		{"", ""},
		{"v", ""},
		{"1", ""},
		{"1.2", ""},
		{"v1.2", ""},
		{"1.2.3.4", ""},
		{"V1.2.3", ""},
		{"vv1.2.3", ""},
		{"01.2.3", ""},
		{"1.02.3", ""},
		{"1.2.3-01", ""},
		{"1.2.3-", ""},
		{"1.2.3+", ""},
		{"1.2.3-a..b", ""},
		{" 1.2.3", ""},
		{"1.2.3 ", ""},
		{"-1.2.3", ""},
	}
	for _, tt := range tests {
		got, err := registry.CanonicalVersion(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("CanonicalVersion(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("CanonicalVersion(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.2.3", "v1.2.3", 0},
		{"1.2.3+a", "1.2.3+b", 0},
		{"1.2.3", "1.10.0", -1},
		{"1.0.0-rc.1", "1.0.0", -1},
		{"1.0.0-alpha", "1.0.0-alpha.1", -1},
		{"2.0.0", "1.99.99", 1},
		{"bogus", "0.0.0", -1},
		{"0.0.0", "bogus", 1},
		{"bogus", "junk", 0},
	}
	for _, tt := range tests {
		if got := registry.CompareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestValidCapabilityName(t *testing.T) {
	tests := map[string]bool{
		"a":                       true,
		"text.summarize":          true,
		"billing.invoice_create":  true,
		"v2.image-resize.x9":      true,
		"9lives":                  true,
		strings.Repeat("a", 128):  true,
		"":                        false,
		strings.Repeat("a", 129):  false,
		"Text":                    false,
		".text":                   false,
		"text.":                   false,
		"text..summarize":         false,
		"text._x":                 false,
		"text.x-":                 false,
		"text/summarize":          false,
		"text summarize":          false,
		"téxt":                    false,
		"text.summarize?x=1":      false,
		"../../etc/passwd":        false,
		"text.summarize\x00":      false,
		"a.b.c.d.e.f.g.h.i.j.k.l": true,
	}
	for name, want := range tests {
		if got := registry.ValidCapabilityName(name); got != want {
			t.Errorf("ValidCapabilityName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestValidID(t *testing.T) {
	tests := map[string]bool{
		"agt_01jz8y3w6v6r3b5q8x9k2m4n7q":  true,
		"agt_01JZ8Y3W6V6R3B5Q8X9K2M4N7Q":  false,
		"ten_01jz8y3w6v6r3b5q8x9k2m4n7q":  false,
		"agt_01jz8y3w6v6r3b5q8x9k2m4n7":   false,
		"agt_81jz8y3w6v6r3b5q8x9k2m4n7q":  false,
		"agt_01jz8y3w6v6r3b5q8x9k2m4n7l":  false,
		"agt_01jz8y3w6v6r3b5q8x9k2m4n7qq": false,
		"":                                false,
	}
	for id, want := range tests {
		if got := registry.ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestEnumsValid(t *testing.T) {
	for c, want := range map[registry.Criticality]bool{"critical": true, "essential": true, "best_effort": true, "": false, "high": false} {
		if got := c.Valid(); got != want {
			t.Errorf("Criticality(%q).Valid() = %v", c, got)
		}
	}
	for s, want := range map[registry.Status]bool{"healthy": true, "stale": true, "zombie": true, "": false, "dead": false} {
		if got := s.Valid(); got != want {
			t.Errorf("Status(%q).Valid() = %v", s, got)
		}
	}
}

func TestAgentInputAndHasCapability(t *testing.T) {
	in, err := validInput().Normalize()
	if err != nil {
		t.Fatal(err)
	}
	a := registry.Agent{
		ID: "agt_x", TenantID: "ten_x", Name: in.Name, Version: in.Version, Capabilities: in.Capabilities,
		Endpoint: in.Endpoint, Labels: in.Labels, Metadata: in.Metadata, Criticality: in.Criticality,
		Status: registry.StatusStale, Revision: 4,
	}
	got := a.Input()
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("Input (-want +got):\n%s", diff)
	}
	// Input copies the collections: changing the copy leaves the agent alone.
	got.Labels["new"] = "x"
	got.Capabilities[0].Name = "changed"
	if _, ok := a.Labels["new"]; ok || a.Capabilities[0].Name != "text.summarize" {
		t.Error("Input shares collections with the agent")
	}
	if !a.HasCapability("text.translate") || a.HasCapability("text") || a.HasCapability("") {
		t.Error("HasCapability wrong")
	}
}
