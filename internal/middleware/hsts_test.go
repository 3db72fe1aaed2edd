package middleware_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/middleware"
)

func TestHSTS(t *testing.T) {
	tests := []struct {
		name       string
		maxAge     time.Duration
		subdomains bool
		tls        bool
		preset     bool // SecurityHeaders (outside) already set the header
		want       string
	}{
		{"plain HTTP gets none", 365 * 24 * time.Hour, true, false, false, ""},
		{"plain HTTP: a header set outside is removed", 365 * 24 * time.Hour, true, false, true, ""},
		{"TLS with subdomains", 365 * 24 * time.Hour, true, true, false, "max-age=31536000; includeSubDomains"},
		{"TLS without subdomains", 2 * time.Hour, false, true, false, "max-age=7200"},
		{"TLS replaces a header set outside", time.Hour, false, true, true, "max-age=3600"},
		{"fractions of a second are dropped", 1500 * time.Millisecond, false, true, false, "max-age=1"},
		{"zero rolls the policy back", 0, false, true, false, "max-age=0"},
		{"negative is zero", -time.Hour, true, true, false, "max-age=0; includeSubDomains"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := middleware.HSTS(tt.maxAge, tt.subdomains)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusNoContent)
			}))
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			if tt.tls {
				req.TLS = &tls.ConnectionState{HandshakeComplete: true}
			}
			rec := httptest.NewRecorder()
			if tt.preset {
				rec.Header().Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
			}
			h.ServeHTTP(rec, req)
			if got := rec.Header().Values("Strict-Transport-Security"); (tt.want == "" && len(got) != 0) || (tt.want != "" && (len(got) != 1 || got[0] != tt.want)) {
				t.Errorf("Strict-Transport-Security = %q, want %q", got, tt.want)
			}
		})
	}
}

// Over real connections: the TLS server's responses carry the header, the plain one's do not.
func TestHSTSOverRealConnections(t *testing.T) {
	h := middleware.HSTS(time.Hour, true)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	for _, secure := range []bool{false, true} {
		var srv *httptest.Server
		if secure {
			srv = httptest.NewTLSServer(h)
		} else {
			srv = httptest.NewServer(h)
		}
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			srv.Close()
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		srv.Close()
		got := resp.Header.Get("Strict-Transport-Security")
		if secure && got != "max-age=3600; includeSubDomains" || !secure && got != "" {
			t.Errorf("TLS %v: Strict-Transport-Security = %q", secure, got)
		}
	}
}
