package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// schemaURL is the base URL a capability schema is compiled under. The .invalid top-level domain
// (RFC 2606) cannot resolve, and nothing is ever fetched anyway: relative references resolve
// against it and are then refused by the loader.
const (
	schemaBase = "https://schemas.nops.invalid/"
	schemaURL  = schemaBase + "capability.json"
)

// maxReasonLen bounds the library's compile message quoted back to the client.
const maxReasonLen = 300

// errExternalRef is what the loader answers for every URL.
var errExternalRef = errors.New("references outside the schema document are not allowed")

// refusingLoader is the compiler's only URL loader. The library's default loader reads file://
// URLs from the local disk; this one loads nothing, so a schema can reference only itself and the
// standard meta-schemas the library embeds.
type refusingLoader struct{}

func (refusingLoader) Load(string) (any, error) { return nil, errExternalRef }

// CompileSchema compiles raw as a JSON Schema: draft 2020-12 unless its $schema names another
// draft the library embeds. It never touches the network or the file system: any $ref or $schema
// outside the document is refused. raw must be a JSON object or boolean of at most MaxSchemaBytes
// nesting at most MaxSchemaDepth levels. The error message is safe to show the schema's author.
func CompileSchema(raw json.RawMessage) (*jsonschema.Schema, error) {
	if len(raw) > MaxSchemaBytes {
		return nil, fmt.Errorf("must be at most %d bytes", MaxSchemaBytes)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, errors.New("must be valid JSON")
	}
	switch doc.(type) {
	case map[string]any, bool:
	default:
		return nil, errors.New("must be a JSON Schema: an object or a boolean")
	}
	if jsonDepth(doc, 0) > MaxSchemaDepth {
		return nil, fmt.Errorf("must nest at most %d levels", MaxSchemaDepth)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(refusingLoader{})
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, fmt.Errorf("add schema resource: %w", err)
	}
	sch, err := c.Compile(schemaURL)
	if err != nil {
		return nil, errors.New(compileReason(err))
	}
	return sch, nil
}

// compileReason turns the library's error into one short line for the client.
func compileReason(err error) string {
	// LoadURLError has no Unwrap method, hence the two steps.
	var le *jsonschema.LoadURLError
	if errors.As(err, &le) && errors.Is(le.Err, errExternalRef) {
		// A relative reference is shown as written, not resolved against our base URL.
		ref := strings.TrimPrefix(le.URL, schemaBase)
		return fmt.Sprintf("must not reference %s: %v", strconvQuote(ref), errExternalRef)
	}
	// The base URL is ours, not the author's; "schema" reads better in their error.
	msg := strings.ReplaceAll(err.Error(), schemaURL, "schema")
	msg = strings.ReplaceAll(msg, schemaBase, "")
	// Validation against the meta-schema nests its causes one per line; the first lines say what
	// is wrong and where.
	lines := strings.Split(msg, "\n")
	lines = slices.DeleteFunc(lines, func(l string) bool { return strings.TrimSpace(l) == "" })
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return "is not a valid JSON Schema: " + shorten(strings.Join(lines, "; "))
}

func strconvQuote(s string) string { return strconv.Quote(shorten(s)) }

func shorten(s string) string {
	if len(s) <= maxReasonLen {
		return s
	}
	return strings.ToValidUTF8(s[:maxReasonLen], "") + "…"
}
