package events

import (
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/nops-kernel/nops/internal/errs"
)

// Schemas validates serialized events against the JSON Schemas of api/events: the envelope
// against cloudevent.json, the data against the schema its type names. Build one with
// LoadSchemas; it is immutable and safe for concurrent use.
type Schemas struct {
	envelope *jsonschema.Schema
	data     map[Type]*jsonschema.Schema
}

// LoadSchemas compiles the schemas in fsys, the api/events directory (os.DirFS in tests and
// tools; the composition root may embed it). fsys must hold exactly EnvelopeSchemaFile and
// SchemaFile(t) for every catalogue type t among its .json files, each with the "$id" the
// naming convention gives it; anything else is an error, so a schema cannot silently go
// missing or stay behind. Schemas never fetch anything: a "$ref" outside fsys fails to compile.
func LoadSchemas(fsys fs.FS) (*Schemas, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(refuseLoader{})

	want := map[string]string{EnvelopeSchemaFile: EnvelopeSchemaURI}
	for _, t := range Catalogue() {
		want[SchemaFile(t)] = DataSchemaURI(t)
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read event schemas: %w", err)
	}
	for _, ent := range entries {
		name := ent.Name()
		if ent.IsDir() || path.Ext(name) != ".json" {
			continue
		}
		uri, ok := want[name]
		if !ok {
			return nil, fmt.Errorf("event schema %s: no catalogue event type has this file", name)
		}
		delete(want, name)
		raw, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("read event schema %s: %w", name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("parse event schema %s: %w", name, err)
		}
		obj, _ := doc.(map[string]any)
		if id, _ := obj["$id"].(string); id != uri {
			return nil, fmt.Errorf("event schema %s: $id is %q, want %q", name, id, uri)
		}
		if err := c.AddResource(uri, doc); err != nil {
			return nil, fmt.Errorf("add event schema %s: %w", name, err)
		}
	}
	if len(want) > 0 {
		missing := make([]string, 0, len(want))
		for name := range want {
			missing = append(missing, name)
		}
		return nil, fmt.Errorf("event schemas missing: %s", strings.Join(missing, ", "))
	}

	s := &Schemas{data: make(map[Type]*jsonschema.Schema)}
	if s.envelope, err = c.Compile(EnvelopeSchemaURI); err != nil {
		return nil, fmt.Errorf("compile event schema %s: %w", EnvelopeSchemaFile, err)
	}
	for _, t := range Catalogue() {
		if s.data[t], err = c.Compile(DataSchemaURI(t)); err != nil {
			return nil, fmt.Errorf("compile event schema %s: %w", SchemaFile(t), err)
		}
	}
	return s, nil
}

// refuseLoader fails every load: all schemas are added from fsys before compiling.
type refuseLoader struct{}

func (refuseLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("event schemas load nothing from outside api/events: %s", url)
}

// Validate checks one serialized event against the envelope schema and its data against the
// schema of its type. A mismatch, or a type outside the catalogue, is an errs.Invalid whose
// cause describes the failing keywords.
func (s *Schemas) Validate(event []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(event))
	if err != nil {
		return errs.Wrap(errs.Invalid, err, "event is not JSON")
	}
	if err := s.envelope.Validate(inst); err != nil {
		return errs.Wrap(errs.Invalid, err, "event does not match %s", EnvelopeSchemaURI)
	}
	obj := inst.(map[string]any) // the envelope schema requires an object
	t, _ := obj["type"].(string)
	return s.ValidateData(Type(t), obj["data"])
}

// ValidateData checks a decoded payload (as jsonschema.UnmarshalJSON or encoding/json with
// UseNumber returns it) against the data schema of type t.
func (s *Schemas) ValidateData(t Type, data any) error {
	sch, ok := s.data[t]
	if !ok {
		return errs.Field("type", "not a catalogue event type")
	}
	if err := sch.Validate(data); err != nil {
		return errs.Wrap(errs.Invalid, err, "event data does not match %s", DataSchemaURI(t))
	}
	return nil
}
