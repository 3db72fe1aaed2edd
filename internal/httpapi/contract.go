package httpapi

import (
	"net/http"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
)

// Contract matches requests to the operations of the spec, the same way the server's ServeMux
// does. The contract-validating test client uses it to find the operation a request targets.
type Contract struct {
	Doc *openapi3.T
	mux *http.ServeMux
	ops map[string]*operation
}

// NewContract loads the embedded spec.
func NewContract() (*Contract, error) {
	doc, err := Spec()
	if err != nil {
		return nil, err
	}
	ops, err := operations(doc)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	for pattern := range ops {
		mux.Handle(pattern, http.NotFoundHandler())
	}
	return &Contract{Doc: doc, mux: mux, ops: ops}, nil
}

// Match returns the spec route of r and its path parameters; ok is false when the spec has none.
func (c *Contract) Match(r *http.Request) (route *routers.Route, params map[string]string, ok bool) {
	_, pattern := c.mux.Handler(r)
	op, found := c.ops[pattern]
	if !found {
		return nil, nil, false
	}
	// Fill path parameters by matching through a request clone the mux can annotate.
	params = map[string]string{}
	if len(paramNames(op)) > 0 {
		capture := http.NewServeMux()
		capture.HandleFunc(pattern, func(_ http.ResponseWriter, r *http.Request) {
			for _, n := range paramNames(op) {
				params[n] = r.PathValue(n)
			}
		})
		capture.ServeHTTP(discard{}, r.Clone(r.Context()))
	}
	return op.route, params, true
}

// Patterns lists every operation of the spec as a ServeMux pattern ("GET /health").
func (c *Contract) Patterns() []string {
	out := make([]string, 0, len(c.ops))
	for p := range c.ops {
		out = append(out, p)
	}
	return out
}

// ConcretePath returns a path the spec path matches, wildcards filled with a sample segment.
func ConcretePath(specPath string) string { return concretePath(specPath) }

func paramNames(op *operation) []string {
	var out []string
	for _, ref := range append(op.route.PathItem.Parameters, op.route.Operation.Parameters...) {
		if ref.Value != nil && ref.Value.In == openapi3.ParameterInPath {
			out = append(out, ref.Value.Name)
		}
	}
	return out
}

type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// Security returns whether the operation behind pattern needs a credential, and which scopes.
func (c *Contract) Security(pattern string) (secured bool, scopes []string) {
	op, ok := c.ops[pattern]
	if !ok {
		return false, nil
	}
	return op.secured, op.scopes
}

// QueryParams returns the names of the query parameters of the operation behind pattern.
func (c *Contract) QueryParams(pattern string) []string {
	op, ok := c.ops[pattern]
	if !ok {
		return nil
	}
	var out []string
	for _, ref := range append(op.route.PathItem.Parameters, op.route.Operation.Parameters...) {
		if ref.Value != nil && ref.Value.In == openapi3.ParameterInQuery {
			out = append(out, ref.Value.Name)
		}
	}
	return out
}
