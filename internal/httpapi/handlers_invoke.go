package httpapi

import (
	"context"
	"io"
	"net/http"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/invoke"
	"github.com/nops-kernel/nops/internal/middleware"
	"github.com/nops-kernel/nops/internal/registry"
)

// Invoker runs invocations; *invoke.Service implements it.
type Invoker interface {
	// Serve relays the agent's answer to w, or returns an error when nothing was written.
	Serve(ctx context.Context, w http.ResponseWriter, req invoke.Request) error
}

// invokeHandler serves POST /v1/invoke/{capability}. It is a plain handler, not a generated
// strict one, because the agent's answer streams through: its status, headers and body are the
// agent's, whatever their media type.
func (d *dispatcher) invokeHandler(h *handlers) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.deps.Invoke == nil {
			d.errw.Write(w, r, errs.New(errs.Unavailable, "the invoke API is not enabled on this kernel"))
			return
		}
		capability := r.PathValue("capability")
		if !registry.ValidCapabilityName(capability) {
			d.errw.Write(w, r, errs.Field("path.capability", "must be a capability name"))
			return
		}
		var named *string
		if t := r.URL.Query().Get("tenant"); t != "" {
			named = &t
		}
		tenantID, err := h.tenantFor(r.Context(), named)
		if err != nil {
			d.errw.Write(w, r, err)
			return
		}
		body, err := io.ReadAll(r.Body) // bounded by the body limit
		if err != nil {
			d.errw.Write(w, r, err)
			return
		}
		req := invoke.Request{
			TenantID:   tenantID,
			Capability: capability,
			RequestID:  middleware.RequestIDFromContext(r.Context()),
			Header:     r.Header,
			Body:       body,
		}
		if err := h.deps.Invoke.Serve(r.Context(), w, req); err != nil {
			d.errw.Write(w, r, err)
		}
	})
}
