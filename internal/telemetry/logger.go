package telemetry

import (
	"context"
	"io"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// NewLogger returns the kernel's logger: one JSON object per line on w, records below level
// dropped, every record passed through NewRedactingHandler.
func NewLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(NewRedactingHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})))
}

// NewRedactingHandler wraps inner so that no secret reaches it:
//
//   - the value of any attribute whose key names a secret (IsSecretKey: password, token,
//     api_key, authorization, cookie, ... also as part of a longer key such as "db_password")
//     becomes Redacted, at the top level, inside groups and in attributes added by WithAttrs;
//     inside a group opened by WithGroup with a secret name, every value is redacted;
//   - string values, the message, error texts, Stringers and other values (rendered to JSON)
//     are scrubbed of e-mail addresses, Bearer/Basic credentials, JWTs, secret key=value pairs
//     and URL userinfo passwords (see Scrub);
//   - trace_id and span_id of a valid OpenTelemetry span in the record's context are added at
//     the top level, unless the record already carries them.
//
// Groups opened by WithGroup are kept here rather than delegated to inner so that trace_id and
// span_id stay top-level fields that log queries can rely on; attributes added before the first
// group are still pre-formatted by inner.
func NewRedactingHandler(inner slog.Handler) slog.Handler {
	return &redactingHandler{inner: inner}
}

type redactingHandler struct {
	inner  slog.Handler
	groups []groupFrame // open groups, outermost first
}

// groupFrame is a group opened by WithGroup and the attributes added inside it.
type groupFrame struct {
	name   string
	secret bool
	attrs  []slog.Attr
}

func (h *redactingHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

// inSecretGroup reports whether an enclosing group's name is a secret key.
func (h *redactingHandler) inSecretGroup() bool {
	for _, g := range h.groups {
		if g.secret {
			return true
		}
	}
	return false
}

func (h *redactingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	red := redactAttrs(as, h.inSecretGroup())
	if len(h.groups) == 0 {
		return &redactingHandler{inner: h.inner.WithAttrs(red)}
	}
	groups := make([]groupFrame, len(h.groups))
	copy(groups, h.groups)
	last := &groups[len(groups)-1]
	last.attrs = append(append(make([]slog.Attr, 0, len(last.attrs)+len(red)), last.attrs...), red...)
	return &redactingHandler{inner: h.inner, groups: groups}
}

func (h *redactingHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	groups := make([]groupFrame, len(h.groups), len(h.groups)+1)
	copy(groups, h.groups)
	groups = append(groups, groupFrame{name: name, secret: IsSecretKey(name)})
	return &redactingHandler{inner: h.inner, groups: groups}
}

func (h *redactingHandler) Handle(ctx context.Context, r slog.Record) error {
	secret := h.inSecretGroup()
	attrs := make([]slog.Attr, 0, r.NumAttrs())
	hasTraceID, hasSpanID := false, false
	r.Attrs(func(a slog.Attr) bool {
		if len(h.groups) == 0 {
			hasTraceID = hasTraceID || a.Key == "trace_id"
			hasSpanID = hasSpanID || a.Key == "span_id"
		}
		attrs = append(attrs, redactAttr(a, secret))
		return true
	})
	// Nest the record's attributes in the open groups, innermost first.
	for i := len(h.groups) - 1; i >= 0; i-- {
		g := h.groups[i]
		inner := make([]slog.Attr, 0, len(g.attrs)+len(attrs))
		inner = append(append(inner, g.attrs...), attrs...)
		attrs = []slog.Attr{{Key: g.name, Value: slog.GroupValue(inner...)}}
	}
	out := slog.NewRecord(r.Time, r.Level, Scrub(r.Message), r.PC)
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		if !hasTraceID {
			out.AddAttrs(slog.String("trace_id", sc.TraceID().String()))
		}
		if !hasSpanID {
			out.AddAttrs(slog.String("span_id", sc.SpanID().String()))
		}
	}
	out.AddAttrs(attrs...)
	return h.inner.Handle(ctx, out)
}
