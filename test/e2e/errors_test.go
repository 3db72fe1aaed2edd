package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Code      string `json:"code"`
	Detail    string `json:"detail"`
	RequestID string `json:"request_id"`
	Errors    []struct {
		Name   string `json:"name"`
		Reason string `json:"reason"`
	} `json:"errors"`
}

func decodeProblem(t *testing.T, resp *http.Response, body []byte) problem {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Fatalf("Content-Type = %q, want application/problem+json; body %s", ct, body)
	}
	var p problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("decode problem %s: %v", body, err)
	}
	if p.RequestID == "" || p.RequestID != resp.Header.Get("X-Request-ID") {
		t.Errorf("problem request_id %q, header %q", p.RequestID, resp.Header.Get("X-Request-ID"))
	}
	return p
}

func TestProblemResponses(t *testing.T) {
	k := kerneltest.Start(t, func(c *config.Config) { c.HTTP.MaxBodyBytes = 4096 })
	admin := "Authorization: Bearer " + k.Token(t, "")
	tests := []struct {
		name      string
		method    string
		path      string
		body      any
		headers   []string
		status    int
		code      string
		field     string // a field the problem must name, if any
		allowHdr  string
		detailHas string
	}{
		{name: "malformed JSON", method: "POST", path: "/v1/auth/token", body: `{"username": "admin", "password":`, status: 400, code: "invalid", field: "body"},
		{name: "missing field", method: "POST", path: "/v1/auth/token", body: `{"username":"admin"}`, status: 400, code: "invalid", field: "body.password"},
		{name: "unknown field", method: "POST", path: "/v1/auth/token", body: `{"username":"admin","password":"x","admin":true}`, status: 400, code: "invalid", field: "body"},
		{name: "wrong type", method: "POST", path: "/v1/auth/token", body: `{"username":1,"password":"x"}`, status: 400, code: "invalid", field: "body.username"},
		{name: "unknown route", method: "GET", path: "/v1/nothing-here", status: 404, code: "not_found"},
		{name: "wrong method", method: "DELETE", path: "/health", status: 405, code: "method_not_allowed", allowHdr: "GET, HEAD"},
		{name: "wrong method on POST route", method: "GET", path: "/v1/auth/token", status: 405, code: "method_not_allowed", allowHdr: "POST"},
		{name: "too large", method: "POST", path: "/v1/auth/token", body: `{"username":"admin","password":"` + strings.Repeat("a", 8000) + `"}`, status: 413, code: "too_large"},
		{name: "wrong media type", method: "POST", path: "/v1/auth/token", body: `{"username":"admin","password":"x"}`, headers: []string{"Content-Type: text/plain"}, status: 415, code: "unsupported_media_type"},
		{name: "no credentials", method: "GET", path: "/v1/auth/whoami", status: 401, code: "unauthenticated"},
		{name: "malformed date parameter", method: "GET", path: "/v1/dlq?since=yesterday", headers: []string{admin}, status: 400, code: "invalid", field: "query.since"},
		{name: "malformed integer parameter", method: "GET", path: "/v1/dlq?limit=abc", headers: []string{admin}, status: 400, code: "invalid", field: "query.limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := k.Do(t, tt.method, tt.path, tt.body, tt.headers...)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.status, body)
			}
			p := decodeProblem(t, resp, body)
			if p.Code != tt.code || p.Status != tt.status || p.Type != "urn:nops:problem:"+tt.code {
				t.Errorf("problem %+v, want code %s", p, tt.code)
			}
			if tt.field != "" {
				found := false
				for _, e := range p.Errors {
					if e.Name == tt.field || strings.HasPrefix(e.Name, tt.field+".") || (tt.field == "body" && strings.HasPrefix(e.Name, "body")) {
						found = true
					}
				}
				if !found {
					t.Errorf("problem names fields %+v, want %s", p.Errors, tt.field)
				}
			}
			if tt.allowHdr != "" && resp.Header.Get("Allow") != tt.allowHdr {
				t.Errorf("Allow = %q, want %q", resp.Header.Get("Allow"), tt.allowHdr)
			}
			if strings.Contains(string(body), "goroutine") || strings.Contains(string(body), ".go:") {
				t.Errorf("problem leaks internals: %s", body)
			}
		})
	}
}
