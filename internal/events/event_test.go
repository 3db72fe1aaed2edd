package events_test

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/oklog/ulid/v2"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// deref returns the struct a payload holds, whether given as a value or a pointer.
func deref(p events.Payload) any {
	v := reflect.ValueOf(p)
	if v.Kind() == reflect.Pointer {
		return v.Elem().Interface()
	}
	return p
}

func TestNew(t *testing.T) {
	for _, s := range samples() {
		t.Run(s.name, func(t *testing.T) {
			e := newEvent(t, s)
			id, ok := strings.CutPrefix(e.ID, "evt_")
			if !ok || id != strings.ToLower(id) {
				t.Fatalf("ID = %q, want evt_ + lower-case ULID", e.ID)
			}
			u, err := ulid.ParseStrict(strings.ToUpper(id))
			if err != nil {
				t.Fatalf("ID %q: %v", e.ID, err)
			}
			if got := ulid.Time(u.Time()); !got.Equal(base.Truncate(time.Millisecond)) {
				t.Errorf("ID time = %v, want the event's time %v", got, base)
			}
			want := events.Event{
				ID: e.ID, Source: "/nops/tenants/" + s.tenant, Type: s.typ, Subject: s.subject, Time: base,
				DataContentType: "application/json", DataSchema: "urn:nops:events:" + string(s.typ),
				Data: e.Data, Tenant: s.tenant, TraceParent: traceparnt,
			}
			if diff := cmp.Diff(want, e); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
			p, err := e.Payload()
			if err != nil {
				t.Fatalf("Payload: %v", err)
			}
			if diff := cmp.Diff(deref(s.payload), p); diff != "" {
				t.Errorf("payload round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewNormalisesTimeToUTC(t *testing.T) {
	s := samples()[0]
	e, err := events.New(s.typ, s.tenant, s.subject, s.payload, base.In(time.FixedZone("UTC+2", 7200)), "")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if e.Time.Location() != time.UTC || !e.Time.Equal(base) {
		t.Errorf("Time = %v, want %v in UTC", e.Time, base)
	}
	if e.TraceParent != "" {
		t.Errorf("TraceParent = %q, want none", e.TraceParent)
	}
}

func TestNewIDsAreUniqueAndOrdered(t *testing.T) {
	s := samples()[0]
	const n = 2000
	seen := make(map[string]bool, n)
	prev := ""
	for i := range n {
		e, err := events.New(s.typ, s.tenant, s.subject, s.payload, base, "")
		if err != nil {
			t.Fatalf("New #%d: %v", i, err)
		}
		if seen[e.ID] {
			t.Fatalf("ID %q repeated after %d events", e.ID, i)
		}
		if e.ID <= prev {
			t.Fatalf("ID %q not after %q: ids of one instant must keep their order", e.ID, prev)
		}
		seen[e.ID], prev = true, e.ID
	}
}

// fieldOf returns the first field name of an errs.Invalid, failing the test otherwise.
func fieldOf(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	e := errs.As(err)
	if e == nil || e.Code != errs.Invalid {
		t.Fatalf("error %v: want an errs.Invalid", err)
	}
	if len(e.Fields) == 0 {
		return ""
	}
	return e.Fields[0].Name
}

func TestNewRejects(t *testing.T) {
	good := samples()[0]
	badAgent := agentFull()
	badAgent.ID = ""
	dotted := agentFull()
	dotted.Tenant = "acme.corp"
	tests := []struct {
		name        string
		typ         events.Type
		tenant      string
		subject     string
		payload     events.Payload
		now         time.Time
		traceparent string
		field       string
	}{
		{"type outside the catalogue", "nops.agent.exploded.v1", tenantA, good.subject, good.payload, base, "", "type"},
		{"malformed type", "agent.registered", tenantA, good.subject, good.payload, base, "", "type"},
		{"nil payload", events.TypeAgentRegistered, tenantA, good.subject, nil, base, "", "data"},
		{"payload of another type", events.TypeAgentUpdated, tenantA, good.subject, good.payload, base, "", "data"},
		{"invalid payload", events.TypeAgentRegistered, tenantA, good.subject, events.AgentRegistered{Agent: badAgent}, base, "", "data.agent.id"},
		{"tenant unsafe in a bus subject", events.TypeAgentRegistered, "acme.corp", good.subject, events.AgentRegistered{Agent: dotted}, base, "", "data.agent.tenant"},
		{"tenant not the payload's", events.TypeAgentRegistered, "ten_other", good.subject, good.payload, base, "", "tenant"},
		{"subject not the payload's", events.TypeAgentRegistered, tenantA, "agents/agt_other", good.payload, base, "", "subject"},
		{"zero time", events.TypeAgentRegistered, tenantA, good.subject, good.payload, time.Time{}, "", "time"},
		{"traceparent of unknown version", events.TypeAgentRegistered, tenantA, good.subject, good.payload, base, "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "traceparent"},
		{"traceparent upper case", events.TypeAgentRegistered, tenantA, good.subject, good.payload, base, "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "traceparent"},
		{"traceparent zero trace id", events.TypeAgentRegistered, tenantA, good.subject, good.payload, base, "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "traceparent"},
		{"traceparent zero parent id", events.TypeAgentRegistered, tenantA, good.subject, good.payload, base, "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "traceparent"},
		{"traceparent truncated", events.TypeAgentRegistered, tenantA, good.subject, good.payload, base, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", "traceparent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := events.New(tt.typ, tt.tenant, tt.subject, tt.payload, tt.now, tt.traceparent)
			if got := fieldOf(t, err); got != tt.field {
				t.Errorf("error %v names %q, want %q", err, got, tt.field)
			}
			_, err = events.NewRecord(tt.typ, tt.tenant, tt.subject, tt.payload, tt.now, tt.traceparent)
			if got := fieldOf(t, err); got != tt.field {
				t.Errorf("NewRecord: error %v names %q, want %q", err, got, tt.field)
			}
		})
	}
}

func TestPayloadValidate(t *testing.T) {
	agent := func(f func(*events.AgentSnapshot)) events.Payload {
		a := agentFull()
		f(&a)
		return events.AgentRegistered{Agent: a}
	}
	key := func(f func(*events.APIKeySnapshot)) events.Payload {
		k := keyFull()
		f(&k)
		return events.APIKeyCreated{Key: k}
	}
	route := func(f func(*events.RouteSnapshot)) events.Payload {
		r := routeFull()
		f(&r)
		return events.RouteUpdated{Route: r}
	}
	completed := func(f func(*events.InvocationCompleted)) events.Payload {
		c := events.InvocationCompleted{InvocationID: invocationID, Tenant: tenantA, Capability: "a", Status: 200, Outcome: "ok", StartedAt: base}
		f(&c)
		return c
	}
	beat := func(l events.AgentLoad) events.Payload {
		return events.AgentHeartbeat{AgentID: agentID, Tenant: tenantA, HeartbeatAt: base, Load: &l}
	}
	local := base.In(time.FixedZone("UTC+2", 7200))
	tests := []struct {
		name    string
		payload events.Payload
		field   string
	}{
		{"agent id with a dot", agent(func(a *events.AgentSnapshot) { a.ID = "agt.1" }), "data.agent.id"},
		{"agent id too long", agent(func(a *events.AgentSnapshot) { a.ID = strings.Repeat("a", 65) }), "data.agent.id"},
		{"agent without tenant", agent(func(a *events.AgentSnapshot) { a.Tenant = "" }), "data.agent.tenant"},
		{"agent without name", agent(func(a *events.AgentSnapshot) { a.Name = "" }), "data.agent.name"},
		{"agent without version", agent(func(a *events.AgentSnapshot) { a.Version = "" }), "data.agent.version"},
		{"empty capability name", agent(func(a *events.AgentSnapshot) { a.Capabilities = []string{"x", ""} }), "data.agent.capabilities"},
		{"relative endpoint", agent(func(a *events.AgentSnapshot) { a.Endpoint = "/agents/x" }), "data.agent.endpoint"},
		{"endpoint with space", agent(func(a *events.AgentSnapshot) { a.Endpoint = "http://a b" }), "data.agent.endpoint"},
		{"unknown criticality", agent(func(a *events.AgentSnapshot) { a.Criticality = "vital" }), "data.agent.criticality"},
		{"unknown status", agent(func(a *events.AgentSnapshot) { a.Status = "dead" }), "data.agent.status"},
		{"heartbeat not UTC", agent(func(a *events.AgentSnapshot) { a.HeartbeatAt = &local }), "data.agent.heartbeat_at"},
		{"revision 0", agent(func(a *events.AgentSnapshot) { a.Revision = 0 }), "data.agent.revision"},
		{"no created_at", agent(func(a *events.AgentSnapshot) { a.CreatedAt = time.Time{} }), "data.agent.created_at"},
		{"updated_at not UTC", agent(func(a *events.AgentSnapshot) { a.UpdatedAt = local }), "data.agent.updated_at"},
		{"year beyond RFC 3339", agent(func(a *events.AgentSnapshot) { a.UpdatedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }), "data.agent.updated_at"},
		{"heartbeat without agent", events.AgentHeartbeat{Tenant: tenantA, HeartbeatAt: base}, "data.agent_id"},
		{"heartbeat without tenant", events.AgentHeartbeat{AgentID: agentID, HeartbeatAt: base}, "data.tenant"},
		{"heartbeat without time", events.AgentHeartbeat{AgentID: agentID, Tenant: tenantA}, "data.heartbeat_at"},
		{"negative in-flight", beat(events.AgentLoad{InFlight: ptr[int64](-1)}), "data.load.in_flight"},
		{"negative p50", beat(events.AgentLoad{LatencyP50Ms: ptr(-0.5)}), "data.load.latency_p50_ms"},
		{"NaN p95", beat(events.AgentLoad{LatencyP95Ms: ptr(math.NaN())}), "data.load.latency_p95_ms"},
		{"error rate above 1", beat(events.AgentLoad{ErrorRate: ptr(1.5)}), "data.load.error_rate"},
		{"negative free capacity", beat(events.AgentLoad{FreeCapacity: ptr[int64](-3)}), "data.load.free_capacity"},
		{"status unchanged", events.AgentStatusChanged{AgentID: agentID, Tenant: tenantA, From: "stale", To: "stale", ChangedAt: base}, "data.to"},
		{"status from unknown", events.AgentStatusChanged{AgentID: agentID, Tenant: tenantA, From: "gone", To: "stale", ChangedAt: base}, "data.from"},
		{"status change without time", events.AgentStatusChanged{AgentID: agentID, Tenant: tenantA, From: "healthy", To: "stale"}, "data.changed_at"},
		{"key without id", key(func(k *events.APIKeySnapshot) { k.ID = "" }), "data.key.id"},
		{"key with bad agent id", key(func(k *events.APIKeySnapshot) { k.AgentID = "agt 1" }), "data.key.agent_id"},
		{"key without name", key(func(k *events.APIKeySnapshot) { k.Name = "" }), "data.key.name"},
		{"empty scope", key(func(k *events.APIKeySnapshot) { k.Scopes = []string{""} }), "data.key.scopes"},
		{"expiry not UTC", key(func(k *events.APIKeySnapshot) { k.ExpiresAt = &local }), "data.key.expires_at"},
		{"grace ends before rotation", events.APIKeyRotated{Key: keyFull(), RotatedAt: base, GraceUntil: base.Add(-time.Second)}, "data.grace_until"},
		{"rotation without time", events.APIKeyRotated{Key: keyFull(), GraceUntil: base}, "data.rotated_at"},
		{"revoked without revoked_at", events.APIKeyRevoked{Key: keyMinimal()}, "data.key.revoked_at"},
		{"tenant without name", events.TenantCreated{Tenant: events.TenantSnapshot{ID: tenantA, Status: "active", CreatedAt: base, UpdatedAt: base}}, "data.tenant.name"},
		{"tenant with unknown status", events.TenantUpdated{Tenant: tenantSnap("deleted")}, "data.tenant.status"},
		{"suspended but active", events.TenantSuspended{Tenant: tenantSnap("active")}, "data.tenant.status"},
		{"resumed but suspended", events.TenantResumed{Tenant: tenantSnap("suspended")}, "data.tenant.status"},
		{"deleted without time", events.TenantDeleted{Tenant: tenantSnap("active")}, "data.deleted_at"},
		{"route without tenant", route(func(r *events.RouteSnapshot) { r.Tenant = "" }), "data.route.tenant"},
		{"route capability with a space", route(func(r *events.RouteSnapshot) { r.Capability = "a b" }), "data.route.capability"},
		{"route without targets", route(func(r *events.RouteSnapshot) { r.Targets = nil }), "data.route.targets"},
		{"route target with neither", route(func(r *events.RouteSnapshot) { r.Targets[1].Version = "" }), "data.route.targets[1]"},
		{"route target with both", route(func(r *events.RouteSnapshot) { r.Targets[1].AgentID = agentID }), "data.route.targets[1]"},
		{"route target with a bad agent", route(func(r *events.RouteSnapshot) { r.Targets[0].AgentID = "agt.1" }), "data.route.targets[0].agent_id"},
		{"route target with a spaced version", route(func(r *events.RouteSnapshot) { r.Targets[1].Version = "1 2" }), "data.route.targets[1].version"},
		{"route weight too big", route(func(r *events.RouteSnapshot) { r.Targets[2].Weight = 10001 }), "data.route.targets[2].weight"},
		{"route priority too big", route(func(r *events.RouteSnapshot) { r.Targets[2].Priority = 16 }), "data.route.targets[2].priority"},
		{"route sticky header not a token", route(func(r *events.RouteSnapshot) { r.StickyHeader = "X:Y" }), "data.route.sticky_header"},
		{"route timeout too long", route(func(r *events.RouteSnapshot) { r.TimeoutMs = 600001 }), "data.route.timeout_ms"},
		{"route hedge without delay", route(func(r *events.RouteSnapshot) { r.Hedge.DelayMs = 0 }), "data.route.hedge.delay_ms"},
		{"route hedge of none", route(func(r *events.RouteSnapshot) { r.Hedge.MaxExtra = 0 }), "data.route.hedge.max_extra"},
		{"route revision 0", route(func(r *events.RouteSnapshot) { r.Revision = 0 }), "data.route.revision"},
		{"route without updated_at", route(func(r *events.RouteSnapshot) { r.UpdatedAt = time.Time{} }), "data.route.updated_at"},
		{"route deleted without time", events.RouteDeleted{Route: routeFull()}, "data.deleted_at"},
		{"requested without id", events.InvocationRequested{Tenant: tenantA, Capability: "a", CreatedAt: base}, "data.invocation_id"},
		{"requested capability with a space", events.InvocationRequested{InvocationID: invocationID, Tenant: tenantA, Capability: "a b", CreatedAt: base}, "data.capability"},
		{"requested not UTC", events.InvocationRequested{InvocationID: invocationID, Tenant: tenantA, Capability: "a", CreatedAt: local}, "data.created_at"},
		{"completed without tenant", completed(func(c *events.InvocationCompleted) { c.Tenant = "" }), "data.tenant"},
		{"breaker unknown state", events.AgentBreakerChanged{AgentID: agentID, Tenant: tenantA, From: "closed", To: "ajar", ChangedAt: base}, "data.to"},
		{"breaker to its own state", events.AgentBreakerChanged{AgentID: agentID, Tenant: tenantA, From: "open", To: "open", ChangedAt: base}, "data.to"},
		{"breaker from nothing", events.AgentBreakerChanged{AgentID: agentID, Tenant: tenantA, To: "open", ChangedAt: base}, "data.from"},
		{"breaker kernel with a space", events.AgentBreakerChanged{AgentID: agentID, Tenant: tenantA, From: "closed", To: "open", Kernel: "a b", ChangedAt: base}, "data.kernel"},
		{"completed bad agent", completed(func(c *events.InvocationCompleted) { c.AgentID = "agt.1" }), "data.agent_id"},
		{"completed status 0", completed(func(c *events.InvocationCompleted) { c.Status = 0 }), "data.status"},
		{"completed unknown outcome", completed(func(c *events.InvocationCompleted) { c.Outcome = "fine" }), "data.outcome"},
		{"completed negative attempts", completed(func(c *events.InvocationCompleted) { c.Attempts = -1 }), "data.attempts"},
		{"completed negative bytes", completed(func(c *events.InvocationCompleted) { c.ResponseBytes = -1 }), "data.response_bytes"},
		{"completed infinite duration", completed(func(c *events.InvocationCompleted) { c.DurationMs = math.Inf(1) }), "data.duration_ms"},
		{"completed request id with a slash", completed(func(c *events.InvocationCompleted) { c.RequestID = "a/b" }), "data.request_id"},
		{"completed without start", completed(func(c *events.InvocationCompleted) { c.StartedAt = time.Time{} }), "data.started_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fieldOf(t, tt.payload.Validate()); got != tt.field {
				t.Errorf("Validate names %q, want %q", got, tt.field)
			}
		})
	}
}

func TestPayloadOfUnknownType(t *testing.T) {
	e := newEvent(t, samples()[0])
	e.Type = "nops.agent.teleported.v2"
	e.DataSchema = events.DataSchemaURI(e.Type)
	if err := e.Validate(); err != nil {
		t.Fatalf("Validate of a well-formed type outside the catalogue: %v", err)
	}
	_, err := e.Payload()
	if got := fieldOf(t, err); got != "type" {
		t.Errorf("Payload names %q, want type", got)
	}
}

func TestEventValidateCrossChecks(t *testing.T) {
	tests := []struct {
		name   string
		change func(*events.Event)
		field  string
	}{
		{"tenant other than the payload's", func(e *events.Event) {
			e.Tenant, e.Source = "ten_other", events.TenantSource("ten_other")
		}, "tenant"},
		{"subject other than the payload's", func(e *events.Event) { e.Subject = "agents/agt_other" }, "subject"},
		{"source of another tenant", func(e *events.Event) { e.Source = events.TenantSource("ten_other") }, "source"},
		{"dataschema of another type", func(e *events.Event) { e.DataSchema = events.DataSchemaURI(events.TypeAgentUpdated) }, "dataschema"},
		{"data of another type", func(e *events.Event) { e.Data = json.RawMessage(`{"tenant":{}}`) }, "data.agent.id"},
		{"time not UTC", func(e *events.Event) { e.Time = base.In(time.FixedZone("", 3600)) }, "time"},
		{"content type", func(e *events.Event) { e.DataContentType = "text/plain" }, "datacontenttype"},
		{"extension with upper case", func(e *events.Event) { e.Extensions = map[string]any{"Region": "eu"} }, "Region"},
		{"extension named like an attribute", func(e *events.Event) { e.Extensions = map[string]any{"subject": "x"} }, "subject"},
		{"extension of 21 characters", func(e *events.Event) { e.Extensions = map[string]any{strings.Repeat("a", 21): "x"} }, strings.Repeat("a", 21)},
		{"extension float", func(e *events.Event) { e.Extensions = map[string]any{"ratio": 0.5} }, "ratio"},
		{"extension beyond int32", func(e *events.Event) { e.Extensions = map[string]any{"big": int64(math.MaxInt32) + 1} }, "big"},
		{"extension with a control character", func(e *events.Event) { e.Extensions = map[string]any{"note": "a\nb"} }, "note"},
		{"data an array", func(e *events.Event) { e.Data = json.RawMessage(`[]`) }, "data"},
		{"data with a repeated member", func(e *events.Event) { e.Data = json.RawMessage(`{"agent":{},"agent":{}}`) }, "data.agent"},
		{"id too long", func(e *events.Event) { e.ID = strings.Repeat("x", 129) }, "id"},
		{"subject with a newline", func(e *events.Event) { e.Subject = "agents/\n" }, "subject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEvent(t, samples()[0])
			tt.change(&e)
			if got := fieldOf(t, e.Validate()); got != tt.field {
				t.Errorf("Validate names %q, want %q", got, tt.field)
			}
			if _, err := e.MarshalJSON(); err == nil {
				t.Error("MarshalJSON accepted an invalid event")
			}
		})
	}
}

func TestExtensionsAccepted(t *testing.T) {
	e := newEvent(t, samples()[0])
	e.Extensions = map[string]any{"region": "eu-west", "sampled": true, "prio": 3, "delta": int32(-7), "wide": int64(math.MinInt32)}
	b := mustMarshal(t, e)
	got, err := events.Parse(b)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := map[string]any{"region": "eu-west", "sampled": true, "prio": int32(3), "delta": int32(-7), "wide": int32(math.MinInt32)}
	if diff := cmp.Diff(want, got.Extensions); diff != "" {
		t.Errorf("extensions after a round trip (-want +got):\n%s", diff)
	}
}

func TestOutbox(t *testing.T) {
	for _, s := range samples() {
		t.Run(s.name, func(t *testing.T) {
			e := newEvent(t, s)
			r, err := e.Outbox()
			if err != nil {
				t.Fatalf("Outbox: %v", err)
			}
			want := events.OutboxRecord{
				ID: e.ID, Tenant: s.tenant, Type: s.typ, Subject: s.subject,
				Payload: mustMarshal(t, e), CreatedAt: base,
			}
			if diff := cmp.Diff(want, r); diff != "" {
				t.Errorf("record (-want +got):\n%s", diff)
			}
			if err := r.Validate(); err != nil {
				t.Errorf("Validate of Outbox's record: %v", err)
			}
			back, err := events.Parse(r.Payload)
			if err != nil {
				t.Fatalf("Parse(payload): %v", err)
			}
			if diff := cmp.Diff(e, back); diff != "" {
				t.Errorf("event from the outbox (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNewRecord: for every sample of the catalogue, NewRecord's record is byte for byte the one
// New and Outbox make (apart from the fresh id), and Parse reads it back as that event.
func TestNewRecord(t *testing.T) {
	for _, s := range samples() {
		t.Run(s.name, func(t *testing.T) {
			r, err := events.NewRecord(s.typ, s.tenant, s.subject, s.payload, base, traceparnt)
			if err != nil {
				t.Fatalf("NewRecord: %v", err)
			}
			if err := r.Validate(); err != nil {
				t.Errorf("Validate of NewRecord's record: %v", err)
			}
			id, ok := strings.CutPrefix(r.ID, "evt_")
			u, err := ulid.ParseStrict(strings.ToUpper(id))
			if !ok || err != nil || id != strings.ToLower(id) || !ulid.Time(u.Time()).Equal(base.Truncate(time.Millisecond)) {
				t.Errorf("ID = %q (%v), want evt_ + lower-case ULID of the event's time", r.ID, err)
			}
			e := newEvent(t, s)
			e.ID = r.ID
			want, err := e.Outbox()
			if err != nil {
				t.Fatalf("Outbox: %v", err)
			}
			if diff := cmp.Diff(want, r); diff != "" {
				t.Errorf("record (-New and Outbox +NewRecord):\n%s", diff)
			}
			back, err := events.Parse(r.Payload)
			if err != nil {
				t.Fatalf("Parse(payload): %v", err)
			}
			if diff := cmp.Diff(e, back); diff != "" {
				t.Errorf("event from the record (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNewRecordIDsAreUnique: two records of the same call differ by id.
func TestNewRecordIDsAreUnique(t *testing.T) {
	s := samples()[0]
	a, errA := events.NewRecord(s.typ, s.tenant, s.subject, s.payload, base, "")
	b, errB := events.NewRecord(s.typ, s.tenant, s.subject, s.payload, base, "")
	if errA != nil || errB != nil || a.ID == b.ID {
		t.Errorf("ids %q, %q (%v, %v)", a.ID, b.ID, errA, errB)
	}
}

// notAnObject is a payload claiming a catalogue type whose encoding is not a JSON object.
type notAnObject string

func (notAnObject) EventType() events.Type { return events.TypeBillingUsage }
func (notAnObject) EventTenant() string    { return tenantA }
func (notAnObject) EventSubject() string   { return events.UsageSubject(tenantA) }
func (notAnObject) Validate() error        { return nil }

// TestNewRecordRefusesDataThatIsNotAnObject: NewRecord trusts the payload's encoding to be an
// object, as every catalogue struct's is, but still checks it is one.
func TestNewRecordRefusesDataThatIsNotAnObject(t *testing.T) {
	p := notAnObject("x")
	_, err := events.NewRecord(p.EventType(), tenantA, p.EventSubject(), p, base, "")
	if got := fieldOf(t, err); got != "data" {
		t.Errorf("NewRecord of a string payload: %v (field %q), want data", err, got)
	}
	_, err = events.New(p.EventType(), tenantA, p.EventSubject(), p, base, "")
	if got := fieldOf(t, err); got != "data" {
		t.Errorf("New of a string payload: %v (field %q), want data", err, got)
	}
}

func TestOutboxRejectsInvalidEvent(t *testing.T) {
	e := newEvent(t, samples()[0])
	e.Tenant = ""
	if _, err := e.Outbox(); !errs.Is(err, errs.Invalid) {
		t.Errorf("Outbox of an event without tenant: %v, want errs.Invalid", err)
	}
}

func TestOutboxRecordValidate(t *testing.T) {
	good := func() events.OutboxRecord {
		r, err := newEvent(t, samples()[0]).Outbox()
		if err != nil {
			t.Fatalf("Outbox: %v", err)
		}
		return r
	}
	tests := []struct {
		name   string
		change func(*events.OutboxRecord)
		field  string
	}{
		{"no id", func(r *events.OutboxRecord) { r.ID = "" }, "id"},
		{"bad tenant", func(r *events.OutboxRecord) { r.Tenant = "a.b" }, "tenant"},
		{"bad type", func(r *events.OutboxRecord) { r.Type = "x" }, "type"},
		{"no subject", func(r *events.OutboxRecord) { r.Subject = "" }, "subject"},
		{"no payload", func(r *events.OutboxRecord) { r.Payload = nil }, "payload"},
		{"payload too large", func(r *events.OutboxRecord) { r.Payload = make([]byte, events.MaxEventSize+1) }, "payload"},
		{"no time", func(r *events.OutboxRecord) { r.CreatedAt = time.Time{} }, "created_at"},
		{"seq set", func(r *events.OutboxRecord) { r.Seq = 1 }, "seq"},
		{"already published", func(r *events.OutboxRecord) { r.PublishedAt = &base }, "seq"},
		{"attempts set", func(r *events.OutboxRecord) { r.Attempts = 1 }, "seq"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good()
			tt.change(&r)
			if got := fieldOf(t, r.Validate()); got != tt.field {
				t.Errorf("Validate names %q, want %q", got, tt.field)
			}
		})
	}
}
