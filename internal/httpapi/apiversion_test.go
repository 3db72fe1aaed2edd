package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/httpapi/gen"
)

func loadFixture(t *testing.T, doc []byte) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	spec, err := loader.LoadFromData(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Validate(loader.Context); err != nil {
		t.Fatal(err)
	}
	return spec
}

func versionedFixture(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/versioned.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKernelSpecVersions: the kernel's own document declares its versions and default, and every
// operation it marks deprecated carries what the headers need (newVersioning refuses it otherwise).
func TestKernelSpecVersions(t *testing.T) {
	doc, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	v, err := newVersioning(doc)
	if err != nil {
		t.Fatal(err)
	}
	if v.current == "" || v.versions[v.current] != nil {
		t.Errorf("default version %q must be listed and not deprecated", v.current)
	}
}

func TestVersioningHeaders(t *testing.T) {
	v, err := newVersioning(loadFixture(t, versionedFixture(t)))
	if err != nil {
		t.Fatal(err)
	}
	var served string
	h := v.middleware(errorWriter{logger: slog.New(slog.DiscardHandler)})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served = apiVersion(r.Context())
		w.WriteHeader(http.StatusNoContent)
	}))
	const (
		opDeprecation  = "@1795737600"                   // 2026-11-27T00:00:00Z
		opSunset       = "Wed, 30 Jun 2027 00:00:00 GMT" // x-sunset of GET /v1/things/{id}
		opLink         = `<https://docs.example/nops/things-v2>; rel="deprecation"; type="text/html"`
		oldDeprecation = "@1780272000" // 2026-06-01
		oldSunset      = "Sun, 31 Jan 2027 00:00:00 GMT"
		oldLink        = `<https://docs.example/nops/api-evolution#2026-01-15>; rel="deprecation"; type="text/html"`
	)
	for _, tc := range []struct {
		name, method, path string
		version            []string // Nops-Api-Version values sent
		status             int
		want               map[string]string // response headers; "" = absent
	}{
		{"default version, current operation", "GET", "/v1/things/special", nil, 204,
			map[string]string{"Nops-Api-Version": "2026-11-27", "Deprecation": "", "Sunset": "", "Link": ""}},
		{"named current version", "GET", "/v1/things/special", []string{"2026-11-27"}, 204,
			map[string]string{"Nops-Api-Version": "2026-11-27", "Deprecation": ""}},
		{"spaces around the version", "GET", "/v1/things/special", []string{" 2026-11-27 "}, 204,
			map[string]string{"Nops-Api-Version": "2026-11-27"}},
		{"deprecated operation", "GET", "/v1/things/abc", nil, 204,
			map[string]string{"Nops-Api-Version": "2026-11-27", "Deprecation": opDeprecation, "Sunset": opSunset, "Link": opLink}},
		{"deprecated operation, HEAD", "HEAD", "/v1/things/abc", nil, 204,
			map[string]string{"Deprecation": opDeprecation}},
		{"deprecated version", "GET", "/v1/things/special", []string{"2026-01-15"}, 204,
			map[string]string{"Nops-Api-Version": "2026-01-15", "Deprecation": oldDeprecation, "Sunset": oldSunset, "Link": oldLink}},
		{"deprecated operation in a deprecated version: the operation's", "GET", "/v1/things/abc", []string{"2026-01-15"}, 204,
			map[string]string{"Nops-Api-Version": "2026-01-15", "Deprecation": opDeprecation, "Sunset": opSunset, "Link": opLink}},
		{"another method of the path is not deprecated", "POST", "/v1/things/abc", nil, 204,
			map[string]string{"Deprecation": ""}},
		{"unknown route", "GET", "/v1/nothing", nil, 204,
			map[string]string{"Nops-Api-Version": "2026-11-27", "Deprecation": ""}},
		{"unknown version", "GET", "/v1/things/special", []string{"2025-01-01"}, 400,
			map[string]string{"Nops-Api-Version": ""}},
		{"not a date", "GET", "/v1/things/special", []string{"v2"}, 400, nil},
		{"two header lines", "GET", "/v1/things/special", []string{"2026-11-27", "2026-11-27"}, 400, nil},
		{"a list", "GET", "/v1/things/special", []string{"2026-11-27, 2026-01-15"}, 400, nil},
		{"empty", "GET", "/v1/things/special", []string{""}, 400, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			served = ""
			r := httptest.NewRequest(tc.method, tc.path, nil)
			for _, s := range tc.version {
				r.Header.Add(APIVersionHeader, s)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", w.Code, tc.status, w.Body)
			}
			for name, want := range tc.want {
				if got := w.Header().Get(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			if got := w.Header().Values("Vary"); !strings.Contains(strings.Join(got, ","), APIVersionHeader) {
				t.Errorf("Vary = %q, want it to name %s", got, APIVersionHeader)
			}
			if tc.status != 400 {
				if want := w.Header().Get(APIVersionHeader); served != want {
					t.Errorf("the handler saw version %q, the response says %q", served, want)
				}
				return
			}
			if served != "" {
				t.Error("a refused request reached the handler")
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			var p gen.Problem
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
				t.Fatal(err)
			}
			if p.Errors == nil || len(*p.Errors) != 1 || (*p.Errors)[0].Name != "header.Nops-Api-Version" {
				t.Fatalf("the problem does not name the header: %s", w.Body)
			}
			if tc.name == "unknown version" && !strings.Contains((*p.Errors)[0].Reason, "2026-01-15, 2026-11-27") {
				t.Errorf("the reason does not list the versions served: %q", (*p.Errors)[0].Reason)
			}
		})
	}
}

