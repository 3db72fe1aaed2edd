package events

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nops-kernel/nops/internal/errs"
)

// MarshalJSON writes e in the CloudEvents JSON format: the attributes as top-level members
// (extensions included, in name order), then data inline. It refuses an event that does not
// pass Validate or whose serialization exceeds MaxEventSize.
func (e Event) MarshalJSON() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return e.encode(true)
}

// encode writes e, whose attributes are valid, in the CloudEvents JSON format. With compactData
// the data is compacted on the way (an Event may come with data in any layout); without it the
// data must be compact already, as encoding/json writes it.
func (e Event) encode(compactData bool) ([]byte, error) {
	b := make([]byte, 0, len(e.Data)+512)
	b = append(b, '{')
	b = appendMember(b, "specversion", SpecVersion)
	b = appendMember(b, "id", e.ID)
	b = appendMember(b, "source", e.Source)
	b = appendMember(b, "type", string(e.Type))
	b = appendMember(b, "subject", e.Subject)
	b = append(b, `,"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendMember(b, "datacontenttype", e.DataContentType)
	b = appendMember(b, "dataschema", e.DataSchema)
	b = appendMember(b, ExtTenant, e.Tenant)
	if e.TraceParent != "" {
		b = appendMember(b, ExtTraceparent, e.TraceParent)
	}
	for _, name := range slices.Sorted(maps.Keys(e.Extensions)) {
		v, err := json.Marshal(e.Extensions[name])
		if err != nil {
			return nil, errs.Wrap(errs.Internal, err, "encode attribute %s", name)
		}
		b = append(appendString(append(b, ','), name), ':')
		b = append(b, v...)
	}
	b = append(b, `,"data":`...)
	if compactData {
		buf := bytes.NewBuffer(b)
		if err := json.Compact(buf, e.Data); err != nil {
			return nil, errs.Wrap(errs.Invalid, err, "data is not JSON")
		}
		b = buf.Bytes()
	} else {
		b = append(b, e.Data...)
	}
	b = append(b, '}')
	if len(b) > MaxEventSize {
		return nil, errs.New(errs.TooLarge, "event of %d bytes exceeds %d", len(b), MaxEventSize)
	}
	return b, nil
}

// appendMember appends the member name: value, preceded by a comma unless it is the first.
func appendMember(b []byte, name, value string) []byte {
	if len(b) > 1 {
		b = append(b, ',')
	}
	b = append(appendString(b, name), ':')
	return appendString(b, value)
}

// appendString appends s as a JSON string escaped exactly as encoding/json escapes it: attribute
// values are printable ASCII almost always, written as they are; anything else goes through
// json.Marshal (HTML characters, control characters, non-ASCII).
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			v, _ := json.Marshal(s) // a string always encodes
			return append(b, v...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// TraceParentAttr returns the traceparent attribute of a serialized event in the layout
// MarshalJSON writes — every outbox record's (Event.Outbox, NewRecord) — without decoding the
// event: "" when it has none. ok is false when payload is not in that layout (or the value holds
// an escape); the caller then decodes it. The relay reads it to join each record's trace.
func TraceParentAttr(payload []byte) (tp string, ok bool) {
	if !bytes.HasPrefix(payload, []byte(`{"specversion":"1.0","id":"`)) {
		return "", false
	}
	// The attributes are top-level members before data, and none of these patterns can occur
	// inside a string (a quote in a string is escaped): the first match is the member itself.
	head, _, found := bytes.Cut(payload, []byte(`,"data":`))
	if !found {
		return "", false
	}
	_, rest, found := bytes.Cut(head, []byte(`,"traceparent":"`))
	if !found {
		return "", true
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 || bytes.IndexByte(rest[:end], '\\') >= 0 {
		return "", false
	}
	return string(rest[:end]), true
}

// UnmarshalJSON reads an event with Parse's rules.
func (e *Event) UnmarshalJSON(b []byte) error {
	ev, err := Parse(b)
	if err != nil {
		return err
	}
	*e = ev
	return nil
}

// Parse reads one event in the CloudEvents JSON format from untrusted input and checks it
// against the profile (see the package documentation). It follows the format's rules: a null
// attribute is an absent one, an absent datacontenttype means application/json, and data may
// come as data (a JSON value) or data_base64 (whose bytes must then be the JSON object), never
// both. Errors are errs.Invalid naming the offending member, or errs.TooLarge above
// MaxEventSize.
func Parse(b []byte) (Event, error) {
	if err := checkInput(b); err != nil {
		return Event{}, err
	}
	if err := checkStructure(b, MaxDepth); err != nil {
		return Event{}, err
	}
	e, _, err := readAttributes(objectMembers(b))
	if err != nil {
		return Event{}, err
	}
	if err := checkDataObject(e.Data); err != nil {
		return Event{}, err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, e.Data); err != nil {
		return Event{}, errs.Wrap(errs.Invalid, err, "data is not JSON")
	}
	e.Data = compact.Bytes()
	// Validate, but for the data's structure, checked above (compacting keeps it).
	if err := e.validateAttributes(); err != nil {
		return Event{}, err
	}
	if _, err := e.payload(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// ParseAttributes reads one event in the CloudEvents JSON format from untrusted input and checks
// its context attributes exactly as Parse does — the same rules (size, UTF-8, one JSON object,
// no top-level member twice, specversion, id, source, type, subject, time, datacontenttype,
// dataschema, tenant, traceparent, extensions, null meaning absent, data and data_base64 not
// together), the same errors naming the member, and for a catalogue type the same source
// (TenantSource of the tenant) — for a consumer that reads the attributes only, such as the
// event-stats projection.
//
// Unlike Parse it does not look into data beyond knowing that it is present and one JSON object
// (the whole input is valid JSON; decoded data_base64 is UTF-8 and one valid JSON object): it
// neither compacts data nor checks its structure (repeated member names, nesting deeper than
// MaxDepth) nor upcasts and decodes it into the payload struct, so it does not check the payload
// nor its agreement with the tenant and subject attributes. Every event Parse accepts it accepts with the
// same attributes; it also accepts events whose data Parse refuses. The returned Event's Data is
// the data as it stands in b (not compacted), or the decoded data_base64.
func ParseAttributes(b []byte) (Event, error) {
	if err := checkInput(b); err != nil {
		return Event{}, err
	}
	members, err := uniqueMembers(b)
	if err != nil {
		return Event{}, err
	}
	e, fromBase64, err := readAttributes(members)
	if err != nil {
		return Event{}, err
	}
	// Inline data is valid JSON (the whole input is); decoded data_base64 is checked here.
	trimmed := bytes.TrimLeft(e.Data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' || fromBase64 && !utf8.Valid(e.Data) {
		return Event{}, errs.Field("data", "must be a JSON object")
	}
	if fromBase64 && !json.Valid(e.Data) {
		return Event{}, errs.Field("data", "must be one valid JSON object")
	}
	if err := e.validateAttributes(); err != nil {
		return Event{}, err
	}
	// Parse checks this with the payload (payloadBy), for the types it decodes; it needs the
	// attributes only.
	if kernelUpcasters.Latest(e.Type).Known() && e.Source != TenantSource(e.Tenant) {
		return Event{}, errs.Field("source", "must be "+TenantSource(e.Tenant))
	}
	return e, nil
}

// checkInput checks what Parse and ParseAttributes check of the input as a whole before reading
// it: its size and its encoding.
func checkInput(b []byte) error {
	if len(b) > MaxEventSize {
		return errs.New(errs.TooLarge, "event of %d bytes exceeds %d", len(b), MaxEventSize)
	}
	if !utf8.Valid(b) {
		return errs.New(errs.Invalid, "event is not valid UTF-8")
	}
	return nil
}

// readAttributes reads the attributes of an event from its top-level members, as Parse reads
// them: e.Data is the data member's text or the decoded data_base64 (fromBase64), unchecked.
func readAttributes(members map[string]json.RawMessage) (e Event, fromBase64 bool, err error) {
	var specversion string
	var haveData bool
	for name, raw := range members {
		isNull := string(raw) == "null"
		switch name {
		case "data":
			// A null data is a present, null payload, which the profile does not allow; the
			// object check after this rejects it.
			e.Data, haveData = raw, true
			continue
		case "data_base64":
			if isNull {
				continue
			}
			s, err := stringAttr(name, raw)
			if err != nil {
				return Event{}, false, err
			}
			decoded, err := base64.StdEncoding.Strict().DecodeString(s)
			if err != nil {
				return Event{}, false, errs.Field(name, "must be standard base64")
			}
			if _, dup := members["data"]; dup {
				return Event{}, false, errs.Field(name, "must not appear together with data")
			}
			e.Data, haveData, fromBase64 = decoded, true, true
			continue
		}
		if isNull {
			continue // the JSON format: null means unset
		}
		if !reserved(name) {
			v, err := extensionValue(name, raw)
			if err != nil {
				return Event{}, false, err
			}
			if e.Extensions == nil {
				e.Extensions = map[string]any{}
			}
			e.Extensions[name] = v
			continue
		}
		s, err := stringAttr(name, raw)
		if err != nil {
			return Event{}, false, err
		}
		switch name {
		case "specversion":
			specversion = s
		case "id":
			e.ID = s
		case "source":
			e.Source = s
		case "type":
			e.Type = Type(s)
		case "subject":
			e.Subject = s
		case "time":
			t, err := parseTimestamp(s)
			if err != nil {
				return Event{}, false, errs.Field(name, "must be an RFC 3339 timestamp")
			}
			e.Time = t.UTC()
		case "datacontenttype":
			e.DataContentType = s
		case "dataschema":
			e.DataSchema = s
		case ExtTenant:
			e.Tenant = s
		case ExtTraceparent:
			e.TraceParent = s
		}
	}
	if specversion != SpecVersion {
		return Event{}, false, errs.Field("specversion", "must be "+SpecVersion)
	}
	if e.DataContentType == "" {
		e.DataContentType = ContentTypeJSON
	}
	if !haveData {
		return Event{}, false, errs.Field("data", "is required")
	}
	return e, fromBase64, nil
}

// parseTimestamp reads an RFC 3339 timestamp. RFC 3339 allows a lower-case "t" and "z", which
// time.Parse does not, and time.Parse allows a comma before the fraction, which RFC 3339 does
// not.
func parseTimestamp(s string) (time.Time, error) {
	if strings.ContainsRune(s, ',') {
		return time.Time{}, errs.New(errs.Invalid, "not an RFC 3339 timestamp")
	}
	return time.Parse(time.RFC3339Nano, strings.ToUpper(s))
}

// stringAttr decodes an attribute that must be a JSON string holding a CloudEvents String.
// encoding/json turns an unpaired surrogate escape into U+FFFD silently, so the escapes are
// checked on the raw text first.
func stringAttr(name string, raw json.RawMessage) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", errs.Field(name, "must be a string")
	}
	var s string
	if bytes.IndexByte(raw, '\\') < 0 {
		s = string(raw[1 : len(raw)-1]) // no escape: the text is the string (raw is valid JSON)
	} else {
		if !pairedSurrogates(raw) {
			return "", errs.Field(name, "must not contain unpaired surrogates")
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", errs.Wrap(errs.Invalid, err, "attribute %s must be a string", name)
		}
	}
	if !ceString(s) {
		return "", errs.Field(name, "must not contain control characters, surrogates or noncharacters")
	}
	return s, nil
}

// extensionValue decodes an extension attribute: a string, a boolean or an integer in the int32
// range written without fraction or exponent.
func extensionValue(name string, raw json.RawMessage) (any, error) {
	if !attributeName(name) {
		return nil, errs.Field(name, "attribute names are 1 to 20 characters from a-z and 0-9")
	}
	switch raw[0] {
	case '"':
		return stringAttr(name, raw)
	case 't', 'f':
		return string(raw) == "true", nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		n, err := strconv.ParseInt(string(raw), 10, 32)
		if err != nil || n < math.MinInt32 || n > math.MaxInt32 {
			return nil, errs.Field(name, "integers must be whole numbers that fit in 32 bits")
		}
		return int32(n), nil
	}
	return nil, errs.Field(name, "must be a string, a boolean or an integer")
}

// pairedSurrogates reports whether every \uD800-\uDBFF escape in the JSON string raw is
// followed by a \uDC00-\uDFFF escape, and no low surrogate escape stands alone.
func pairedSurrogates(raw []byte) bool {
	wantLow := false
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			if wantLow {
				return false
			}
			continue
		}
		i++
		if i >= len(raw) {
			return false
		}
		if raw[i] != 'u' {
			if wantLow {
				return false
			}
			continue
		}
		if i+4 >= len(raw) {
			return false
		}
		v, err := strconv.ParseUint(string(raw[i+1:i+5]), 16, 16)
		if err != nil {
			return false
		}
		i += 4
		switch {
		case v >= 0xd800 && v <= 0xdbff:
			if wantLow {
				return false
			}
			wantLow = true
		case v >= 0xdc00 && v <= 0xdfff:
			if !wantLow {
				return false
			}
			wantLow = false
		default:
			if wantLow {
				return false
			}
		}
	}
	return !wantLow
}

