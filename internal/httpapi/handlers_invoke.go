package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/invoke"
	"github.com/nops-kernel/nops/internal/middleware"
	"github.com/nops-kernel/nops/internal/registry"
)

// Invoker runs invocations; the kernel passes *invoke.Service and *invoke.Async together.
type Invoker interface {
	// Serve relays the agent's answer to w, or returns an error when nothing was written.
	Serve(ctx context.Context, w http.ResponseWriter, req invoke.Request) error
	// Submit accepts req as an async invocation.
	Submit(ctx context.Context, req invoke.Request) (invoke.Invocation, error)
	// Invocation returns the tenant's async invocation id (errs.NotFound for another tenant's).
	Invocation(ctx context.Context, tenantID, id string) (invoke.Invocation, error)
}

// preferRespondAsync is the RFC 7240 preference that makes a call an async invocation.
const preferRespondAsync = "respond-async"

// invokeHandler serves POST /v1/invoke/{capability}. It is a plain handler, not a generated
// strict one, because the agent's answer streams through: its status, headers and body are the
// agent's, whatever their media type. With Prefer: respond-async it answers 202 itself.
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
		if _, async := preferences(r.Header.Values("Prefer"))[preferRespondAsync]; async {
			inv, err := h.deps.Invoke.Submit(r.Context(), req)
			if err != nil {
				d.errw.Write(w, r, err)
				return
			}
			writeAccepted(w, inv, named != nil)
			return
		}
		if err := h.deps.Invoke.Serve(r.Context(), w, req); err != nil {
			d.errw.Write(w, r, err)
		}
	})
}

// invocationAccepted is the body of the 202 (api/kernel.yaml InvocationAccepted).
type invocationAccepted struct {
	ID         string    `json:"id"`
	Status     string    `json:"status"`
	Capability string    `json:"capability"`
	CreatedAt  time.Time `json:"created_at"`
}

// writeAccepted answers 202 for an async invocation. The Location names the tenant when the
// caller named it (a SUPER_ADMIN), so that following it reads the same tenant's invocation.
func writeAccepted(w http.ResponseWriter, inv invoke.Invocation, namedTenant bool) {
	loc := "/v1/invocations/" + url.PathEscape(inv.ID)
	if namedTenant {
		loc += "?tenant=" + url.QueryEscape(inv.TenantID)
	}
	hd := w.Header()
	hd.Set("Location", loc)
	hd.Set("Preference-Applied", preferRespondAsync)
	hd.Set(invoke.HeaderInvocation, inv.ID)
	hd.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(invocationAccepted{ID: inv.ID, Status: inv.Status, Capability: inv.Capability, CreatedAt: inv.CreatedAt.UTC()})
}

func (h *handlers) GetInvocation(ctx context.Context, req gen.GetInvocationRequestObject) (gen.GetInvocationResponseObject, error) {
	if h.deps.Invoke == nil {
		return nil, errs.New(errs.Unavailable, "the invoke API is not enabled on this kernel")
	}
	tenantID, err := h.tenantFor(ctx, req.Params.Tenant)
	if err != nil {
		return nil, err
	}
	inv, err := h.deps.Invoke.Invocation(ctx, tenantID, req.InvocationId)
	if err != nil {
		return nil, err
	}
	return gen.GetInvocation200JSONResponse(invocationOut(inv)), nil
}

// invocationOut renders inv for GET /v1/invocations/{invocation_id}.
func invocationOut(inv invoke.Invocation) gen.Invocation {
	out := gen.Invocation{
		Id: inv.ID, Capability: inv.Capability, Status: gen.InvocationStatus(inv.Status), AgentId: optString(inv.AgentID),
		Attempts: inv.Attempts, CreatedAt: inv.CreatedAt.UTC(), ExpiresAt: inv.ExpiresAt.UTC(),
		StartedAt: optTime(inv.StartedAt), CompletedAt: optTime(inv.CompletedAt),
	}
	if inv.ResponseStatus != 0 {
		r := &gen.InvocationResponse{Status: inv.ResponseStatus, ContentType: optString(inv.ResponseContentType)}
		var base64Body bool
		r.Body, base64Body = bodyOut(inv.ResponseContentType, inv.ResponseBody)
		if base64Body {
			enc := gen.Base64
			r.BodyEncoding = &enc
		}
		out.Response = r
	}
	if inv.ErrorStatus != 0 {
		out.Error = &gen.InvocationError{Status: inv.ErrorStatus, Detail: inv.ErrorDetail}
	}
	return out
}

// bodyOut is how an agent's answer body appears in JSON: absent when empty, the JSON value itself
// when the content type is JSON and the body parses, a string when it is UTF-8 text, otherwise
// base64 (reported by the second result).
func bodyOut(contentType string, b []byte) (any, bool) {
	switch {
	case len(b) == 0:
		return nil, false
	case jsonMediaType(contentType) && json.Valid(b):
		return json.RawMessage(b), false
	case utf8.Valid(b):
		return string(b), false
	default:
		return base64.StdEncoding.EncodeToString(b), true
	}
}

// jsonMediaType reports whether contentType is application/json or a +json type.
func jsonMediaType(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}
