// Package events is the kernel's event envelope, event catalogue and transactional outbox.
//
// Every state change the kernel makes is described by one Event: a CloudEvents 1.0 envelope in
// the JSON structured format (specversion "1.0", media type application/cloudevents+json), whose
// data is one of the catalogue's payload structs. Domains build events with New, turn them into
// OutboxRecords with Event.Outbox, and write the record through an OutboxWriter in the same
// database transaction as the change, so an event exists exactly when its change committed. The
// bus relay (issue «durable event bus») reads them back through an OutboxRelayStore. NewRecord is
// New and Outbox in one step, for records built on a hot path (the metering of every invocation):
// it checks the same things but does not decode its own encoding of the payload again, as Outbox
// does for an Event of any origin.
//
// Any package may import events: it imports only errs and third-party modules, never another
// domain, so every domain can describe its changes with it. The payload structs are therefore
// copies of the public fields of each domain's resources (AgentSnapshot, APIKeySnapshot,
// TenantSnapshot), filled by the domain that emits the event. BillingUsage, the one record that
// describes a served call rather than a state change, is written by internal/billing.
//
// # Envelope profile
//
// The kernel emits, and Parse accepts, CloudEvents with these attributes:
//
//   - specversion "1.0"; id "evt_" + lower-case ULID for events made by New (Parse accepts any
//     non-empty string of at most 128 bytes); producers never reuse an id, so consumers
//     dedupe on it (the relay publishes with JetStream's Nats-Msg-Id = id).
//   - type "nops.<domain>.<event>.v<N>" (Type); a breaking change to a payload gets a new N.
//   - source "/nops/tenants/<tenant>" (TenantSource): the tenant is the context the event
//     happened in, so source + subject name the resource in full, e.g.
//     "/nops/tenants/ten_01…" + "agents/agt_01…".
//   - subject: the resource, "agents/<id>", "api-keys/<id>" or "tenants/<id>" (AgentSubject,
//     APIKeySubject, TenantSubject), the same path as in the HTTP API; for metering
//     (nops.billing.usage.v1) the tenant's usage, "tenants/<id>/usage" (UsageSubject).
//   - time: when the change happened, RFC 3339 in UTC.
//   - datacontenttype "application/json"; data: a JSON object, written inline (never
//     data_base64, although Parse accepts it as the JSON format allows).
//   - dataschema: "urn:nops:events:<type>" (DataSchemaURI). The spec requires an absolute URI,
//     so a relative path is not an option; the URN names the schema without promising a network
//     location. It resolves to the file api/events/<type>.json of this repository, whose "$id"
//     is the same URN. The envelope itself is described by api/events/cloudevent.json, $id
//     "urn:nops:events:cloudevent" (EnvelopeSchemaURI).
//   - tenant: extension attribute, the owning tenant's id. Bus subjects are built from it and
//     the type, so it is limited to [A-Za-z0-9_-]{1,64}: no character that means something in a
//     NATS subject or a Redis key.
//   - traceparent: optional extension attribute of the CloudEvents distributed-tracing
//     extension, a W3C Trace Context version-00 traceparent, so traces cross the bus.
//
// Other extension attributes are preserved in Event.Extensions.
//
// # Strict parsing
//
// Parse is meant for envelopes from untrusted sources (the bus, replay files, federation). Beyond
// the CloudEvents rules (required attributes, attribute names of at most 20 characters from
// a-z0-9, the attribute type system, null meaning absent, data and data_base64 mutually
// exclusive) it rejects what different JSON decoders could read differently: invalid UTF-8,
// unpaired surrogate escapes in attributes, duplicate member names (also duplicates under
// Unicode case folding, because encoding/json matches struct fields case-insensitively),
// payload fields spelled in another case, trailing data, and nesting deeper than MaxDepth. For a
// catalogue type it also decodes the payload and checks that the envelope's tenant, subject,
// source and dataschema agree with it, because routing and ACLs read the envelope while
// consumers act on the data.
//
// ParseAttributes is Parse for a consumer that reads the attributes only (the event-stats
// projection): the same checks of everything outside data, with the same errors, but of data only
// that it is present and one JSON object — no compaction, no structure check inside it, no
// payload decoding — so an event Parse refuses for its data alone it accepts.
//
// # Schemas and evolution
//
// The data schemas are closed (additionalProperties: false): a payload cannot carry a field
// nobody reviewed, in particular no secret. Go consumers decode leniently (unknown members are
// ignored), so adding an optional field within a version does not break them; a Schemas value
// loaded from older files than the producer's rejects such events, so validate inbound events
// with schemas at least as new as the producer's. Removing or changing a field is a new version;
// Event.Payload upcasts an event of an older version of a catalogue type to the newest one first,
// through the kernel's upcasters (upcast.go), so consumers decode the newest payload only.
//
// # Concurrency
//
// Event, OutboxRecord and the payload structs are plain values; New, Parse and the methods are
// safe for concurrent use. A *Schemas is immutable after LoadSchemas and safe for concurrent use.
package events
