package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nops-kernel/nops/internal/errs"
)

// checkStructureReference is checkStructure as it was first written, on encoding/json's
// tokenizer: slower, and plainly right, the reference the walk is checked against.
func checkStructureReference(b []byte, maxDepth int) error {
	if !json.Valid(b) {
		return errs.New(errs.Invalid, "event is not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type frame struct {
		object  bool
		wantKey bool
		keys    map[string]struct{}
	}
	var stack []*frame
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].wantKey = true
		}
	}
	first := true
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return errs.Wrap(errs.Invalid, err, "event is not valid JSON")
		}
		if len(stack) == 0 {
			if !first {
				return errs.New(errs.Invalid, "event must be one JSON object")
			}
			if d, ok := tok.(json.Delim); !ok || d != '{' {
				return errs.New(errs.Invalid, "event must be a JSON object")
			}
			first = false
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].wantKey {
			top := stack[n-1]
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:n-1]
				valueDone()
				continue
			}
			key, _ := tok.(string)
			if _, dup := top.keys[key]; dup {
				return errs.Field(key, "appears more than once in one object")
			}
			top.keys[key] = struct{}{}
			top.wantKey = false
			continue
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) >= maxDepth {
				return errs.New(errs.Invalid, "event nests deeper than %d levels", MaxDepth)
			}
			isObj := tok == json.Delim('{')
			f := &frame{object: isObj, wantKey: isObj}
			if isObj {
				f.keys = map[string]struct{}{}
			}
			stack = append(stack, f)
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
	return nil
}

// sameOutcome reports whether two results of a structure check agree: both nil, or both the same
// code naming the same fields.
func sameOutcome(a, b error) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	if a == nil {
		return true
	}
	ea, eb := errs.As(a), errs.As(b)
	if ea == nil || eb == nil || ea.Code != eb.Code || len(ea.Fields) != len(eb.Fields) {
		return false
	}
	for i := range ea.Fields {
		if ea.Fields[i].Name != eb.Fields[i].Name {
			return false
		}
	}
	return true
}

// structureSeeds are documents at the edges of what checkStructure decides.
var structureSeeds = []string{
	`{}`, ` {"a":1} `, `[]`, `"x"`, `1`, `null`, `{} {}`, `{"a":1,"a":2}`, `{"a":1,"\u0061":2}`,
	`{"a":{"a":1},"b":{"a":1}}`, `{"a":[{"a":1,"a":2}]}`, `{"a":"}","b":"{\"a\":1}","a":3}`,
	`{"a\"b":1,"a\u0022b":2}`, `{"\ud800":1,"\udc00":2}`, `{"x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	`{"x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`, `{"a":1,}`, `{"a" : [ 1 , 2 , {"b" : true , "b" : null} ] }`,
	manyMembers(40, false), manyMembers(40, true), `{"k0":1,"k1":1,"k2":1,"k3":1,"k4":1,"k5":1,"k6":1,"k7":1,"k8":1,"k9":1,"k10":1,"k11":1,"k12":1,"k13":1,"k14":1,"k15":1,"k16":{"k0":1},"k17":1,"k0":2}`,
}

// manyMembers is an object with n members, the last repeating the first when dup is set.
func manyMembers(n int, dup bool) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"m` + strings.Repeat("x", i) + `":{"m":1}`)
	}
	if dup {
		b.WriteString(`,"m":2`)
	}
	b.WriteByte('}')
	return b.String()
}

// TestCheckStructureAgreesWithReference: on the seeds, the walk decides as the tokenizer-based
// reference does, at the event's depth and at the data's.
func TestCheckStructureAgreesWithReference(t *testing.T) {
	for _, s := range structureSeeds {
		for _, depth := range []int{MaxDepth, MaxDepth - 1, 1} {
			got, want := checkStructure([]byte(s), depth), checkStructureReference([]byte(s), depth)
			if !sameOutcome(got, want) {
				t.Errorf("checkStructure(%s, %d) = %v, reference %v", s, depth, got, want)
			}
		}
	}
}

// FuzzCheckStructure: on any input, the walk decides as the reference does.
func FuzzCheckStructure(f *testing.F) {
	for _, s := range structureSeeds {
		f.Add([]byte(s), MaxDepth)
	}
	f.Fuzz(func(t *testing.T, b []byte, depth int) {
		depth = 1 + (depth%MaxDepth+MaxDepth)%MaxDepth
		got, want := checkStructure(b, depth), checkStructureReference(b, depth)
		if !sameOutcome(got, want) {
			t.Fatalf("checkStructure(%q, %d) = %v, reference %v", b, depth, got, want)
		}
	})
}

// checkMembers compares objectMembers with json.Unmarshal into a map, on a document in UTF-8
// that checkStructure accepts (what Parse hands it).
func checkMembers(t *testing.T, b []byte) {
	t.Helper()
	if !utf8.Valid(b) || checkStructure(b, MaxDepth) != nil {
		return
	}
	var want map[string]json.RawMessage
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("json.Unmarshal of an accepted document %q: %v", b, err)
	}
	got := objectMembers(b)
	if len(got) != len(want) {
		t.Fatalf("objectMembers(%q) has %d members, json.Unmarshal %d", b, len(got), len(want))
	}
	for name, raw := range want {
		if !bytes.Equal(got[name], raw) {
			t.Fatalf("objectMembers(%q)[%q] = %q, json.Unmarshal %q", b, name, got[name], raw)
		}
	}
}

// TestObjectMembersAgreesWithUnmarshal: on the seeds, objectMembers splits an object as
// json.Unmarshal does.
func TestObjectMembersAgreesWithUnmarshal(t *testing.T) {
	for _, s := range append(structureSeeds,
		`{"a":"x\"}","b" : [1,{"c":"]"}] , "c":{"d":{}} ,"e":-1.5e3,"f":true,"g":null,"h":"\\"}`,
		"{\n\t\"a\" :\r 1\n}", `{"\u00e9":1,"\ud83d\ude00":"\u0022"}`, `{"a":[]}`, `{"a":{}}`) {
		checkMembers(t, []byte(s))
	}
}

// FuzzObjectMembers: on any document checkStructure accepts, objectMembers splits it as
// json.Unmarshal does.
func FuzzObjectMembers(f *testing.F) {
	for _, s := range structureSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkMembers(t, b) })
}
