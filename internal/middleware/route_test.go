package middleware_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/nops-kernel/nops/internal/middleware"
)

type ctxKey struct{}

func TestRouteHolderIsVisibleToOuterMiddleware(t *testing.T) {
	tests := []struct {
		name    string
		pattern string // "" = SetRoute not called
		want    string
	}{
		{"unset", "", ""},
		{"path template", "/v1/agents/{id}", "/v1/agents/{id}"},
		{"ServeMux pattern with method", "GET /v1/agents/{id}", "/v1/agents/{id}"},
		{"method and host", "POST api.example.com/v1/tenants", "/v1/tenants"},
		{"host only", "api.example.com/health", "/health"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seenOutside string
			outer := func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					next.ServeHTTP(w, r)
					seenOutside = middleware.RouteFromContext(r.Context())
				})
			}
			// A middleware between the holder and the dispatcher that clones the request, as
			// every context-adding middleware does.
			cloning := func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, 1)))
				})
			}
			dispatcher := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.pattern != "" {
					middleware.SetRoute(r.Context(), tt.pattern)
				}
			})
			h := middleware.Chain(dispatcher, middleware.WithRouteHolder(), outer, cloning)
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/v1/agents/agt_1", nil))
			if seenOutside != tt.want {
				t.Errorf("outer middleware saw route %q, want %q", seenOutside, tt.want)
			}
		})
	}
}

func TestSetRouteWithoutHolderIsANoop(t *testing.T) {
	ctx := context.Background()
	middleware.SetRoute(ctx, "/v1/x")
	if got := middleware.RouteFromContext(ctx); got != "" {
		t.Errorf("RouteFromContext = %q, want empty", got)
	}
}

// A handler may set the route from a goroutine of its own while an outer middleware reads it
// (after a timeout, say); run with -race this fails unless the holder is synchronised.
func TestSetRouteConcurrentWithRead(t *testing.T) {
	h := middleware.WithRouteHolder()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 100 {
				middleware.SetRoute(r.Context(), "/v1/async")
			}
		}()
		for range 100 {
			if got := middleware.RouteFromContext(r.Context()); got != "" && got != "/v1/async" {
				t.Errorf("route = %q", got)
			}
		}
		<-done
		if got := middleware.RouteFromContext(r.Context()); got != "/v1/async" {
			t.Errorf("route = %q, want /v1/async", got)
		}
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
}
