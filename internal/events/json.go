package events

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
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
	var b bytes.Buffer
	b.Grow(len(e.Data) + 512)
	b.WriteByte('{')
	member := func(name string, value any) error {
		v, err := json.Marshal(value)
		if err != nil {
			return errs.Wrap(errs.Internal, err, "encode attribute %s", name)
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(name))
		b.WriteByte(':')
		b.Write(v)
		return nil
	}
	attrs := []struct {
		name  string
		value any
	}{
		{"specversion", SpecVersion},
		{"id", e.ID},
		{"source", e.Source},
		{"type", string(e.Type)},
		{"subject", e.Subject},
		{"time", e.Time.UTC().Format(time.RFC3339Nano)},
		{"datacontenttype", e.DataContentType},
		{"dataschema", e.DataSchema},
		{ExtTenant, e.Tenant},
	}
	if e.TraceParent != "" {
		attrs = append(attrs, struct {
			name  string
			value any
		}{ExtTraceparent, e.TraceParent})
	}
	for _, a := range attrs {
		if err := member(a.name, a.value); err != nil {
			return nil, err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(e.Extensions)) {
		if err := member(name, e.Extensions[name]); err != nil {
			return nil, err
		}
	}
	b.WriteString(`,"data":`)
	if err := json.Compact(&b, e.Data); err != nil {
		return nil, errs.Wrap(errs.Invalid, err, "data is not JSON")
	}
	b.WriteByte('}')
	if b.Len() > MaxEventSize {
		return nil, errs.New(errs.TooLarge, "event of %d bytes exceeds %d", b.Len(), MaxEventSize)
	}
	return b.Bytes(), nil
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
	if len(b) > MaxEventSize {
		return Event{}, errs.New(errs.TooLarge, "event of %d bytes exceeds %d", len(b), MaxEventSize)
	}
	if !utf8.Valid(b) {
		return Event{}, errs.New(errs.Invalid, "event is not valid UTF-8")
	}
	if err := checkStructure(b, MaxDepth); err != nil {
		return Event{}, err
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(b, &members); err != nil {
		return Event{}, errs.Wrap(errs.Invalid, err, "event must be a JSON object")
	}
	var e Event
	var specversion string
	var haveData bool
	for name, raw := range members {
		isNull := string(raw) == "null"
		switch name {
		case "data":
			// A null data is a present, null payload, which the profile does not allow; the
			// object check below rejects it.
			e.Data, haveData = raw, true
			continue
		case "data_base64":
			if isNull {
				continue
			}
			s, err := stringAttr(name, raw)
			if err != nil {
				return Event{}, err
			}
			decoded, err := base64.StdEncoding.Strict().DecodeString(s)
			if err != nil {
				return Event{}, errs.Field(name, "must be standard base64")
			}
			if _, dup := members["data"]; dup {
				return Event{}, errs.Field(name, "must not appear together with data")
			}
			e.Data, haveData = decoded, true
			continue
		}
		if isNull {
			continue // the JSON format: null means unset
		}
		if !reserved(name) {
			v, err := extensionValue(name, raw)
			if err != nil {
				return Event{}, err
			}
			if e.Extensions == nil {
				e.Extensions = map[string]any{}
			}
			e.Extensions[name] = v
			continue
		}
		s, err := stringAttr(name, raw)
		if err != nil {
			return Event{}, err
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
				return Event{}, errs.Field(name, "must be an RFC 3339 timestamp")
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
		return Event{}, errs.Field("specversion", "must be "+SpecVersion)
	}
	if e.DataContentType == "" {
		e.DataContentType = ContentTypeJSON
	}
	if !haveData {
		return Event{}, errs.Field("data", "is required")
	}
	if err := checkDataObject(e.Data); err != nil {
		return Event{}, err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, e.Data); err != nil {
		return Event{}, errs.Wrap(errs.Invalid, err, "data is not JSON")
	}
	e.Data = compact.Bytes()
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
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
	if !pairedSurrogates(raw) {
		return "", errs.Field(name, "must not contain unpaired surrogates")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", errs.Wrap(errs.Invalid, err, "attribute %s must be a string", name)
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
func checkStructure(b []byte, maxDepth int) error {
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
