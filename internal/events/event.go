package events

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/nops-kernel/nops/internal/errs"
)

// SpecVersion is the CloudEvents version of every Event.
const SpecVersion = "1.0"

// ContentTypeJSON is the datacontenttype of every Event: data is a JSON object.
const ContentTypeJSON = "application/json"

// MediaType is the media type of a serialized Event (the CloudEvents JSON format, structured
// mode); bindings that carry headers (HTTP, NATS) send it as Content-Type.
const MediaType = "application/cloudevents+json"

// Names of the extension attributes the kernel defines.
const (
	ExtTenant      = "tenant"
	ExtTraceparent = "traceparent"
)

// Limits of the envelope.
const (
	// MaxEventSize bounds a serialized event: NATS refuses messages above 1 MiB by default,
	// headers included, so it is bus.MaxPayload (8 KiB left for the bus's headers); and Parse
	// reads untrusted input.
	MaxEventSize = 1<<20 - 8<<10
	// MaxDepth bounds the nesting of arrays and objects in a serialized event; the catalogue's
	// payloads nest four levels deep.
	MaxDepth = 32
	// MaxIDLength bounds the id attribute, which stores and brokers use as a dedup key.
	MaxIDLength = 128
	// MaxSubjectLength bounds the subject attribute.
	MaxSubjectLength = 512
)

// Event is one CloudEvent of the kernel's profile (see the package documentation). Use New to
// make one and Parse to read one; MarshalJSON and UnmarshalJSON write and read the structured
// JSON format. The zero value is not a valid event.
type Event struct {
	ID              string          // unique per event; consumers dedupe on it
	Source          string          // URI-reference; TenantSource(Tenant) for catalogue types
	Type            Type            // "nops.<domain>.<event>.v<N>"
	Subject         string          // the resource: "agents/<id>", "api-keys/<id>", "tenants/<id>", "tenants/<id>/usage", "tenants/<id>/invocations", "routes/<capability>"
	Time            time.Time       // UTC
	DataContentType string          // always ContentTypeJSON
	DataSchema      string          // DataSchemaURI(Type)
	Data            json.RawMessage // a JSON object: the payload
	Tenant          string          // extension attribute "tenant"
	TraceParent     string          // extension attribute "traceparent"; "" when absent
	// Extensions holds any other extension attributes, by name; a value is a string, a bool or
	// an integer within int32 (Parse yields int32). Nil when there are none.
	Extensions map[string]any
}

// New returns the event of type t about subject in tenant, with data as payload, happening at
// now. It assigns a fresh id ("evt_" + lower-case ULID whose time is now), the source
// TenantSource(tenant) and the dataschema DataSchemaURI(t). traceparent is the W3C traceparent
// of the change's span, or "". t must be a catalogue type, data its payload, and tenant and
// subject the payload's own (EventTenant, EventSubject): the attributes routing and ACLs read
// must agree with the data consumers act on.
func New(t Type, tenant, subject string, data Payload, now time.Time, traceparent string) (Event, error) {
	e, err := newEvent(t, tenant, subject, data, now, traceparent)
	if err != nil {
		return Event{}, err
	}
	if err := checkDataObject(e.Data); err != nil {
		return Event{}, err
	}
	return e, nil
}

// NewRecord returns the outbox record of the event New would return for the same arguments:
// the same checks of the arguments and of the payload (data.Validate), the same attributes with
// a fresh id, the same serialized form as that event's Outbox. It is New followed by Outbox
// without their second look at the data: Outbox validates an event of any origin, which decodes
// the serialized payload again (envelope, structure, payload struct, spelling of its members),
// while here the data is the encoding of a catalogue payload struct just checked — one JSON
// object, no repeated member, nested a few levels. The kernel meters every call with it (the
// billing.usage and invocation.completed events), where that second look cost more than the
// rest of the call's own work.
func NewRecord(t Type, tenant, subject string, data Payload, now time.Time, traceparent string) (OutboxRecord, error) {
	e, err := newEvent(t, tenant, subject, data, now, traceparent)
	if err != nil {
		return OutboxRecord{}, err
	}
	payload, err := e.encode(false)
	if err != nil {
		return OutboxRecord{}, err
	}
	return e.record(payload), nil
}

