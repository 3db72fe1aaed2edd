package events

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// Type is a CloudEvents type of the form "nops.<domain>.<event>.v<N>".
type Type string

// The catalogue. Each has a payload struct (payloads.go, billing.go, routes.go, invocations.go), a schema file
// api/events/<type>.json and a case in decodePayload; the tests keep the three in step.
const (
	TypeAgentRegistered    Type = "nops.agent.registered.v1"
	TypeAgentUpdated       Type = "nops.agent.updated.v1"
	TypeAgentHeartbeat     Type = "nops.agent.heartbeat.v1"
	TypeAgentStatusChanged Type = "nops.agent.status_changed.v1"
	TypeAgentDeregistered  Type = "nops.agent.deregistered.v1"
	// TypeAgentBreakerChanged is a replica's circuit breaker for an agent changing state (breaker.go).
	TypeAgentBreakerChanged Type = "nops.agent.breaker_changed.v1"
	TypeAPIKeyCreated       Type = "nops.apikey.created.v1"
	TypeAPIKeyRotated       Type = "nops.apikey.rotated.v1"
	TypeAPIKeyRevoked       Type = "nops.apikey.revoked.v1"
	// TypeAPIKeyRotationRequired is an administrator setting a deadline for rotating a key.
	TypeAPIKeyRotationRequired Type = "nops.apikey.rotation_required.v1"
	TypeTenantCreated          Type = "nops.tenant.created.v1"
	TypeTenantUpdated          Type = "nops.tenant.updated.v1"
	TypeTenantSuspended        Type = "nops.tenant.suspended.v1"
	TypeTenantResumed          Type = "nops.tenant.resumed.v1"
	TypeTenantDeleted          Type = "nops.tenant.deleted.v1"
	TypeBillingUsage           Type = "nops.billing.usage.v1"
	TypeRouteUpdated           Type = "nops.route.updated.v1"
	TypeRouteDeleted           Type = "nops.route.deleted.v1"
	// The invocation events (invocations.go).
	TypeInvocationRequested Type = "nops.invocation.requested.v1"
	TypeInvocationCompleted Type = "nops.invocation.completed.v1"
	// TypeFlagChanged is a feature flag created, updated or deleted (flags.go).
	TypeFlagChanged Type = "nops.flag.changed.v1"
	// TypeDegradationChanged is a replica entering or leaving a degraded mode (degradation.go).
	TypeDegradationChanged Type = "nops.degradation.changed.v1"
)

// Catalogue returns every event type the kernel emits, in a stable order. The slice is the
// caller's to keep.
func Catalogue() []Type {
	return []Type{
		TypeAgentRegistered, TypeAgentUpdated, TypeAgentHeartbeat, TypeAgentStatusChanged,
		TypeAgentDeregistered, TypeAgentBreakerChanged,
		TypeAPIKeyCreated, TypeAPIKeyRotated, TypeAPIKeyRevoked, TypeAPIKeyRotationRequired,
		TypeTenantCreated, TypeTenantUpdated, TypeTenantSuspended, TypeTenantResumed,
		TypeTenantDeleted,
		TypeBillingUsage,
		TypeRouteUpdated, TypeRouteDeleted,
		TypeInvocationRequested, TypeInvocationCompleted,
		TypeFlagChanged,
		TypeDegradationChanged,
	}
}

// Known reports whether t is in the catalogue.
func (t Type) Known() bool { return slices.Contains(Catalogue(), t) }

