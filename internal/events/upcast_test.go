package events_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// The widget types exist only in this test: a payload that renamed a member in v2 ("colour" →
// "color") and gained one, filled from the envelope's time, in v3.
const (
	widgetV1 events.Type = "nops.widget.made.v1"
	widgetV2 events.Type = "nops.widget.made.v2"
	widgetV3 events.Type = "nops.widget.made.v3"
)

func widgetUpcasters(t *testing.T) *events.Upcasters {
	t.Helper()
	u := events.NewUpcasters()
	if err := u.Register(widgetV1, func(e events.Event) (json.RawMessage, error) {
		var v1 struct {
			Colour string `json:"colour"`
			Size   int    `json:"size"`
		}
		if err := json.Unmarshal(e.Data, &v1); err != nil {
			return nil, err
		}
		if v1.Colour == "" {
			return nil, errors.New("a v1 widget has a colour")
		}
		return json.Marshal(map[string]any{"color": v1.Colour, "size": v1.Size})
	}); err != nil {
		t.Fatal(err)
	}
	if err := u.Register(widgetV2, func(e events.Event) (json.RawMessage, error) {
		var v2 map[string]any
		if err := json.Unmarshal(e.Data, &v2); err != nil {
			return nil, err
		}
		v2["made_at"] = e.Time
		return json.Marshal(v2)
	}); err != nil {
		t.Fatal(err)
	}
	return u
}

// envelope is a serialized event of type typ with data.
func envelope(typ events.Type, data string) []byte {
	return fmt.Appendf(nil, `{"specversion":"1.0","id":"evt_1","source":%q,"type":%q,"subject":"widgets/w1",`+
		`"time":"2025-03-14T15:09:26Z","dataschema":%q,"tenant":%q,"data":%s}`,
		events.TenantSource(tenantA), typ, events.DataSchemaURI(typ), tenantA, data)
}

func TestUpcastChain(t *testing.T) {
	u := widgetUpcasters(t)
	for _, tc := range []struct {
		name string
		typ  events.Type
		data string
		want string
	}{
		{"v1 through v2 to v3", widgetV1, `{"colour": "red", "size": 3}`, `{"color":"red","made_at":"2025-03-14T15:09:26Z","size":3}`},
		{"v2 to v3", widgetV2, `{"color":"blue","size":1}`, `{"color":"blue","made_at":"2025-03-14T15:09:26Z","size":1}`},
		{"v3 as is", widgetV3, `{"color": "green"}`, `{"color":"green"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := events.Parse(envelope(tc.typ, tc.data))
			if err != nil {
				t.Fatal(err)
			}
			up, err := u.Upcast(e)
			if err != nil {
				t.Fatal(err)
			}
			if up.Type != widgetV3 || up.DataSchema != events.DataSchemaURI(widgetV3) || string(up.Data) != tc.want {
				t.Errorf("upcast to %s (%s) %s, want %s %s", up.Type, up.DataSchema, up.Data, widgetV3, tc.want)
			}
			// Every other attribute is the event's as produced; the input is not modified.
			up.Type, up.DataSchema, up.Data = e.Type, e.DataSchema, e.Data
			if diff := cmp.Diff(e, up); diff != "" {
				t.Errorf("attributes changed (-before +after):\n%s", diff)
			}
			if err := up.Validate(); err != nil {
				t.Errorf("the event as produced no longer validates: %v", err)
			}
		})
	}
	for in, want := range map[events.Type]events.Type{widgetV1: widgetV3, widgetV2: widgetV3, widgetV3: widgetV3, events.TypeAgentRegistered: events.TypeAgentRegistered} {
		if got := u.Latest(in); got != want {
			t.Errorf("Latest(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestUpcastFailures(t *testing.T) {
	u := widgetUpcasters(t)
	bad := events.NewUpcasters()
	for typ, out := range map[events.Type]string{"nops.odd.array.v1": `[1]`, "nops.odd.broken.v1": `{"a":`, "nops.odd.deep.v1": deep(events.MaxDepth)} {
		if err := bad.Register(typ, func(events.Event) (json.RawMessage, error) { return json.RawMessage(out), nil }); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		u    *events.Upcasters
		typ  events.Type
		data string
	}{
		{"the upcaster refuses", u, widgetV1, `{"size": 3}`},
		{"not an object", bad, "nops.odd.array.v1", `{}`},
		{"not JSON", bad, "nops.odd.broken.v1", `{}`},
		{"too deep", bad, "nops.odd.deep.v1", `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := events.Parse(envelope(tc.typ, tc.data))
			if err != nil {
				t.Fatal(err)
			}
			_, err = tc.u.Upcast(e)
			if e := errs.As(err); e == nil || e.Code != errs.Invalid || len(e.Fields) == 0 || e.Fields[0].Name != "data" {
				t.Fatalf("error %v, want an invalid one naming data", err)
			}
		})
	}
}

func deep(n int) string {
	s := "1"
	for range n {
		s = `{"a":` + s + `}`
	}
	return s
}

func TestUpcastersRegister(t *testing.T) {
	u := events.NewUpcasters()
	noop := func(e events.Event) (json.RawMessage, error) { return e.Data, nil }
	if err := u.Register(widgetV1, noop); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		from events.Type
		fn   events.UpcastFunc
	}{
		{"twice", widgetV1, noop},
		{"invalid type", "widget.made.v1", noop},
		{"no version", "nops.widget.made", noop},
		{"nil function", widgetV2, nil},
		{"no next version", "nops.widget.made.v999999999", noop},
	} {
		if err := u.Register(tc.from, tc.fn); err == nil {
			t.Errorf("%s: registered", tc.name)
		}
	}
}

func TestNextVersion(t *testing.T) {
	for in, want := range map[events.Type]events.Type{
		"nops.agent.registered.v1": "nops.agent.registered.v2",
		"nops.a.b_c.v9":            "nops.a.b_c.v10",
		"nops.a.b.v99999999":       "nops.a.b.v100000000",
		"nops.a.b.v999999999":      "",
		"nops.a.b.v0":              "",
		"nops.a.b":                 "",
		"":                         "",
	} {
		got, ok := events.NextVersion(in)
		if got != want || ok != (want != "") {
			t.Errorf("NextVersion(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

// TestCurrentEventsUpcastToThemselves: with the kernel's upcasters, an event of a catalogue type
// is its own newest version.
func TestCurrentEventsUpcastToThemselves(t *testing.T) {
	for _, s := range samples() {
		e, err := events.New(s.typ, s.tenant, s.subject, s.payload, base, "")
		if err != nil {
			t.Fatal(err)
		}
		up, err := e.Upcast()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(e, up); diff != "" {
			t.Errorf("%s: upcast changed the event (-want +got):\n%s", s.name, diff)
		}
	}
	if _, err := (events.Event{}).Upcast(); err == nil {
		t.Error("an invalid event was upcast")
	}
}
