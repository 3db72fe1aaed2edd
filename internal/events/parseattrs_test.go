package events_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// sameAttributes compares what ParseAttributes returns with what Parse returns for one input:
// every attribute equal, and the data the same JSON text once compacted (Parse compacts it).
func sameAttributes(t testing.TB, input []byte, parsed, attrs events.Event) {
	t.Helper()
	var compact bytes.Buffer
	if err := json.Compact(&compact, attrs.Data); err != nil {
		t.Fatalf("ParseAttributes(%s): data %q is not JSON: %v", input, attrs.Data, err)
	}
	if !bytes.Equal(compact.Bytes(), parsed.Data) {
		t.Fatalf("ParseAttributes(%s): data %s, Parse's %s", input, compact.Bytes(), parsed.Data)
	}
	attrs.Data, parsed.Data = nil, nil
	if diff := cmp.Diff(parsed, attrs); diff != "" {
		t.Fatalf("ParseAttributes(%s) attributes differ from Parse's (-Parse +ParseAttributes):\n%s", input, diff)
	}
}

// acceptedInputs are events Parse accepts: every sample, and the first in every layout and
// attribute form TestParseAccepts covers.
func acceptedInputs(t *testing.T) map[string][]byte {
	in := map[string][]byte{}
	for _, s := range samples() {
		in[s.name] = mustMarshal(t, newEvent(t, s))
	}
	changes := map[string]func(m map[string]any){
		"null traceparent":         func(m map[string]any) { m["traceparent"] = nil },
		"null unknown extension":   func(m map[string]any) { m["region"] = nil },
		"absent datacontenttype":   func(m map[string]any) { delete(m, "datacontenttype") },
		"null datacontenttype":     func(m map[string]any) { m["datacontenttype"] = nil },
		"null data_base64 by data": func(m map[string]any) { m["data_base64"] = nil },
		"time with an offset":      func(m map[string]any) { m["time"] = "2025-03-14T17:09:26.535897932+02:00" },
		"time in lower case":       func(m map[string]any) { m["time"] = "2025-03-14t15:09:26.535897932z" },
		"extensions":               func(m map[string]any) { m["emoji"] = "😀"; m["n"] = -2147483648; m["ok"] = true },
		"escaped attribute": func(m map[string]any) {
			m["note"] = "<tag> & \u00e9"
		},
		"data_base64": func(m map[string]any) {
			raw, _ := json.Marshal(m["data"])
			delete(m, "data")
			m["data_base64"] = base64.StdEncoding.EncodeToString(raw)
		},
	}
	for name, change := range changes {
		_, m := canonical(t)
		change(m)
		in[name] = encode(t, m)
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, in[samples()[0].name], "", "\t"); err != nil {
		t.Fatal(err)
	}
	in["indented"] = pretty.Bytes()
	in["escaped member name"] = []byte(strings.Replace(string(in[samples()[0].name]), `"tenant":`, `"\u0074enant":`, 1))
	return in
}

// TestParseAttributesAgreesWithParse: on events Parse accepts, ParseAttributes accepts them with
// the same attributes.
func TestParseAttributesAgreesWithParse(t *testing.T) {
	for name, input := range acceptedInputs(t) {
		t.Run(name, func(t *testing.T) {
			parsed, err := events.Parse(input)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			attrs, err := events.ParseAttributes(input)
			if err != nil {
				t.Fatalf("ParseAttributes: %v", err)
			}
			sameAttributes(t, input, parsed, attrs)
		})
	}
}

// dataOnly are the cases of parseRejections and rawRejections that Parse refuses for their data
// or for the data's agreement with the attributes, which ParseAttributes does not read.
var dataOnly = []string{
	"subject of another agent", "tenant of another tenant", // the payload's subject and tenant
	"payload without agent id", "payload member in another case",
	"nested payload member in another case", "payload time not in UTC", "payload field of the wrong type",
	"repeated payload member", "too deep", // the data's structure
}

// TestParseAttributesRejects: an event with a bad attribute, a bad envelope or no data object is
// refused by ParseAttributes as by Parse, naming the same member; one Parse refuses for its data
// alone is accepted.
func TestParseAttributesRejects(t *testing.T) {
	seen := map[string]bool{}
	for _, tt := range parseRejections() {
		t.Run(tt.name, func(t *testing.T) {
			_, m := canonical(t)
			tt.change(m)
			input := encode(t, m)
			_, perr := events.Parse(input)
			_, err := events.ParseAttributes(input)
			if slices.Contains(dataOnly, tt.name) {
				seen[tt.name] = true
				if err != nil {
					t.Fatalf("ParseAttributes refused an event Parse refuses for its data only: %v", err)
				}
				return
			}
			if got, want := fieldOf(t, err), fieldOf(t, perr); got != want {
				t.Errorf("ParseAttributes error %v names %q, Parse's %v names %q", err, got, perr, want)
			}
		})
	}
	for _, tt := range rawRejections(t) {
		t.Run("raw "+tt.name, func(t *testing.T) {
			_, err := events.ParseAttributes([]byte(tt.input))
			if slices.Contains(dataOnly, tt.name) {
				seen[tt.name] = true
				if err != nil {
					t.Fatalf("ParseAttributes refused an event Parse refuses for its data only: %v", err)
				}
				return
			}
			if !errs.Is(err, tt.code) {
				t.Errorf("ParseAttributes: %v, want %s", err, tt.code)
			}
		})
	}
	for _, name := range dataOnly {
		if !seen[name] {
			t.Errorf("no case %q: the list of data-only cases is stale", name)
		}
	}
}

// TestParseAttributesDataBase64: decoded data_base64 must be one valid JSON object in UTF-8,
// as Parse requires, even though ParseAttributes does not decode it further.
func TestParseAttributesDataBase64(t *testing.T) {
	for _, tt := range []struct{ name, data string }{
		{"not JSON", `{"a":`},
		{"two objects", `{}{}`},
		{"not UTF-8", "{\"a\":\"\xff\"}"},
		{"an array", `[]`},
		{"empty", ``},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, m := canonical(t)
			delete(m, "data")
			m["data_base64"] = base64.StdEncoding.EncodeToString([]byte(tt.data))
			input := encode(t, m)
			_, perr := events.Parse(input)
			_, err := events.ParseAttributes(input)
			if got, want := fieldOf(t, err), fieldOf(t, perr); got != "data" || want != "data" {
				t.Errorf("ParseAttributes names %q (%v), Parse %q (%v); want data", got, err, want, perr)
			}
		})
	}
}

// FuzzParseAttributes feeds ParseAttributes and Parse the same bytes (seeds: FuzzParseEvent's
// corpus and the samples). ParseAttributes must never panic, must fail only with errs.Invalid
// or errs.TooLarge, must accept whatever Parse accepts with the same attributes, and must refuse
// nothing Parse accepts.
func FuzzParseAttributes(f *testing.F) {
	for _, s := range samples() {
		f.Add(mustMarshal(f, newEvent(f, s)))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		attrs, err := events.ParseAttributes(b)
		if err != nil {
			if c := errs.CodeOf(err); c != errs.Invalid && c != errs.TooLarge {
				t.Fatalf("ParseAttributes failed with code %s: %v", c, err)
			}
		}
		parsed, perr := events.Parse(b)
		if perr != nil {
			return
		}
		if err != nil {
			t.Fatalf("ParseAttributes refused an event Parse accepts: %v", err)
		}
		sameAttributes(t, b, parsed, attrs)
	})
}
