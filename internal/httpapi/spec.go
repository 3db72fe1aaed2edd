package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"

	"github.com/nops-kernel/nops/api"
)

// Spec returns the kernel's OpenAPI document, parsed and validated from the embedded
// api/kernel.yaml.
func Spec() (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.KernelYAML)
	if err != nil {
		return nil, fmt.Errorf("load openapi spec: %w", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, fmt.Errorf("openapi spec is invalid: %w", err)
	}
	return doc, nil
}

// operation is what the perimeter needs to know about one route of the spec.
type operation struct {
	route     *routers.Route
	secured   bool     // a bearer credential is required
	scopes    []string // scopes the credential must grant
	bodyTypes []string // media types of the request body; nil when the operation takes none
}

// operations indexes the spec by ServeMux pattern ("GET /v1/auth/whoami"). Spec paths use the
// same {name} wildcards as ServeMux patterns.
func operations(doc *openapi3.T) (map[string]*operation, error) {
	out := map[string]*operation{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			o := &operation{route: &routers.Route{Spec: doc, Path: path, PathItem: item, Method: method, Operation: op}}
			reqs := doc.Security
			if op.Security != nil {
				reqs = *op.Security
			}
			for _, req := range reqs {
				for scheme := range req {
					if scheme != "bearerAuth" && scheme != "apiKeyAuth" {
						return nil, fmt.Errorf("%s %s: unsupported security scheme %q", method, path, scheme)
					}
				}
				o.secured = o.secured || len(req) > 0
			}
			// The scopes an operation needs are the x-nops-scopes extension: OpenAPI 3.0 allows
			// scopes only on OAuth2 schemes, and both of ours (bearer, API key) carry them.
			if raw, ok := op.Extensions["x-nops-scopes"]; ok {
				list, ok := raw.([]any)
				if !ok {
					return nil, fmt.Errorf("%s %s: x-nops-scopes must be a list of strings", method, path)
				}
				for _, v := range list {
					sc, ok := v.(string)
					if !ok {
						return nil, fmt.Errorf("%s %s: x-nops-scopes must be a list of strings", method, path)
					}
					o.scopes = append(o.scopes, sc)
				}
				if !o.secured {
					return nil, fmt.Errorf("%s %s: x-nops-scopes on an operation without security", method, path)
				}
			}
			if op.RequestBody != nil && op.RequestBody.Value != nil {
				for mt := range op.RequestBody.Value.Content {
					o.bodyTypes = append(o.bodyTypes, mt)
				}
				slices.Sort(o.bodyTypes)
			}
			out[method+" "+path] = o
		}
	}
	return out, nil
}

// specJSON renders doc once for GET /openapi.json.
func specJSON(doc *openapi3.T) ([]byte, error) {
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("render openapi spec: %w", err)
	}
	return b, nil
}

func serveBytes(contentType string, body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		_, _ = w.Write(body)
	})
}
