package events_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

func usageGateway() events.BillingUsage {
	return events.BillingUsage{
		Tenant: tenantA, AgentID: agentID, Source: events.UsageSourceGateway,
		Route: "POST /v1/agents/{agent_id}/heartbeat", RequestID: "req_01jq7x3k9m2v8w4y6z0a1b2c40",
		Status: 202, RequestBytes: 512, ResponseBytes: 2048, DurationMs: 3.25, StartedAt: base,
	}
}

// TestBillingUsageRefused checks that Go and the schema refuse the same malformed usage records:
// New refuses to build the event (naming the field), and the schema refuses the payload as Go
// would have serialized it.
func TestBillingUsageRefused(t *testing.T) {
	s := loadSchemas(t)
	tests := []struct {
		name   string
		change func(u *events.BillingUsage)
		field  string
	}{
		{"no tenant", func(u *events.BillingUsage) { u.Tenant = "" }, "data.tenant"},
		{"tenant with a dot", func(u *events.BillingUsage) { u.Tenant = "ten.1" }, "data.tenant"},
		{"agent id with a space", func(u *events.BillingUsage) { u.AgentID = "agt 1" }, "data.agent_id"},
		{"agent id too long", func(u *events.BillingUsage) { u.AgentID = strings.Repeat("a", 65) }, "data.agent_id"},
		{"no source", func(u *events.BillingUsage) { u.Source = "" }, "data.source"},
		{"source outside the enum", func(u *events.BillingUsage) { u.Source = "batch" }, "data.source"},
		{"gateway without a route", func(u *events.BillingUsage) { u.Route = "" }, "data.route"},
		{"invocation without a capability", func(u *events.BillingUsage) {
			u.Source, u.Route = events.UsageSourceInvocation, ""
		}, "data.capability"},
		{"route with a control character", func(u *events.BillingUsage) { u.Route = "GET /v1/\x7f" }, "data.route"},
		{"route not ASCII", func(u *events.BillingUsage) { u.Route = "GET /v1/é" }, "data.route"},
		{"route too long", func(u *events.BillingUsage) { u.Route = "GET /" + strings.Repeat("r", 252) }, "data.route"},
		{"capability with a space", func(u *events.BillingUsage) { u.Capability = "text summarize" }, "data.capability"},
		{"capability too long", func(u *events.BillingUsage) { u.Capability = strings.Repeat("c", 129) }, "data.capability"},
		{"request id with a slash", func(u *events.BillingUsage) { u.RequestID = "req/1" }, "data.request_id"},
		{"request id too long", func(u *events.BillingUsage) { u.RequestID = strings.Repeat("r", 129) }, "data.request_id"},
		{"no status", func(u *events.BillingUsage) { u.Status = 0 }, "data.status"},
		{"status 99", func(u *events.BillingUsage) { u.Status = 99 }, "data.status"},
		{"status 600", func(u *events.BillingUsage) { u.Status = 600 }, "data.status"},
		{"negative request bytes", func(u *events.BillingUsage) { u.RequestBytes = -1 }, "data.request_bytes"},
		{"negative response bytes", func(u *events.BillingUsage) { u.ResponseBytes = -1 }, "data.response_bytes"},
		{"negative duration", func(u *events.BillingUsage) { u.DurationMs = -0.001 }, "data.duration_ms"},
		{"start with an offset", func(u *events.BillingUsage) { u.StartedAt = base.In(time.FixedZone("X", 3600)) }, "data.started_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := usageGateway()
			tt.change(&u)
			_, err := events.New(events.TypeBillingUsage, u.Tenant, events.UsageSubject(u.Tenant), u, base, "")
			if e := errs.As(err); e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != tt.field {
				t.Errorf("New: %v, want errs.Invalid naming %s", err, tt.field)
			}
			raw, err := json.Marshal(u)
			if err != nil {
				t.Fatal(err)
			}
			var data any
			if err := json.Unmarshal(raw, &data); err != nil {
				t.Fatal(err)
			}
			if err := s.ValidateData(events.TypeBillingUsage, data); !errs.Is(err, errs.Invalid) {
				t.Errorf("ValidateData: %v, want errs.Invalid", err)
			}
		})
	}
	// What Go refuses and JSON cannot carry, or the schema cannot tell from a real value (a zero
	// time serializes as the year 1).
	for name, change := range map[string]func(u *events.BillingUsage){
		"NaN duration":      func(u *events.BillingUsage) { u.DurationMs = math.NaN() },
		"infinite duration": func(u *events.BillingUsage) { u.DurationMs = math.Inf(1) },
		"no start":          func(u *events.BillingUsage) { u.StartedAt = time.Time{} },
	} {
		u := usageGateway()
		change(&u)
		if err := u.Validate(); !errs.Is(err, errs.Invalid) {
			t.Errorf("%s: Validate: %v, want errs.Invalid", name, err)
		}
	}
}

// TestBillingUsageAccepted checks the edges Go and the schema both accept.
func TestBillingUsageAccepted(t *testing.T) {
	s := loadSchemas(t)
	tests := []struct {
		name   string
		change func(u *events.BillingUsage)
	}{
		{"zero sizes and duration", func(u *events.BillingUsage) { u.RequestBytes, u.ResponseBytes, u.DurationMs = 0, 0, 0 }},
		{"huge sizes", func(u *events.BillingUsage) { u.RequestBytes, u.ResponseBytes = math.MaxInt64, math.MaxInt64 }},
		{"status 100 and no agent", func(u *events.BillingUsage) { u.Status, u.AgentID = 100, "" }},
		{"status 599 and no request id", func(u *events.BillingUsage) { u.Status, u.RequestID = 599, "" }},
		{"longest route", func(u *events.BillingUsage) { u.Route = "GET /" + strings.Repeat("r", 251) }},
		{"invocation with a route too", func(u *events.BillingUsage) {
			u.Source, u.Capability = events.UsageSourceInvocation, strings.Repeat("c", 128)
		}},
		{"request id of every allowed kind", func(u *events.BillingUsage) { u.RequestID = "Az09._:-" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := usageGateway()
			tt.change(&u)
			e, err := events.New(events.TypeBillingUsage, u.Tenant, events.UsageSubject(u.Tenant), u, base, "")
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if err := s.Validate(mustMarshal(t, e)); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}
