package invoke

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/registry"
)

// maxSchemas bounds the compiled-schema cache; when full it starts over (schemas are few and
// stable, so this only matters against churn).
const maxSchemas = 4096

// schemaCache compiles each distinct schema document once.
type schemaCache struct {
	printer *message.Printer // renders the validator's messages
	mu      sync.RWMutex
	m       map[[32]byte]*jsonschema.Schema
}

func newSchemaCache() *schemaCache {
	return &schemaCache{printer: message.NewPrinter(language.English), m: map[[32]byte]*jsonschema.Schema{}}
}

// get returns the compiled form of raw. The registry compiled it at registration, so an error
// here means the document changed meaning (it cannot): it is reported as internal.
func (c *schemaCache) get(raw json.RawMessage) (*jsonschema.Schema, error) {
	key := sha256.Sum256(raw)
	c.mu.RLock()
	s, ok := c.m[key]
	c.mu.RUnlock()
	if ok {
		return s, nil
	}
	s, err := registry.CompileSchema(raw)
	if err != nil {
		return nil, fmt.Errorf("compile input schema: %w", err)
	}
	c.mu.Lock()
	if len(c.m) >= maxSchemas {
		clear(c.m)
	}
	c.m[key] = s
	c.mu.Unlock()
	return s, nil
}

// inputSchema returns the input schema agent a declares for capability, or nil.
func inputSchema(a registry.Agent, capability string) json.RawMessage {
	for _, c := range a.Capabilities {
		if c.Name == capability {
			if len(c.InputSchema) == 0 || string(c.InputSchema) == "true" || string(c.InputSchema) == "{}" {
				return nil
			}
			return c.InputSchema
		}
	}
	return nil
}

// validateInput checks body against the schema: the body must be JSON (Content-Type
// application/json or a +json type) and valid. Errors are errs.Invalid naming body fields.
func (c *schemaCache) validateInput(raw json.RawMessage, contentType string, body []byte) error {
	s, err := c.get(raw)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "the agent's input schema does not compile")
	}
	if !isJSON(contentType) {
		return errs.New(errs.UnsupportedMediaType, "this capability takes JSON input: Content-Type must be application/json")
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return errs.Field("body", "must be valid JSON")
	}
	if err := s.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return schemaProblem(ve, c.printer)
		}
		return errs.Field("body", "does not match the capability's input schema")
	}
	return nil
}

func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// maxFieldErrors bounds the fields one problem lists.
const maxFieldErrors = 20

// schemaProblem turns the validator's error tree into field errors named "body.a.b[2]".
func schemaProblem(ve *jsonschema.ValidationError, p *message.Printer) error {
	e := errs.New(errs.Invalid, "the input does not match the capability's input schema")
	var walk func(v *jsonschema.ValidationError)
	walk = func(v *jsonschema.ValidationError) {
		if len(e.Fields) >= maxFieldErrors {
			return
		}
		if len(v.Causes) == 0 {
			e.Fields = append(e.Fields, errs.FieldError{Name: fieldName(v.InstanceLocation), Reason: shortReason(v, p)})
			return
		}
		for _, c := range v.Causes {
			walk(c)
		}
	}
	walk(ve)
	if len(e.Fields) == 0 {
		e.Fields = []errs.FieldError{{Name: "body", Reason: "does not match the capability's input schema"}}
	}
	return e
}

func fieldName(loc []string) string {
	var b strings.Builder
	b.WriteString("body")
	for _, p := range loc {
		if p != "" && strings.Trim(p, "0123456789") == "" {
			b.WriteString("[" + p + "]")
		} else {
			b.WriteString("." + p)
		}
	}
	return b.String()
}

func shortReason(v *jsonschema.ValidationError, p *message.Printer) string {
	msg := v.ErrorKind.LocalizedString(p)
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return msg
}