// checkStructure requires b to be exactly one JSON object, nested at most maxDepth deep, with no
// member name repeated within an object. encoding/json would keep the last of two equal names
// while other decoders keep the first; refusing them keeps every reader of an event reading the
// same event.
//
// Once json.Valid has accepted b, the grammar is settled, so the walk only follows brackets,
// commas and strings (a number or a literal holds none of them) to track the nesting and, in
// each open object, its member names — decoded, so that "a" and "\u0061" are one name. Every
// consumer parses every event with it (Parse), so it does not go through encoding/json's
// tokenizer, which allocates per token.
func checkStructure(b []byte, maxDepth int) error {
	if !json.Valid(b) {
		return errs.New(errs.Invalid, "event is not valid JSON")
	}
	i := 0
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	if b[i] != '{' {
		return errs.New(errs.Invalid, "event must be a JSON object")
	}
	var stack []frame
	var names [][]byte // the member names of the open objects, outermost first
	wantName := false  // the next string is a member name
	for i < len(b) {
		switch c := b[i]; c {
		case '{', '[':
			if len(stack) >= maxDepth {
				return errs.New(errs.Invalid, "event nests deeper than %d levels", MaxDepth)
			}
			stack = append(stack, frame{object: c == '{', first: len(names)})
			wantName = c == '{'
			i++
		case '}', ']':
			names = names[:stack[len(stack)-1].first]
			stack = stack[:len(stack)-1]
			wantName = false
			i++
		case ',':
			wantName = stack[len(stack)-1].object
			i++
		case '"':
			end := stringEnd(b, i)
			if wantName {
				name := b[i+1 : end-1]
				if bytes.IndexByte(name, '\\') >= 0 {
					var s string
					_ = json.Unmarshal(b[i:end], &s) // a valid string: the decoded name
					name = []byte(s)
				}
				var dup bool
				if names, dup = stack[len(stack)-1].add(names, name); dup {
					return errs.Field(string(name), "appears more than once in one object")
				}
				wantName = false
			}
			i = end
		default: // ':', white space, numbers, true, false, null
			i++
		}
	}
	return nil
}

