package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/nops-kernel/nops/internal/errs"
)

// APIVersionHeader selects the version of the API a request is served by; the response carries
// the version that served it under the same name. Versions are dates (docs/api-evolution.md).
const APIVersionHeader = "Nops-Api-Version"

// The spec extensions the versioning reads. Both the kernel's document and test fixtures use
// them; api/kernel.yaml is the one source of truth of versions and deprecations.
const (
	// extVersions, on info, lists the versions served: [{version, default, deprecated-since,
	// sunset, docs}].
	extVersions = "x-nops-api-versions"
	// extDeprecatedSince, on a deprecated operation, is the date it was deprecated (Deprecation).
	extDeprecatedSince = "x-deprecated-since"
	// extSunset, on a deprecated operation, is the date it may stop answering (Sunset). oasdiff
	// reads the same extension, so the gate and the release notes know the date too.
	extSunset = "x-sunset"
)

// deprecation is what the responses of a deprecated operation or version announce.
type deprecation struct {
	since  time.Time // Deprecation (RFC 9745)
	sunset time.Time // Sunset (RFC 8594); zero when none is announced
	docs   string    // Link rel="deprecation"
}

// set puts d's Deprecation, Sunset and Link headers in h.
func (d deprecation) set(h http.Header) {
	h.Set("Deprecation", "@"+strconv.FormatInt(d.since.Unix(), 10))
	if !d.sunset.IsZero() {
		h.Set("Sunset", d.sunset.UTC().Format(http.TimeFormat))
	}
	h.Add("Link", "<"+d.docs+`>; rel="deprecation"; type="text/html"`)
}

// versioning is the middleware state built from the spec: the versions served, the default one,
// and the deprecated operations by ServeMux pattern.
type versioning struct {
	versions   map[string]*deprecation // version → its deprecation, nil when it is current
	names      []string                // the versions, in the spec's order, for error messages
	current    string                  // served when a request names none
	deprecated map[string]deprecation  // "GET /v1/things/{id}" → its deprecation
	mux        *http.ServeMux          // every operation's pattern, to find a request's operation; nil when none is deprecated
}

type versionKey struct{}

// apiVersion returns the API version the request is served by; handlers whose behaviour depends
// on the version branch on it. It is "" outside the versioning middleware.
func apiVersion(ctx context.Context) string {
	v, _ := ctx.Value(versionKey{}).(string)
	return v
}

// newVersioning reads the versions and the deprecated operations of doc. A deprecated operation
// must say since when (x-deprecated-since) and where its replacement is documented
// (externalDocs.url); x-sunset, when present, must come after x-deprecated-since.
func newVersioning(doc *openapi3.T) (*versioning, error) {
	v := &versioning{versions: map[string]*deprecation{}, deprecated: map[string]deprecation{}}
	if err := v.readVersions(doc); err != nil {
		return nil, err
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if !op.Deprecated {
				continue
			}
			where := method + " " + path
			d, err := readDeprecation(op.Extensions, docsURL(op), where)
			if err != nil {
				return nil, err
			}
			v.deprecated[where] = d
		}
	}
	if len(v.deprecated) > 0 {
		v.mux = http.NewServeMux()
		for path, item := range doc.Paths.Map() {
			for method := range item.Operations() {
				v.mux.Handle(method+" "+path, http.NotFoundHandler())
			}
		}
	}
	return v, nil
}

func docsURL(op *openapi3.Operation) string {
	if op.ExternalDocs == nil {
		return ""
	}
	return op.ExternalDocs.URL
}

func (v *versioning) readVersions(doc *openapi3.T) error {
	if doc.Info == nil {
		return fmt.Errorf("info.%s: the spec has no info", extVersions)
	}
	list, ok := doc.Info.Extensions[extVersions].([]any)
	if !ok || len(list) == 0 {
		return fmt.Errorf("info.%s must list the API versions served", extVersions)
	}
	for i, raw := range list {
		where := fmt.Sprintf("info.%s[%d]", extVersions, i)
		entry, ok := raw.(map[string]any)
		if !ok {
			return fmt.Errorf("%s must be an object", where)
		}
		name, err := date(entry["version"])
		if err != nil {
			return fmt.Errorf("%s.version: %w", where, err)
		}
		version := name.Format(time.DateOnly)
		if _, dup := v.versions[version]; dup {
			return fmt.Errorf("%s: version %s listed twice", where, version)
		}
		if n := len(v.names); n > 0 && version < v.names[n-1] {
			return fmt.Errorf("%s: versions are listed oldest first: %s after %s", where, version, v.names[n-1])
		}
		v.names = append(v.names, version)
		v.versions[version] = nil
		if def, _ := entry["default"].(bool); def {
			if v.current != "" {
				return fmt.Errorf("%s: %s and %s are both the default", where, v.current, version)
			}
			v.current = version
		}
		if _, ok := entry["deprecated-since"]; ok {
			docs, _ := entry["docs"].(string)
			d, err := readDeprecation(map[string]any{extDeprecatedSince: entry["deprecated-since"], extSunset: entry["sunset"]}, docs, where)
			if err != nil {
				return err
			}
			v.versions[version] = &d
		} else if entry["sunset"] != nil {
			return fmt.Errorf("%s: a sunset needs deprecated-since", where)
		}
	}
	if v.current == "" {
		return fmt.Errorf("info.%s: no version is the default", extVersions)
	}
	return nil
}

