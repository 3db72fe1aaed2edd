package nops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.opentelemetry.io/otel/propagation"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Headers the kernel sends with each invocation.
const (
	HeaderInvocationID = "Nops-Invocation-Id"
	HeaderTenant       = "Nops-Tenant"
	HeaderCapability   = "Nops-Capability"
	HeaderTimeoutMs    = "Nops-Timeout-Ms"
)

// maxInputBytes bounds the body an invocation handler reads.
const maxInputBytes = 8 << 20

// Invocation is one call of a capability, as the kernel relayed it.
type Invocation struct {
	ID         string // Nops-Invocation-Id
	Tenant     string // Nops-Tenant
	Capability string
	// Input is the request body; valid against the capability's input schema when it has one.
	Input  json.RawMessage
	Header http.Header
}

// HandlerFunc serves one invocation. Its context carries the kernel's deadline and the caller's
// trace context. The result is sent as JSON (a json.RawMessage or []byte as is); an *Error is
// sent as a problem with its status, any other error as a 500 problem that does not quote it.
type HandlerFunc func(ctx context.Context, inv *Invocation) (any, error)

// Capability is what an agent offers.
type Capability struct {
	Name        string
	Description string
	// InputSchema is a JSON Schema (draft 2020-12) of the input, or nil. The kernel checks it
	// before routing; the agent checks it again, so direct calls get the same guarantee.
	InputSchema json.RawMessage
	// OutputSchema is a JSON Schema of the output, published in the registry.
	OutputSchema json.RawMessage
	Handle       HandlerFunc
}

// compiled is a capability ready to serve.
type compiled struct {
	Capability
	schema *jsonschema.Schema
}

func compileCapability(c Capability) (*compiled, error) {
	if c.Name == "" || c.Handle == nil {
		return nil, errors.New("a capability needs a name and a handler")
	}
	out := &compiled{Capability: c}
	if len(c.InputSchema) == 0 {
		return out, nil
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(c.InputSchema))
	if err != nil {
		return nil, fmt.Errorf("capability %s: input schema: %w", c.Name, err)
	}
	comp := jsonschema.NewCompiler()
	comp.DefaultDraft(jsonschema.Draft2020)
	comp.UseLoader(noLoader{})
	const uri = "urn:nops:sdk:input-schema"
	if err := comp.AddResource(uri, doc); err != nil {
		return nil, fmt.Errorf("capability %s: input schema: %w", c.Name, err)
	}
	if out.schema, err = comp.Compile(uri); err != nil {
		return nil, fmt.Errorf("capability %s: input schema: %w", c.Name, err)
	}
	return out, nil
}

// noLoader refuses remote $refs: a schema is self-contained, as the kernel requires.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("remote $ref %s refused", url)
}

// invocationHandler serves POST /invoke/{capability} for the capabilities of an agent.
type invocationHandler struct {
	caps       map[string]*compiled
	propagator propagation.TextMapPropagator
	hooks      Hooks
	logger     *slog.Logger
	printer    *message.Printer
	track      func(delta int64)                 // in-flight accounting of the agent
	done       func(d time.Duration, status int) // latency and outcome accounting
}

func (h *invocationHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	h.track(1)
	defer h.track(-1)
	name, ok := strings.CutPrefix(r.URL.Path, "/invoke/")
	inv := &Invocation{ID: r.Header.Get(HeaderInvocationID), Tenant: r.Header.Get(HeaderTenant), Capability: name, Header: r.Header}
	status := h.serve(w, r, inv, ok)
	d := time.Since(start)
	h.done(d, status)
	h.hooks.invocation(InvocationEvent{
		Capability: name, InvocationID: inv.ID, Tenant: inv.Tenant, Status: status, Duration: d,
	})
}