// stringEnd returns the index just past the JSON string that starts at b[i], in valid JSON.
func stringEnd(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// isSpace reports whether c is JSON white space.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// objectMembers returns the members of b, a JSON object in UTF-8 (Parse checks it) that
// checkStructure accepted (valid, no name twice): each name decoded, each value as its text in b. It is what json.Unmarshal into a
// map[string]json.RawMessage returns (except that the values share b's memory), without a second
// decoding pass over the whole event.
func objectMembers(b []byte) map[string]json.RawMessage {
	m, _ := scanMembers(b)
	return m
}

// uniqueMembers returns the members of b as objectMembers does, after checking what
// checkStructure checks of the top level only: b is valid JSON, an object, and no member name
// appears twice in it (decoded names, as checkStructure compares them). It does not walk into
// the values: ParseAttributes leaves the data's structure alone.
func uniqueMembers(b []byte) (map[string]json.RawMessage, error) {
	if !json.Valid(b) {
		return nil, errs.New(errs.Invalid, "event is not valid JSON")
	}
	i := 0
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	if b[i] != '{' {
		return nil, errs.New(errs.Invalid, "event must be a JSON object")
	}
	m, dup := scanMembers(b)
	if dup != "" {
		return nil, errs.Field(dup, "appears more than once in one object")
	}
	return m, nil
}

// scanMembers splits b, a valid JSON object, into its members: each name decoded, each value as
// its text in b. It stops at the first name that appears twice and returns it as dup (the map
// then holds the members before it).
func scanMembers(b []byte) (m map[string]json.RawMessage, dup string) {
	m = make(map[string]json.RawMessage, 16)
	i := bytes.IndexByte(b, '{') + 1
	for {
		for isSpace(b[i]) || b[i] == ',' {
			i++
		}
		if b[i] == '}' {
			return m, ""
		}
		end := stringEnd(b, i)
		name := memberName(b[i+1 : end-1])
		if strings.IndexByte(name, '\\') >= 0 {
			_ = json.Unmarshal(b[i:end], &name) // a valid string: the decoded name
		}
		if _, seen := m[name]; seen {
			return m, name
		}
		for i = end; isSpace(b[i]) || b[i] == ':'; i++ {
		}
		start := i
		switch b[i] {
		case '"':
			i = stringEnd(b, i)
		case '{', '[':
			for depth := 0; ; {
				switch b[i] {
				case '"':
					i = stringEnd(b, i)
					continue
				case '{', '[':
					depth++
				case '}', ']':
					depth--
				}
				i++
				if depth == 0 {
					break
				}
			}
		default: // a number, true, false or null: up to the next delimiter
			for !isSpace(b[i]) && b[i] != ',' && b[i] != '}' {
				i++
			}
		}
		m[name] = b[start:i]
	}
}

// memberName returns the member name whose text is raw, without allocating for the names of
// the profile's attributes, which every event has.
func memberName(raw []byte) string {
	switch string(raw) { // no allocation: the compiler compares the bytes
	case "specversion":
		return "specversion"
	case "id":
		return "id"
	case "source":
		return "source"
	case "type":
		return "type"
	case "subject":
		return "subject"
	case "time":
		return "time"
	case "datacontenttype":
		return "datacontenttype"
	case "dataschema":
		return "dataschema"
	case "data":
		return "data"
	case "data_base64":
		return "data_base64"
	case ExtTenant:
		return ExtTenant
	case ExtTraceparent:
		return ExtTraceparent
	}
	return string(raw)
}

// frame is an array or object open in checkStructure's walk.
type frame struct {
	object bool
	first  int                 // where the object's member names start in the walk's names
	set    map[string]struct{} // the member names once there are many
}

// manyNames is the number of member names beyond which an object's are looked up in a set rather
// than one by one, so that an object with many members costs linear time, not quadratic.
const manyNames = 16

// add records name as a member of the object f, whose names are names[f.first:], and reports
// whether it already was one.
func (f *frame) add(names [][]byte, name []byte) ([][]byte, bool) {
	if f.set != nil {
		if _, dup := f.set[string(name)]; dup {
			return names, true
		}
		f.set[string(name)] = struct{}{}
		return names, false
	}
	own := names[f.first:]
	if slices.ContainsFunc(own, func(n []byte) bool { return bytes.Equal(n, name) }) {
		return names, true
	}
	if len(own) < manyNames {
		return append(names, name), false
	}
	f.set = make(map[string]struct{}, 2*manyNames)
	for _, n := range own {
		f.set[string(n)] = struct{}{}
	}
	f.set[string(name)] = struct{}{}
	return names, false
}
