package middleware_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/middleware"
)

func TestSecurityHeadersOnEveryResponse(t *testing.T) {
	var ew errorRecorder
	var logs logBuffer
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("GET /error", func(w http.ResponseWriter, r *http.Request) {
		ew.write(w, r, errs.New(errs.NotFound, "no such thing"))
	})
	mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	h := middleware.Chain(mux, middleware.SecurityHeaders(), middleware.Recover(logs.logger(), ew.write))

	tests := []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/ok", http.StatusOK},
		{http.MethodGet, "/error", http.StatusNotFound},
		{http.MethodGet, "/panic", http.StatusInternalServerError},
		{http.MethodGet, "/unknown", http.StatusNotFound},
		{http.MethodPost, "/ok", http.StatusMethodNotAllowed},
	}
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
		"X-Content-Type-Options":  "nosniff",
		"X-Frame-Options":         "DENY",
		"Referrer-Policy":         "no-referrer",
		"Cache-Control":           "no-store",
	}
	if diff := cmp.Diff(want, middleware.SecurityHeaderValues()); diff != "" {
		t.Fatalf("SecurityHeaderValues (-want +got):\n%s", diff)
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.status {
				t.Errorf("status = %d, want %d", rec.Code, tt.status)
			}
			got := map[string]string{}
			for k := range want {
				got[k] = rec.Header().Get(k)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSecurityHeaderValuesIsACopy(t *testing.T) {
	m := middleware.SecurityHeaderValues()
	m["X-Frame-Options"] = "ALLOW"
	delete(m, "Cache-Control")
	rec := httptest.NewRecorder()
	middleware.SecurityHeaders()(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Header().Get("X-Frame-Options") != "DENY" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("modifying the returned map changed the middleware: %v", rec.Header())
	}
}

// The values of one response are set from one shared allocation: a handler adding to or
// changing one field must leave the other fields, and the next response, as they were.
func TestSecurityHeadersFieldsDoNotAlias(t *testing.T) {
	h := middleware.SecurityHeaders()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/change" {
			w.Header().Add("Cache-Control", "private")
			w.Header()["X-Frame-Options"][0] = "SAMEORIGIN"
		}
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/change", nil))
	got := rec.Header()
	if diff := cmp.Diff([]string{"no-store", "private"}, got.Values("Cache-Control")); diff != "" {
		t.Errorf("Cache-Control (-want +got):\n%s", diff)
	}
	if v := got.Get("X-Frame-Options"); v != "SAMEORIGIN" {
		t.Errorf("X-Frame-Options = %q, want the handler's SAMEORIGIN", v)
	}
	for k, want := range middleware.SecurityHeaderValues() {
		if k == "Cache-Control" || k == "X-Frame-Options" {
			continue
		}
		if diff := cmp.Diff([]string{want}, got.Values(k)); diff != "" {
			t.Errorf("%s after the handler changed others (-want +got):\n%s", k, diff)
		}
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	for k, want := range middleware.SecurityHeaderValues() {
		if diff := cmp.Diff([]string{want}, rec.Header().Values(k)); diff != "" {
			t.Errorf("%s on the next response (-want +got):\n%s", k, diff)
		}
	}
}
