package e2e

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/httpapi"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/middleware"
)

var allMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodOptions, "PROPFIND",
}

// TestSecurityHeadersOnEveryResponse sends every method to every path of the spec — so routes
// added later are covered without touching this test — plus unknown paths, with and without
// credentials, and requires the security headers and a request id on each response, whatever
// its status.
func TestSecurityHeadersOnEveryResponse(t *testing.T) {
	k := kerneltest.Start(t)
	contract, err := httpapi.NewContract()
	if err != nil {
		t.Fatal(err)
	}
	token := k.Token(t, "")
	var paths []string
	for _, p := range contract.Patterns() {
		_, path, _ := strings.Cut(p, " ")
		paths = append(paths, httpapi.ConcretePath(path))
	}
	paths = append(paths, "/", "/no/such/route", "/v1/", "/v1/auth/token/extra", "/%2e%2e/etc/passwd", "/health/", "//health")
	slices.Sort(paths)
	paths = slices.Compact(paths)
	statuses := map[int]int{}
	for _, path := range paths {
		for _, method := range allMethods {
			for _, auth := range []string{"", "Authorization: Bearer " + token, "Authorization: Bearer garbage"} {
				var body any
				if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
					body = "{}"
				}
				headers := []string{}
				if auth != "" {
					headers = append(headers, auth)
				}
				resp, _ := k.Do(t, method, path, body, headers...)
				statuses[resp.StatusCode]++
				for name, want := range middleware.SecurityHeaderValues() {
					if got := resp.Header.Get(name); got != want {
						t.Errorf("%s %s (%q) → %d: %s = %q, want %q", method, path, auth, resp.StatusCode, name, got, want)
					}
				}
				if resp.Header.Get("X-Request-ID") == "" {
					t.Errorf("%s %s → %d: no X-Request-ID", method, path, resp.StatusCode)
				}
			}
		}
	}
	// The sweep must have produced the statuses it claims to cover.
	for _, want := range []int{200, 400, 401, 404, 405} {
		if statuses[want] == 0 {
			t.Errorf("no response with status %d in the sweep (got %v)", want, statuses)
		}
	}
}