// Valid reports whether t has the form "nops.<domain>.<event>.v<N>": domain [a-z][a-z0-9]*,
// event [a-z][a-z0-9_]*, N a positive integer without leading zeros. Types outside the catalogue
// can be valid: a consumer may meet a newer producer's types during a rolling upgrade.
func (t Type) Valid() bool {
	s, ok := strings.CutPrefix(string(t), "nops.")
	if !ok {
		return false
	}
	domain, rest, ok := strings.Cut(s, ".")
	if !ok || !lowerWord(domain, false) {
		return false
	}
	event, version, ok := strings.Cut(rest, ".")
	if !ok || !lowerWord(event, true) {
		return false
	}
	n, ok := strings.CutPrefix(version, "v")
	if !ok || n == "" || n[0] == '0' || len(n) > 9 {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] < '0' || n[i] > '9' {
			return false
		}
	}
	return true
}

// lowerWord reports whether s is [a-z][a-z0-9]* (with '_' allowed after the first letter when
// underscore is set).
func lowerWord(s string, underscore bool) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && (!underscore || c != '_') {
			return false
		}
	}
	return true
}

// DataSchemaPrefix starts every dataschema URI; see DataSchemaURI.
const DataSchemaPrefix = "urn:nops:events:"

// EnvelopeSchemaURI is the $id of api/events/cloudevent.json, the schema of the envelope.
const EnvelopeSchemaURI = DataSchemaPrefix + "cloudevent"

// EnvelopeSchemaFile is the envelope schema's file name under api/events.
const EnvelopeSchemaFile = "cloudevent.json"

// DataSchemaURI returns the dataschema attribute of events of type t: "urn:nops:events:" + t. It
// is the "$id" of the schema file SchemaFile(t) under api/events.
func DataSchemaURI(t Type) string { return DataSchemaPrefix + string(t) }

// SchemaFile returns the name of t's data schema file under api/events: "<type>.json".
func SchemaFile(t Type) string { return string(t) + ".json" }

// TenantSource returns the source attribute of a tenant's events: "/nops/tenants/<tenant>".
func TenantSource(tenant string) string { return "/nops/tenants/" + tenant }

// AgentSubject returns the subject of an agent's events: "agents/<id>".
func AgentSubject(id string) string { return "agents/" + id }

// APIKeySubject returns the subject of an API key's events: "api-keys/<id>".
func APIKeySubject(id string) string { return "api-keys/" + id }

// TenantSubject returns the subject of a tenant's own events: "tenants/<id>".
func TenantSubject(id string) string { return "tenants/" + id }

// UsageSubject returns the subject of a tenant's usage events: "tenants/<id>/usage". It differs
// from TenantSubject so that consumers can tell metering from state changes by subject, and so
// that a usage record the relay holds back (see internal/relay) never holds back the tenant's
// state changes, which share an ordering only with records of the same subject.
func UsageSubject(tenant string) string { return "tenants/" + tenant + "/usage" }

// decodePayload decodes data as the payload of the catalogue type t and validates it.
func decodePayload(t Type, data []byte) (Payload, error) {
	switch t {
	case TypeAgentRegistered:
		return decodeAs[AgentRegistered](data)
	case TypeAgentUpdated:
		return decodeAs[AgentUpdated](data)
	case TypeAgentHeartbeat:
		return decodeAs[AgentHeartbeat](data)
	case TypeAgentStatusChanged:
		return decodeAs[AgentStatusChanged](data)
	case TypeAgentDeregistered:
		return decodeAs[AgentDeregistered](data)
	case TypeAPIKeyCreated:
		return decodeAs[APIKeyCreated](data)
	case TypeAPIKeyRotated:
		return decodeAs[APIKeyRotated](data)
	case TypeAPIKeyRevoked:
		return decodeAs[APIKeyRevoked](data)
	case TypeAPIKeyRotationRequired:
		return decodeAs[APIKeyRotationRequired](data)
	case TypeTenantCreated:
		return decodeAs[TenantCreated](data)
	case TypeTenantUpdated:
		return decodeAs[TenantUpdated](data)
	case TypeTenantSuspended:
		return decodeAs[TenantSuspended](data)
	case TypeTenantResumed:
		return decodeAs[TenantResumed](data)
	case TypeTenantDeleted:
		return decodeAs[TenantDeleted](data)
	case TypeBillingUsage:
		return decodeAs[BillingUsage](data)
	case TypeRouteUpdated:
		return decodeAs[RouteUpdated](data)
	case TypeRouteDeleted:
		return decodeAs[RouteDeleted](data)
	case TypeFlagChanged:
		return decodeAs[FlagChanged](data)
	case TypeDegradationChanged:
		return decodeAs[DegradationChanged](data)
	case TypeInvocationRequested:
		return decodeAs[InvocationRequested](data)
	case TypeInvocationCompleted:
		return decodeAs[InvocationCompleted](data)
	case TypeAgentBreakerChanged:
		return decodeAs[AgentBreakerChanged](data)
	}
	return nil, errs.Field("type", "not a catalogue event type")
}