// TestVersioningRefusesBadSpecs: what the headers would need and the spec lacks fails at start.
func TestVersioningRefusesBadSpecs(t *testing.T) {
	fixture := string(versionedFixture(t))
	for _, tc := range []struct {
		name, old, new, wantErr string
	}{
		{"no versions", "  x-nops-api-versions:", "  x-other:", "must list the API versions"},
		{"no default", "      default: true\n", "", "no version is the default"},
		{"two defaults", `      docs: https://docs.example/nops/api-evolution#2026-01-15`, "      docs: https://docs.example/nops/api-evolution#2026-01-15\n      default: true", "both the default"},
		{"a version twice", `"2026-01-15"`, "2026-11-27", "listed twice"},
		{"a version not a date", `"2026-01-15"`, "v1", "not a YYYY-MM-DD date"},
		{"versions out of order", `"2026-01-15"`, `"2027-01-15"`, "oldest first"},
		{"a version's sunset without deprecation", `      deprecated-since: "2026-06-01"` + "\n", "", "needs deprecated-since"},
		{"a deprecated version without docs", "      docs: https://docs.example/nops/api-evolution#2026-01-15\n", "", "docs URL"},
		{"a deprecated operation without since", `      x-deprecated-since: "2026-11-27"` + "\n", "", "x-deprecated-since"},
		{"a sunset before the deprecation", "x-sunset: 2027-06-30", "x-sunset: 2026-01-01", "must come after"},
		{"a malformed sunset", "x-sunset: 2027-06-30", "x-sunset: next year", "x-sunset"},
		{"a deprecated operation without docs", "      externalDocs:\n        url: https://docs.example/nops/things-v2\n", "", "externalDocs.url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(fixture, tc.old, tc.new, 1)
			if doc == fixture {
				t.Fatalf("the fixture has no %q", tc.old)
			}
			_, err := newVersioning(loadFixture(t, []byte(doc)))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}

func TestDate(t *testing.T) {
	for in, want := range map[any]string{"2026-11-27": "2026-11-27", "2026-11-27T00:00:00Z": "2026-11-27"} {
		got, err := date(in)
		if err != nil || got.Format("2006-01-02") != want {
			t.Errorf("date(%v) = %v, %v", in, got, err)
		}
	}
	for _, in := range []any{"2026-11-27T10:00:00Z", "27.11.2026", 20261127, nil, ""} {
		if _, err := date(in); err == nil {
			t.Errorf("date(%v) accepted", in)
		}
	}
	if diff := cmp.Diff([]string{"2026-01-15", "2026-11-27"}, func() []string {
		v, err := newVersioning(loadFixture(t, versionedFixture(t)))
		if err != nil {
			t.Fatal(err)
		}
		return v.names
	}()); diff != "" {
		t.Errorf("versions (-want +got):\n%s", diff)
	}
}
