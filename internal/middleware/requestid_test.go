package middleware_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"

	"github.com/nops-kernel/nops/internal/middleware"
)

func TestRequestID(t *testing.T) {
	max := strings.Repeat("a", 128)
	tests := []struct {
		name     string
		incoming string
		keep     bool
	}{
		{"none", "", false},
		{"simple", "abc-123", true},
		{"all allowed characters", "Az09._:-", true},
		{"128 characters", max, true},
		{"129 characters", max + "a", false},
		{"space", "abc 123", false},
		{"slash", "abc/123", false},
		{"newline", "abc\n123", false},
		{"non-ascii", "abcé", false},
		{"json injection", `a","x":"y`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var inCtx string
			h := middleware.RequestID()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				inCtx = middleware.RequestIDFromContext(r.Context())
				if got := w.Header().Get("X-Request-ID"); got != inCtx {
					t.Errorf("header set before handler = %q, context %q", got, inCtx)
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.incoming != "" {
				req.Header.Set("X-Request-ID", tt.incoming)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			echoed := rec.Header().Get(middleware.RequestIDHeader)
			if echoed != inCtx {
				t.Errorf("echoed %q, context %q", echoed, inCtx)
			}
			if tt.keep {
				if echoed != tt.incoming {
					t.Errorf("id = %q, want the incoming %q", echoed, tt.incoming)
				}
				return
			}
			if echoed == tt.incoming {
				t.Fatalf("invalid incoming id %q was kept", tt.incoming)
			}
			id, ok := strings.CutPrefix(echoed, "req_")
			if !ok {
				t.Fatalf("generated id %q lacks the req_ prefix", echoed)
			}
			if _, err := ulid.ParseStrict(strings.ToUpper(id)); err != nil {
				t.Errorf("generated id %q is not a ULID: %v", echoed, err)
			}
		})
	}
}

func TestRequestIDsAreUnique(t *testing.T) {
	h := middleware.RequestID()(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	seen := map[string]bool{}
	for range 100 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		id := rec.Header().Get("X-Request-ID")
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
}

func TestRequestIDFromContextWithoutMiddleware(t *testing.T) {
	if got := middleware.RequestIDFromContext(t.Context()); got != "" {
		t.Errorf("RequestIDFromContext = %q, want empty", got)
	}
}