func (h *invocationHandler) serve(w http.ResponseWriter, r *http.Request, inv *Invocation, pathOK bool) int {
	c := h.caps[inv.Capability]
	switch {
	case !pathOK || c == nil:
		return writeProblem(w, &Error{Status: http.StatusNotFound, Code: "not_found", Detail: "no such capability"})
	case r.Method != http.MethodPost:
		w.Header().Set("Allow", http.MethodPost)
		return writeProblem(w, &Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Detail: "invocations are POST"})
	}
	if hc := r.Header.Get(HeaderCapability); hc != "" && hc != inv.Capability {
		return writeProblem(w, &Error{Status: http.StatusBadRequest, Code: "invalid", Detail: "Nops-Capability does not match the path",
			Errors: []FieldError{{Name: "header.Nops-Capability", Reason: "must be the capability of the path"}}})
	}
	ctx := h.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	if v := r.Header.Get(HeaderTimeoutMs); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms <= 0 {
			return writeProblem(w, &Error{Status: http.StatusBadRequest, Code: "invalid", Detail: "Nops-Timeout-Ms must be a positive integer",
				Errors: []FieldError{{Name: "header.Nops-Timeout-Ms", Reason: "must be a positive integer"}}})
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
		defer cancel()
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxInputBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return writeProblem(w, &Error{Status: http.StatusRequestEntityTooLarge, Code: "too_large", Detail: fmt.Sprintf("the input must be at most %d bytes", maxInputBytes)})
		}
		return writeProblem(w, &Error{Status: http.StatusBadRequest, Code: "invalid", Detail: "could not read the input"})
	}
	if c.schema != nil {
		if perr := h.validate(c.schema, r.Header.Get("Content-Type"), body); perr != nil {
			return writeProblem(w, perr)
		}
	}
	inv.Input = body
	out, err := c.Handle(ctx, inv)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Status >= 400 && e.Status <= 599 {
			return writeProblem(w, e)
		}
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return writeProblem(w, &Error{Status: http.StatusGatewayTimeout, Code: "gateway_timeout", Detail: "the invocation's deadline passed"})
		}
		h.logger.ErrorContext(ctx, "invocation failed", "capability", inv.Capability, "invocation", inv.ID, "err", err)
		return writeProblem(w, &Error{Status: http.StatusInternalServerError, Code: "internal", Detail: "the agent failed to serve the invocation"})
	}
	var payload []byte
	switch v := out.(type) {
	case json.RawMessage:
		payload = v
	case []byte:
		payload = v
	default:
		if payload, err = json.Marshal(v); err != nil {
			h.logger.ErrorContext(ctx, "encode result", "capability", inv.Capability, "err", err)
			return writeProblem(w, &Error{Status: http.StatusInternalServerError, Code: "internal", Detail: "the agent's result is not JSON"})
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(payload)
	return http.StatusOK
}

// maxFieldErrors bounds the fields one problem lists.
const maxFieldErrors = 20

// validate checks a JSON body against schema; the problem names the offending fields
// (body.a.b[2]) as the kernel does.
func (h *invocationHandler) validate(schema *jsonschema.Schema, contentType string, body []byte) *Error {
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt != "application/json" && !(strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return &Error{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type", Detail: "this capability takes JSON input: Content-Type must be application/json"}
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return &Error{Status: http.StatusBadRequest, Code: "invalid", Detail: "the input is not valid JSON",
			Errors: []FieldError{{Name: "body", Reason: "must be valid JSON"}}}
	}
	err = schema.Validate(inst)
	if err == nil {
		return nil
	}
	e := &Error{Status: http.StatusBadRequest, Code: "invalid", Detail: "the input does not match the capability's input schema"}
	var ve *jsonschema.ValidationError
	if errors.As(err, &ve) {
		var walk func(v *jsonschema.ValidationError)
		walk = func(v *jsonschema.ValidationError) {
			if len(e.Errors) >= maxFieldErrors {
				return
			}
			if len(v.Causes) == 0 {
				e.Errors = append(e.Errors, FieldError{Name: fieldName(v.InstanceLocation), Reason: truncate(v.ErrorKind.LocalizedString(h.printer), 200)})
				return
			}
			for _, c := range v.Causes {
				walk(c)
			}
		}
		walk(ve)
	}
	if len(e.Errors) == 0 {
		e.Errors = []FieldError{{Name: "body", Reason: "does not match the capability's input schema"}}
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

// problemTitles are the titles of the statuses an agent answers.
func problemTitle(status int) string {
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "Error"
}

// writeProblem answers e as application/problem+json and returns its status.
func writeProblem(w http.ResponseWriter, e *Error) int {
	p := *e
	if p.Title == "" {
		p.Title = problemTitle(p.Status)
	}
	if p.Type == "" {
		p.Type = "about:blank"
	}
	if p.Code != "" && p.Type == "about:blank" {
		p.Type = "urn:nops:problem:" + p.Code
	}
	b, _ := json.Marshal(p)
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_, _ = w.Write(b)
	return p.Status
}

func newPrinter() *message.Printer { return message.NewPrinter(language.English) }
