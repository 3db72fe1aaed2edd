package events_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// canonical returns the event of the first sample and its serialization decoded into a map, for
// tests to change and re-encode.
func canonical(t *testing.T) (events.Event, map[string]any) {
	t.Helper()
	e := newEvent(t, samples()[0])
	var m map[string]any
	if err := json.Unmarshal(mustMarshal(t, e), &m); err != nil {
		t.Fatalf("decode canonical event: %v", err)
	}
	return e, m
}

func encode(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

func agentOf(m map[string]any) map[string]any {
	return m["data"].(map[string]any)["agent"].(map[string]any)
}

func TestMarshalJSON(t *testing.T) {
	e := newEvent(t, samples()[1]) // minimal agent: a short, stable document
	e.ID = "evt_01jq7x3k9m0000000000000000"
	e.Extensions = map[string]any{"zone": "b", "attempt": 2}
	got := string(mustMarshal(t, e))
	want := `{"specversion":"1.0","id":"evt_01jq7x3k9m0000000000000000",` +
		`"source":"/nops/tenants/` + tenantA + `","type":"nops.agent.registered.v1",` +
		`"subject":"agents/` + agentID + `","time":"2025-03-14T15:09:26.535897932Z",` +
		`"datacontenttype":"application/json","dataschema":"urn:nops:events:nops.agent.registered.v1",` +
		`"tenant":"` + tenantA + `","traceparent":"` + traceparnt + `","attempt":2,"zone":"b",` +
		`"data":{"agent":{"id":"` + agentID + `","tenant":"` + tenantA + `","name":"a","version":"0.1.0",` +
		`"endpoint":"http://127.0.0.1:9000","criticality":"best_effort","status":"zombie","revision":1,` +
		`"created_at":"2025-03-14T15:09:26.535897932Z","updated_at":"2025-03-14T15:09:26.535897932Z"}}}`
	if got != want {
		t.Errorf("MarshalJSON =\n%s\nwant\n%s", got, want)
	}
	viaStdlib, err := json.Marshal(e)
	if err != nil || string(viaStdlib) != want {
		t.Errorf("json.Marshal = %s, %v; want the same document", viaStdlib, err)
	}
}

// TestMarshalJSONEscapesLikeEncodingJSON: attributes are written as encoding/json writes the
// strings (HTML characters, quotes, backslashes, non-ASCII, U+2028), and read back unchanged.
func TestMarshalJSONEscapesLikeEncodingJSON(t *testing.T) {
	for _, subject := range []string{
		"plain/ascii-1.2_3", `a<b>&c`, `quote " and \ backslash`, "caf\u00e9 \u2028 \u2029 \U0001F600", "~ { } [ ]",
	} {
		e := events.Event{
			ID: "evt_1", Source: "/nops/tenants/" + tenantA, Type: "nops.other.thing.v1", Subject: subject,
			Time: base, DataContentType: "application/json", DataSchema: "urn:nops:events:nops.other.thing.v1",
			Data: json.RawMessage(`{"a": 1}`), Tenant: tenantA,
		}
		b := mustMarshal(t, e)
		quoted, _ := json.Marshal(subject)
		if !strings.Contains(string(b), `"subject":`+string(quoted)+`,`) {
			t.Errorf("subject %q written as %s, want %s", subject, b, quoted)
		}
		back, err := events.Parse(b)
		if err != nil || back.Subject != subject || string(back.Data) != `{"a":1}` {
			t.Errorf("subject %q read back as %q, data %s (%v)", subject, back.Subject, back.Data, err)
		}
	}
}

func TestMarshalJSONRejectsOversizedEvent(t *testing.T) {
	e := newEvent(t, samples()[0])
	e.Type = "nops.agent.bulky.v1" // outside the catalogue: any object is valid data
	e.DataSchema = events.DataSchemaURI(e.Type)
	e.Data = json.RawMessage(`{"blob":"` + strings.Repeat("x", events.MaxEventSize) + `"}`)
	if _, err := e.MarshalJSON(); !errs.Is(err, errs.TooLarge) {
		t.Errorf("MarshalJSON of an oversized event: %v, want errs.TooLarge", err)
	}
}

// sameJSON compares raw JSON by meaning, so a payload re-encoded from a map (members sorted)
// equals the original.
var sameJSON = cmp.Comparer(func(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	return cmp.Equal(x, y)
})

func TestParseAccepts(t *testing.T) {
	same := func(e events.Event) events.Event { return e }
	tests := []struct {
		name   string
		change func(m map[string]any)
		want   func(e events.Event) events.Event
	}{
		{"canonical", func(map[string]any) {}, same},
		{"null optional extension", func(m map[string]any) { m["traceparent"] = nil }, func(e events.Event) events.Event {
			e.TraceParent = ""
			return e
		}},
		{"null unknown extension", func(m map[string]any) { m["region"] = nil }, same},
		{"absent datacontenttype", func(m map[string]any) { delete(m, "datacontenttype") }, same},
		{"null datacontenttype", func(m map[string]any) { m["datacontenttype"] = nil }, same},
		{"data_base64", func(m map[string]any) {
			raw, _ := json.Marshal(m["data"])
			delete(m, "data")
			m["data_base64"] = base64.StdEncoding.EncodeToString(raw)
		}, same},
		{"null data_base64 beside data", func(m map[string]any) { m["data_base64"] = nil }, same},
		{"time with an offset", func(m map[string]any) { m["time"] = "2025-03-14T17:09:26.535897932+02:00" }, same},
		{"time in lower case", func(m map[string]any) { m["time"] = "2025-03-14t15:09:26.535897932z" }, same},
		{"extensions", func(m map[string]any) { m["emoji"] = "😀"; m["n"] = -2147483648 }, func(e events.Event) events.Event {
			e.Extensions = map[string]any{"emoji": "😀", "n": int32(-2147483648)}
			return e
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, m := canonical(t)
			tt.change(m)
			got, err := events.Parse(encode(t, m))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want(e), got, sameJSON); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseAcceptsLayout(t *testing.T) {
	e, _ := canonical(t)
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, mustMarshal(t, e), "", "\t"); err != nil {
		t.Fatal(err)
	}
	got, err := events.Parse(pretty.Bytes())
	if err != nil {
		t.Fatalf("Parse(indented): %v", err)
	}
	if diff := cmp.Diff(e, got); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
	var viaStdlib events.Event
	if err := json.Unmarshal(pretty.Bytes(), &viaStdlib); err != nil {
		t.Fatalf("json.Unmarshal: %v", err)
	}
	if diff := cmp.Diff(e, viaStdlib); diff != "" {
		t.Errorf("json.Unmarshal (-want +got):\n%s", diff)
	}
}

func TestParseToleratesNewPayloadFieldsAndTypes(t *testing.T) {
	t.Run("unknown payload member", func(t *testing.T) {
		e, m := canonical(t)
		agentOf(m)["region"] = "eu"
		got, err := events.Parse(encode(t, m))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		p, err := got.Payload()
		if err != nil {
			t.Fatalf("Payload: %v", err)
		}
		want, _ := e.Payload()
		if diff := cmp.Diff(want, p); diff != "" {
			t.Errorf("payload (-want +got):\n%s", diff)
		}
	})
	t.Run("type outside the catalogue", func(t *testing.T) {
		_, m := canonical(t)
		m["type"] = "nops.agent.teleported.v2"
		m["dataschema"] = "urn:nops:events:nops.agent.teleported.v2"
		m["data"] = map[string]any{"anything": []any{1, "two"}}
		got, err := events.Parse(encode(t, m))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if got.Type != "nops.agent.teleported.v2" || string(got.Data) != `{"anything":[1,"two"]}` {
			t.Errorf("Parse = %+v", got)
		}
	})
}

// parseRejection is an event Parse refuses: the canonical event changed by change, refused
// with an error naming field ("" for none).
type parseRejection struct {
	name   string
	change func(m map[string]any)
	field  string
}

// parseRejections are TestParseRejects's cases; TestParseAttributesRejects reuses them.
func parseRejections() []parseRejection {
	type tc = parseRejection
	var tests []tc
	for _, attr := range []string{"specversion", "id", "source", "type", "subject", "time", "dataschema", "tenant", "data"} {
		tests = append(tests,
			tc{"without " + attr, func(m map[string]any) { delete(m, attr) }, attr},
			tc{"null " + attr, func(m map[string]any) { m[attr] = nil }, attr},
		)
	}
	tests = append(tests, []tc{
		{"specversion 0.3", func(m map[string]any) { m["specversion"] = "0.3" }, "specversion"},
		{"specversion a number", func(m map[string]any) { m["specversion"] = 1.0 }, "specversion"},
		{"id a number", func(m map[string]any) { m["id"] = 7 }, "id"},
		{"empty id", func(m map[string]any) { m["id"] = "" }, "id"},
		{"empty source", func(m map[string]any) { m["source"] = "" }, "source"},
		{"source with a space", func(m map[string]any) { m["source"] = "/nops/tenants/a b" }, "source"},
		{"source with a colon in the first segment", func(m map[string]any) { m["source"] = "1a:b" }, "source"},
		{"source with a bad escape", func(m map[string]any) { m["source"] = "/nops/%zz" }, "source"},
		{"source of another tenant", func(m map[string]any) { m["source"] = "/nops/tenants/ten_other" }, "source"},
		{"foreign type", func(m map[string]any) { m["type"] = "com.example.created" }, "type"},
		{"type without version", func(m map[string]any) { m["type"] = "nops.agent.registered" }, "type"},
		{"type version 0", func(m map[string]any) { m["type"] = "nops.agent.registered.v0" }, "type"},
		{"subject of another agent", func(m map[string]any) { m["subject"] = "agents/agt_other" }, "subject"},
		{"time without T", func(m map[string]any) { m["time"] = "2025-03-14 15:09:26Z" }, "time"},
		{"time without offset", func(m map[string]any) { m["time"] = "2025-03-14T15:09:26" }, "time"},
		{"time a number", func(m map[string]any) { m["time"] = 1741964966 }, "time"},
		{"time with a decimal comma", func(m map[string]any) { m["time"] = "2025-03-14T15:09:26,5Z" }, "time"},
		{"time with hour 24", func(m map[string]any) { m["time"] = "2025-03-14T24:00:00Z" }, "time"},
		{"datacontenttype xml", func(m map[string]any) { m["datacontenttype"] = "application/xml" }, "datacontenttype"},
		{"dataschema relative", func(m map[string]any) { m["dataschema"] = "api/events/nops.agent.registered.v1.json" }, "dataschema"},
		{"dataschema of another type", func(m map[string]any) { m["dataschema"] = "urn:nops:events:nops.agent.updated.v1" }, "dataschema"},
		{"tenant with a dot", func(m map[string]any) { m["tenant"] = "ten.a" }, "tenant"},
		{"tenant a number", func(m map[string]any) { m["tenant"] = 1 }, "tenant"},
		{"tenant of another tenant", func(m map[string]any) {
			m["tenant"], m["source"] = "ten_other", "/nops/tenants/ten_other"
		}, "tenant"},
		{"bad traceparent", func(m map[string]any) { m["traceparent"] = "00-xyz" }, "traceparent"},
		{"upper-case attribute", func(m map[string]any) { m["Region"] = "eu" }, "Region"},
		{"attribute of 21 characters", func(m map[string]any) { m["abcdefghijklmnopqrstu"] = "x" }, "abcdefghijklmnopqrstu"},
		{"attribute with underscore", func(m map[string]any) { m["trace_id"] = "x" }, "trace_id"},
		{"extension an object", func(m map[string]any) { m["meta"] = map[string]any{} }, "meta"},
		{"extension an array", func(m map[string]any) { m["tags"] = []any{"a"} }, "tags"},
		{"extension a fraction", func(m map[string]any) { m["ratio"] = 0.5 }, "ratio"},
		{"extension beyond int32", func(m map[string]any) { m["big"] = 2147483648 }, "big"},
		{"extension with a control character", func(m map[string]any) { m["note"] = "bell\u0007" }, "note"},
		{"extension with a C1 control character", func(m map[string]any) { m["note"] = "next\u0085line" }, "note"},
		{"extension with a noncharacter", func(m map[string]any) { m["note"] = "\ufffe" }, "note"},
		{"data and data_base64", func(m map[string]any) { m["data_base64"] = "e30=" }, "data_base64"},
		{"data_base64 not base64", func(m map[string]any) { delete(m, "data"); m["data_base64"] = "not base64!" }, "data_base64"},
		{"data_base64 a number", func(m map[string]any) { delete(m, "data"); m["data_base64"] = 5 }, "data_base64"},
		{"data_base64 of an array", func(m map[string]any) { delete(m, "data"); m["data_base64"] = "W10=" }, "data"},
		{"data_base64 of text", func(m map[string]any) { delete(m, "data"); m["data_base64"] = "aGVsbG8=" }, "data"},
		{"data a string", func(m map[string]any) { m["data"] = `{"agent":{}}` }, "data"},
		{"data an array", func(m map[string]any) { m["data"] = []any{} }, "data"},
		{"payload without agent id", func(m map[string]any) { delete(agentOf(m), "id") }, "data.agent.id"},
		{"payload member in another case", func(m map[string]any) {
			d := m["data"].(map[string]any)
			d["Agent"] = d["agent"]
			delete(d, "agent")
		}, "data.Agent"},
		{"nested payload member in another case", func(m map[string]any) { agentOf(m)["ID"] = "agt_other" }, "data.agent.ID"},
		{"payload time not in UTC", func(m map[string]any) { agentOf(m)["created_at"] = "2025-03-14T16:09:26+01:00" }, "data.agent.created_at"},
		{"payload field of the wrong type", func(m map[string]any) { agentOf(m)["revision"] = "7" }, ""},
	}...)
	return tests
}

func TestParseRejects(t *testing.T) {
	for _, tt := range parseRejections() {
		t.Run(tt.name, func(t *testing.T) {
			_, m := canonical(t)
			tt.change(m)
			_, err := events.Parse(encode(t, m))
			if got := fieldOf(t, err); got != tt.field {
				t.Errorf("Parse error %v names %q, want %q", err, got, tt.field)
			}
		})
	}
}

// rawRejection is a serialized event Parse refuses with an error of code.
type rawRejection struct {
	name  string
	input string
	code  errs.Code
}

// rawRejections are TestParseRejectsRaw's cases (but the paired surrogates, accepted);
// TestParseAttributesRejects reuses them.
func rawRejections(t *testing.T) []rawRejection {
	good := string(mustMarshal(t, newEvent(t, samples()[0])))
	// replaceOnce swaps the first occurrence of old in the canonical event, failing the test if
	// there is none, so a change of the serialization cannot turn a case into a no-op.
	replaceOnce := func(old, new string) string {
		t.Helper()
		if !strings.Contains(good, old) {
			t.Fatalf("canonical event lacks %q", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	deep := `{"n":` + strings.Repeat("[", events.MaxDepth) + strings.Repeat("]", events.MaxDepth) + `}`
	return []rawRejection{
		{"empty", "", errs.Invalid},
		{"not JSON", "{", errs.Invalid},
		{"an array", "[" + good + "]", errs.Invalid},
		{"two objects", good + good, errs.Invalid},
		{"trailing text", good + "x", errs.Invalid},
		{"repeated attribute", replaceOnce(`"specversion":"1.0",`, `"specversion":"1.0","tenant":"ten_other",`), errs.Invalid},
		{"repeated payload member", replaceOnce(`"agent":{`, `"agent":{"name":"x",`), errs.Invalid},
		{"invalid UTF-8", replaceOnce(`"name":"summariser"`, "\"name\":\"summ\xffariser\""), errs.Invalid},
		{"unpaired high surrogate", replaceOnce(`"specversion":"1.0",`, `"specversion":"1.0","note":"\ud800",`), errs.Invalid},
		{"unpaired low surrogate", replaceOnce(`"specversion":"1.0",`, `"specversion":"1.0","note":"a\udc00",`), errs.Invalid},
		{"reversed surrogates", replaceOnce(`"specversion":"1.0",`, `"specversion":"1.0","note":"\ude00\ud83d",`), errs.Invalid},
		{"escaped control character", replaceOnce(`"specversion":"1.0",`, `"specversion":"1.0","note":"\u0000",`), errs.Invalid},
		{"too deep", replaceOnce(`"data":{`, `"deep":0,"data":{"x":`+deep+`,`), errs.Invalid},
		{"too large", good[:len(good)-2] + `,"pad":"` + strings.Repeat(" ", events.MaxEventSize) + `"}}`, errs.TooLarge},
	}
}

func TestParseRejectsRaw(t *testing.T) {
	good := string(mustMarshal(t, newEvent(t, samples()[0])))
	replaceOnce := func(old, new string) string {
		t.Helper()
		if !strings.Contains(good, old) {
			t.Fatalf("canonical event lacks %q", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	for _, tt := range rawRejections(t) {
		t.Run(tt.name, func(t *testing.T) {
			_, err := events.Parse([]byte(tt.input))
			if !errs.Is(err, tt.code) {
				t.Errorf("Parse: %v, want %s", err, tt.code)
			}
		})
	}
	t.Run("paired surrogates", func(t *testing.T) {
		e, err := events.Parse([]byte(replaceOnce(`"specversion":"1.0",`, `"specversion":"1.0","note":"\ud83d\ude00 and \\ud800",`)))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if got := e.Extensions["note"]; got != `😀 and \ud800` {
			t.Errorf("note = %q", got)
		}
	})
}

func TestParseTime(t *testing.T) {
	_, m := canonical(t)
	m["time"] = "2025-03-14T15:09:26Z"
	e, err := events.Parse(encode(t, m))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if want := base.Truncate(time.Second); !e.Time.Equal(want) || e.Time.Location() != time.UTC {
		t.Errorf("Time = %v, want %v in UTC", e.Time, want)
	}
}

// TestTraceParentAttr: the traceparent of MarshalJSON's output is found without decoding it,
// present or absent (and not taken from data); other layouts are left to the caller.
func TestTraceParentAttr(t *testing.T) {
	s := samples()[0]
	for _, tp := range []string{traceparnt, ""} {
		e, err := events.New(s.typ, s.tenant, s.subject, s.payload, base, tp)
		if err != nil {
			t.Fatal(err)
		}
		e.Extensions = map[string]any{"zone": `a,"traceparent":"x"`}
		got, ok := events.TraceParentAttr(mustMarshal(t, e))
		if !ok || got != tp {
			t.Errorf("TraceParentAttr of an event with traceparent %q = %q, %v", tp, got, ok)
		}
	}
	for _, other := range []string{
		`{"id":"e","traceparent":"` + traceparnt + `","data":{}}`,
		`{"specversion":"1.0","id":"e","traceparent":"` + traceparnt + `"}`,
		`{"specversion":"1.0","id":"e","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u0031","data":{}}`,
		`not json`,
	} {
		if got, ok := events.TraceParentAttr([]byte(other)); ok {
			t.Errorf("TraceParentAttr(%s) = %q, true; want the caller to decode it", other, got)
		}
	}
}
