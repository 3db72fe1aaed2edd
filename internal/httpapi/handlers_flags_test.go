package httpapi

import (
	"testing"
)

// Without a flags service (and evaluator) every flags operation answers 503, after
// authorization (a VIEWER is still refused a write with 403).
func TestFlagsUnavailable(t *testing.T) {
	w := newManagedWorld(t, nil)
	spec := map[string]any{"type": "boolean", "default_variant": "false"}
	w.must(503, "GET", "/v1/flags", w.admin, nil)
	w.must(503, "GET", "/v1/flags/f", w.admin, nil)
	w.must(503, "PUT", "/v1/flags/f", w.admin, spec)
	w.must(503, "DELETE", "/v1/flags/f", w.admin, nil)
	w.must(503, "GET", "/v1/flags/f/evaluation", w.keys["VIEWER"], nil)
	w.must(403, "PUT", "/v1/flags/f", w.keys["VIEWER"], spec)
	w.must(403, "GET", "/v1/flags", w.keys["ADMIN"], nil)
}
