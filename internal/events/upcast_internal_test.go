package events

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// TestKernelUpcasters checks the kernel's own table: each upcaster starts at a version the kernel
// no longer emits, its chain ends at a catalogue type, and the schema of the old version is kept
// so that inbound events of it still validate.
func TestKernelUpcasters(t *testing.T) {
	for _, s := range kernelUpcasts {
		if s.from.Known() {
			t.Errorf("%s has an upcaster but is in the catalogue: the kernel emits only the newest version", s.from)
		}
		if latest := kernelUpcasters.Latest(s.from); !latest.Known() {
			t.Errorf("%s upcasts to %s, not a catalogue type", s.from, latest)
		}
		if _, err := os.Stat("../../api/events/" + SchemaFile(s.from)); err != nil {
			t.Errorf("the schema of %s is gone: %v", s.from, err)
		}
	}
	for _, c := range Catalogue() {
		if latest := kernelUpcasters.Latest(c); latest != c {
			t.Errorf("catalogue type %s upcasts to %s", c, latest)
		}
	}
}

// TestPayloadOfAnOlderVersion: a consumer decoding an old event gets the payload of the newest
// version, checked like a current one. The older type here is made up for the test (add maps it
// onto a catalogue type the way Register maps v1 onto v2).
func TestPayloadOfAnOlderVersion(t *testing.T) {
	const old Type = "nops.agent.beat.v1"
	u := NewUpcasters()
	if err := u.add(old, TypeAgentHeartbeat, func(e Event) (json.RawMessage, error) {
		var v1 struct {
			Agent  string `json:"agent"`
			Tenant string `json:"tenant"`
		}
		if err := json.Unmarshal(e.Data, &v1); err != nil {
			return nil, err
		}
		return json.Marshal(AgentHeartbeat{AgentID: v1.Agent, Tenant: v1.Tenant, HeartbeatAt: e.Time})
	}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	event := func(data string) Event {
		return Event{ID: "evt_1", Source: TenantSource("ten_a"), Type: old, Subject: AgentSubject("agt_1"), Time: at,
			DataContentType: ContentTypeJSON, DataSchema: DataSchemaURI(old), Data: json.RawMessage(data), Tenant: "ten_a"}
	}
	p, err := event(`{"agent":"agt_1","tenant":"ten_a"}`).payloadBy(u)
	if err != nil {
		t.Fatal(err)
	}
	if want := (AgentHeartbeat{AgentID: "agt_1", Tenant: "ten_a", HeartbeatAt: at}); p != want {
		t.Errorf("payload %#v, want %#v", p, want)
	}
	for name, data := range map[string]string{
		"the upcast payload is invalid":          `{"agent":"","tenant":"ten_a"}`,
		"the upcast payload is another tenant's": `{"agent":"agt_1","tenant":"ten_b"}`,
		"another agent than the subject":         `{"agent":"agt_2","tenant":"ten_a"}`,
	} {
		if _, err := event(data).payloadBy(u); errs.CodeOf(err) != errs.Invalid {
			t.Errorf("%s: %v, want an invalid event", name, err)
		}
	}
	// Without the upcaster the old type is outside the catalogue: no payload.
	if p, err := event(`{"agent":"agt_1","tenant":"ten_a"}`).payloadBy(NewUpcasters()); p != nil || err != nil {
		t.Errorf("no upcaster: %v, %v", p, err)
	}
}