// newEvent is New without the check of the encoded data's structure: the data is the JSON
// encoding of data, a catalogue payload (every one is a struct, so its encoding is an object;
// the first byte is checked all the same).
func newEvent(t Type, tenant, subject string, data Payload, now time.Time, traceparent string) (Event, error) {
	if !t.Known() {
		return Event{}, errs.Field("type", "not a catalogue event type")
	}
	if data == nil {
		return Event{}, errs.Field("data", "is required")
	}
	if data.EventType() != t {
		return Event{}, errs.Field("data", "is the payload of "+string(data.EventType())+", not of "+string(t))
	}
	if err := data.Validate(); err != nil {
		return Event{}, err
	}
	if data.EventTenant() != tenant {
		return Event{}, errs.Field("tenant", "must be the payload's tenant")
	}
	if data.EventSubject() != subject {
		return Event{}, errs.Field("subject", "must be "+data.EventSubject())
	}
	if now.IsZero() {
		return Event{}, errs.Field("time", "is required")
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return Event{}, errs.Wrap(errs.Internal, err, "encode %s payload", t)
	}
	if len(raw) == 0 || raw[0] != '{' {
		return Event{}, errs.Field("data", "must be a JSON object")
	}
	id, err := ulid.New(ulid.Timestamp(now), ulid.DefaultEntropy())
	if err != nil {
		return Event{}, errs.Wrap(errs.Invalid, err, "make event id")
	}
	e := Event{
		ID:              "evt_" + strings.ToLower(id.String()),
		Source:          TenantSource(tenant),
		Type:            t,
		Subject:         subject,
		Time:            now.UTC(),
		DataContentType: ContentTypeJSON,
		DataSchema:      DataSchemaURI(t),
		Data:            raw,
		Tenant:          tenant,
		TraceParent:     traceparent,
	}
	if err := e.validateAttributes(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// Validate checks e against the profile: every attribute, and for a catalogue type the payload
// and its agreement with tenant, subject, source and dataschema. Errors are errs.Invalid naming
// the attribute ("tenant", "data.agent.id").
func (e Event) Validate() error {
	if err := e.validateEnvelope(); err != nil {
		return err
	}
	_, err := e.payload()
	return err
}

// Payload decodes the data of a catalogue event into its payload struct (AgentRegistered,
// TenantDeleted, …, as a value) and validates it; use a type switch on the result. An event of
// an older version of a catalogue type is upcast first, so the payload is always the newest
// version's (upcast.go). Members the struct does not know are ignored. An unknown type is an
// errs.Invalid.
func (e Event) Payload() (Payload, error) {
	if err := e.validateEnvelope(); err != nil {
		return nil, err
	}
	if !kernelUpcasters.Latest(e.Type).Known() {
		return nil, errs.Field("type", "not a catalogue event type")
	}
	return e.payload()
}

// payload decodes and cross-checks the data of a catalogue type, upcast by the kernel's
// upcasters from an older version of it (upcast.go); it returns nil, nil for a valid type outside
// the catalogue. The envelope is valid.
func (e Event) payload() (Payload, error) { return e.payloadBy(kernelUpcasters) }

func (e Event) payloadBy(u *Upcasters) (Payload, error) {
	e, err := u.Upcast(e)
	if err != nil {
		return nil, err
	}
	if !e.Type.Known() {
		return nil, nil
	}
	p, err := decodePayload(e.Type, e.Data)
	if err != nil {
		return nil, err
	}
	if p.EventTenant() != e.Tenant {
		return nil, errs.Field(ExtTenant, "must be the payload's tenant")
	}
	if p.EventSubject() != e.Subject {
		return nil, errs.Field("subject", "must be "+p.EventSubject())
	}
	if e.Source != TenantSource(e.Tenant) {
		return nil, errs.Field("source", "must be "+TenantSource(e.Tenant))
	}
	return p, nil
}

// validateEnvelope checks the attributes and that data is a JSON object.
func (e Event) validateEnvelope() error {
	if err := e.validateAttributes(); err != nil {
		return err
	}
	return checkDataObject(e.Data)
}

// validateAttributes checks the attributes, not the data.
func (e Event) validateAttributes() error {
	switch {
	case e.ID == "" || len(e.ID) > MaxIDLength || !ceString(e.ID):
		return errs.Field("id", "must be a string of 1 to 128 characters without control characters")
	case !uriReference(e.Source):
		return errs.Field("source", "must be a non-empty URI-reference")
	case !e.Type.Valid():
		return errs.Field("type", "must be nops.<domain>.<event>.v<N>")
	case e.Subject == "" || len(e.Subject) > MaxSubjectLength || !ceString(e.Subject):
		return errs.Field("subject", "must be a string of 1 to 512 characters without control characters")
	}
	if err := checkTime("time", e.Time); err != nil {
		return err
	}
	switch {
	case e.DataContentType != ContentTypeJSON:
		return errs.Field("datacontenttype", "must be "+ContentTypeJSON)
	case e.DataSchema != DataSchemaURI(e.Type):
		return errs.Field("dataschema", "must be "+DataSchemaURI(e.Type))
	case !idToken(e.Tenant):
		return errs.Field(ExtTenant, "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	case e.TraceParent != "" && !validTraceparent(e.TraceParent):
		return errs.Field(ExtTraceparent, "must be a W3C traceparent of version 00")
	}
	for name, v := range e.Extensions {
		if err := checkExtension(name, v); err != nil {
			return err
		}
	}
	return nil
}

// reserved are the names that are not extension attributes: the context attributes of the
// specification and of the kernel, and the data members.
func reserved(name string) bool {
	switch name {
	case "specversion", "id", "source", "type", "subject", "time", "datacontenttype",
		"dataschema", "data", "data_base64", ExtTenant, ExtTraceparent:
		return true
	}
	return false
}

func checkExtension(name string, v any) error {
	if !attributeName(name) {
		return errs.Field(name, "extension attribute names are 1 to 20 characters from a-z and 0-9")
	}
	if reserved(name) {
		return errs.Field(name, "is not an extension attribute")
	}
	switch x := v.(type) {
	case string:
		if !ceString(x) {
			return errs.Field(name, "must not contain control characters, surrogates or noncharacters")
		}
	case bool:
	case int32:
	case int:
		if x < math.MinInt32 || x > math.MaxInt32 {
			return errs.Field(name, "integers must fit in 32 bits")
		}
	case int64:
		if x < math.MinInt32 || x > math.MaxInt32 {
			return errs.Field(name, "integers must fit in 32 bits")
		}
	default:
		return errs.Field(name, "must be a string, a boolean or an integer")
	}
	return nil
}

// checkDataObject requires data to be one JSON object in UTF-8 that Parse would accept inside an
// envelope: no repeated member names, nesting one level less than MaxDepth.
func checkDataObject(data []byte) error {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' || !utf8.Valid(data) {
		return errs.Field("data", "must be a JSON object")
	}
	if err := checkStructure(data, MaxDepth-1); err != nil {
		if e := errs.As(err); e != nil && len(e.Fields) > 0 {
			for i := range e.Fields {
				e.Fields[i].Name = "data." + e.Fields[i].Name
			}
			return e
		}
		return errs.Field("data", "must be one valid JSON object nested at most "+strconv.Itoa(MaxDepth-1)+" levels")
	}
	return nil
}

// Outbox returns the outbox record of e: its serialized form with the attributes the relay and
// stores need apart. The record's Seq, PublishedAt and Attempts are left for the store.
func (e Event) Outbox() (OutboxRecord, error) {
	payload, err := e.MarshalJSON()
	if err != nil {
		return OutboxRecord{}, err
	}
	return e.record(payload), nil
}

// record is the outbox record of e serialized as payload.
func (e Event) record(payload []byte) OutboxRecord {
	return OutboxRecord{
		ID:        e.ID,
		Tenant:    e.Tenant,
		Type:      e.Type,
		Subject:   e.Subject,
		Payload:   payload,
		CreatedAt: e.Time,
	}
}
