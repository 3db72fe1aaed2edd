package events_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/events"
)

// TestPayloadJSONNamesArePlain: every field of every catalogue payload, at every depth, has an
// explicit JSON name of a-z, 0-9 and '_'. Parse relies on it to skip the spelling check of data
// whose member names are all of that form (a member in another case cannot bind to a field then).
func TestPayloadJSONNamesArePlain(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var walk func(typ reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Array || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ == reflect.TypeFor[time.Time]() || seen[typ] {
			return
		}
		seen[typ] = true
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
				t.Errorf("%s.%s: JSON name %q is not made of a-z, 0-9 and '_'", path, f.Name, name)
			}
			walk(f.Type, path+"."+f.Name)
		}
	}
	types := map[events.Type]bool{}
	for _, s := range samples() {
		types[s.typ] = true
		walk(reflect.TypeOf(s.payload), string(s.typ))
	}
	for _, typ := range events.Catalogue() {
		if !types[typ] {
			t.Errorf("no sample of %s", typ)
		}
	}
}

// TestParseRejectsFoldedNames: a payload member that encoding/json would bind to a field only by
// case folding — here a Kelvin sign for "k", which no lower-casing of ASCII catches — is refused,
// and one spelled with an escape that decodes to the exact name is read.
func TestParseRejectsFoldedNames(t *testing.T) {
	var s sample
	for _, x := range samples() {
		if x.typ == events.TypeAgentBreakerChanged && !strings.Contains(x.name, "minimal") {
			s = x
		}
	}
	good := string(mustMarshal(t, newEvent(t, s)))
	if !strings.Contains(good, `"kernel":`) {
		t.Fatalf("sample without a kernel member: %s", good)
	}
	folded := strings.Replace(good, `"kernel":`, "\"\u212aernel\":", 1)
	_, err := events.Parse([]byte(folded))
	if got := fieldOf(t, err); got != "data.\u212aernel" {
		t.Errorf("Parse of a Kelvin-sign member: %v (field %q), want data.\u212aernel", err, got)
	}
	escaped := strings.Replace(good, `"kernel":`, `"\u006bernel":`, 1)
	if e, err := events.Parse([]byte(escaped)); err != nil {
		t.Errorf("Parse of an escaped exact member: %v", err)
	} else if p, err := e.Payload(); err != nil || p.(events.AgentBreakerChanged).Kernel == "" {
		t.Errorf("payload %+v, %v", p, err)
	}
}
