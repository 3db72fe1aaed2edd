package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/httpapi"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
)

// specVersions reads the API versions api/kernel.yaml declares and its default one.
func specVersions(t *testing.T) (all []string, def string) {
	t.Helper()
	doc, err := httpapi.Spec()
	if err != nil {
		t.Fatal(err)
	}
	list, _ := doc.Info.Extensions["x-nops-api-versions"].([]any)
	for _, raw := range list {
		entry, _ := raw.(map[string]any)
		v, _ := entry["version"].(string)
		all = append(all, v)
		if d, _ := entry["default"].(bool); d {
			def = v
		}
	}
	if def == "" {
		t.Fatalf("api/kernel.yaml declares no default API version: %v", list)
	}
	return all, def
}

// TestAPIVersionHeader: a running kernel serves every request by the version its Nops-Api-Version
// header names (the default one without it), says which in the response, and refuses a version
// it does not serve with a problem naming the header — before authentication, so a client learns
// of the mismatch whatever its credentials.
func TestAPIVersionHeader(t *testing.T) {
	k := kerneltest.Start(t)
	versions, def := specVersions(t)
	admin := "Authorization: Bearer " + k.Token(t, "")

	for _, tc := range []struct {
		name, method, path string
		headers            []string
		status             int
		echo               string
	}{
		{"public, no version", "GET", "/health", nil, 200, def},
		{"secured, no version", "GET", "/v1/tenants", []string{admin}, 200, def},
		{"secured, unknown route", "GET", "/v1/no-such-thing", []string{admin}, 404, def},
		{"unknown version", "GET", "/v1/tenants", []string{admin, httpapi.APIVersionHeader + ": 1999-01-01"}, 400, ""},
		{"unknown version, no credentials", "GET", "/v1/tenants", []string{httpapi.APIVersionHeader + ": latest"}, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := k.Do(t, tc.method, tc.path, nil, tc.headers...)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if got := resp.Header.Get(httpapi.APIVersionHeader); got != tc.echo {
				t.Errorf("%s = %q, want %q", httpapi.APIVersionHeader, got, tc.echo)
			}
			if !strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), httpapi.APIVersionHeader) {
				t.Errorf("Vary %q does not name %s", resp.Header.Values("Vary"), httpapi.APIVersionHeader)
			}
			if resp.StatusCode != http.StatusBadRequest {
				return
			}
			p := decodeProblem(t, resp, body)
			if p.Code != "invalid" || len(p.Errors) != 1 || p.Errors[0].Name != "header."+httpapi.APIVersionHeader {
				t.Errorf("problem %+v does not name header.%s", p, httpapi.APIVersionHeader)
			}
		})
	}
	// Every declared version is served and echoed.
	for _, v := range versions {
		resp, body := k.Do(t, "GET", "/v1/tenants", nil, admin, httpapi.APIVersionHeader+": "+v)
		if resp.StatusCode != http.StatusOK || resp.Header.Get(httpapi.APIVersionHeader) != v {
			t.Errorf("version %s: status %d, echoed %q: %s", v, resp.StatusCode, resp.Header.Get(httpapi.APIVersionHeader), body)
		}
	}
}