// readDeprecation reads the deprecation extensions of the element at where.
func readDeprecation(ext map[string]any, docs, where string) (deprecation, error) {
	since, err := date(ext[extDeprecatedSince])
	if err != nil {
		return deprecation{}, fmt.Errorf("%s: %s: %w", where, extDeprecatedSince, err)
	}
	d := deprecation{since: since, docs: docs}
	if raw := ext[extSunset]; raw != nil {
		if d.sunset, err = date(raw); err != nil {
			return deprecation{}, fmt.Errorf("%s: %s: %w", where, extSunset, err)
		}
		if !d.sunset.After(d.since) {
			return deprecation{}, fmt.Errorf("%s: %s must come after %s", where, extSunset, extDeprecatedSince)
		}
	}
	if !strings.HasPrefix(docs, "https://") && !strings.HasPrefix(docs, "http://") {
		return deprecation{}, fmt.Errorf("%s: a deprecation needs an absolute docs URL (externalDocs.url) saying what replaces it", where)
	}
	return d, nil
}

// date reads a YYYY-MM-DD date (a string, or the timestamp a YAML decoder made of an unquoted
// one) as midnight UTC.
func date(raw any) (time.Time, error) {
	switch x := raw.(type) {
	case string:
		if t, err := time.Parse(time.DateOnly, x); err == nil {
			return t, nil
		}
		if t, err := time.Parse(time.RFC3339, x); err == nil && t.Equal(t.Truncate(24*time.Hour)) {
			return t.UTC(), nil
		}
		return time.Time{}, fmt.Errorf("%q is not a YYYY-MM-DD date", x)
	case time.Time:
		return x.UTC(), nil
	case nil:
		return time.Time{}, fmt.Errorf("a YYYY-MM-DD date is required")
	}
	return time.Time{}, fmt.Errorf("%v is not a YYYY-MM-DD date", raw)
}

// middleware selects the version of each request from its Nops-Api-Version header (the default
// one when absent), refuses a version the kernel does not serve with a 400 problem naming the
// header, and puts on every response the version served (with Vary, since a representation
// depends on it) and, for a deprecated version or operation, the Deprecation, Sunset and Link
// headers. When both are deprecated, the operation's announcement is sent: it is the nearer
// change for the client, whatever version it moves to.
func (v *versioning) middleware(errw errorWriter) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Add("Vary", APIVersionHeader)
			version, err := v.selectVersion(r.Header.Values(APIVersionHeader))
			if err != nil {
				errw.Write(w, r, err)
				return
			}
			h.Set(APIVersionHeader, version)
			if d := v.announcement(r, version); d != nil {
				d.set(h)
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), versionKey{}, version)))
		})
	}
}

// announcement returns the deprecation the response to r announces, nil when there is none.
func (v *versioning) announcement(r *http.Request, version string) *deprecation {
	if v.mux != nil {
		if _, pattern := v.mux.Handler(r); pattern != "" {
			if d, ok := v.deprecated[pattern]; ok {
				return &d
			}
		}
	}
	return v.versions[version]
}

// selectVersion returns the version named by the request's header values.
func (v *versioning) selectVersion(values []string) (string, error) {
	switch {
	case len(values) == 0:
		return v.current, nil
	case len(values) > 1 || strings.Contains(values[0], ","):
		return "", versionError("must name one version")
	}
	name := strings.TrimSpace(values[0])
	if _, ok := v.versions[name]; !ok {
		return "", versionError("is not a version this kernel serves (" + strings.Join(v.names, ", ") + ")")
	}
	return name, nil
}

func versionError(reason string) error {
	e := errs.Field("header."+APIVersionHeader, reason)
	e.Message = "unknown API version"
	return e
}