// decodeAs decodes data into a P. encoding/json ignores unknown members (so an optional field
// added later does not break an older consumer) but binds member names to struct fields
// case-insensitively; exactSpelling rejects that first, so Go and a JSON Schema validator read
// the same fields.
func decodeAs[P Payload](data []byte) (Payload, error) {
	var p P
	if err := exactSpelling(reflect.TypeFor[P](), data); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "data does not match the payload of its event type")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// exactSpelling checks that no member of data that encoding/json would bind to a field of t is
// spelled differently from the field's JSON name.
func exactSpelling(t reflect.Type, data []byte) error {
	if plainNames(data) {
		// Every payload field's JSON name is lower-case ASCII (TestPayloadJSONNamesArePlain), and
		// so is every member name of data: a name that binds to a field case-insensitively is
		// that field's name. This is the usual case, and it spares decoding data a second time.
		return nil
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return errs.Wrap(errs.Invalid, err, "decode data")
	}
	return spelledExactly(t, v, "data")
}

// plainNames reports whether every member name in data, a valid JSON document, is made of a-z,
// 0-9 and '_' only. In valid JSON a string followed by a colon is a member name, and nothing else
// is.
func plainNames(data []byte) bool {
	for i := 0; i < len(data); i++ {
		if data[i] != '"' {
			continue
		}
		start := i + 1
		plain := true
		for i = start; i < len(data) && data[i] != '"'; i++ {
			c := data[i]
			if c == '\\' {
				plain = false
				i++
			} else if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
				plain = false
			}
		}
		j := i + 1
		for j < len(data) && (data[j] == ' ' || data[j] == '\t' || data[j] == '\r' || data[j] == '\n') {
			j++
		}
		if j < len(data) && data[j] == ':' && (!plain || i == start) {
			return false
		}
	}
	return true
}

func spelledExactly(t reflect.Type, v any, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok || t == reflect.TypeFor[time.Time]() {
			return nil // a type mismatch is json.Unmarshal's to report
		}
		for k, w := range obj {
			f, ok := fieldByJSONName(t, k)
			if !ok {
				continue
			}
			if f.name != k {
				return errs.Field(path+"."+k, "must be spelled "+f.name)
			}
			if err := spelledExactly(f.typ, w, path+"."+k); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		arr, ok := v.([]any)
		if !ok {
			return nil
		}
		for _, w := range arr {
			if err := spelledExactly(t.Elem(), w, path); err != nil {
				return err
			}
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		for k, w := range obj {
			if err := spelledExactly(t.Elem(), w, path+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}

type jsonField struct {
	name string
	typ  reflect.Type
}

// fieldByJSONName finds the field of struct t that encoding/json binds member k to: the exact
// name if there is one, else one equal under case folding. Every payload field has an explicit
// json tag.
func fieldByJSONName(t reflect.Type, k string) (jsonField, bool) {
	var folded jsonField
	found := false
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		if name == k {
			return jsonField{name, f.Type}, true
		}
		if !found && strings.EqualFold(name, k) {
			folded, found = jsonField{name, f.Type}, true
		}
	}
	return folded, found
}
