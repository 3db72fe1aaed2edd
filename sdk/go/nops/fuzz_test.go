package nops_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/sdk/go/nops"
)

// FuzzHandler sends the invocation handler arbitrary bodies, content types and kernel headers:
// it never panics, answers 200 only for input its schema accepts (which the handler then sees
// unchanged), and every refusal is a problem+json with the status it carries.
func FuzzHandler(f *testing.F) {
	f.Add(`{"message":"x"}`, "application/json", "1000", "echo")
	f.Add(`{"message":3}`, "application/json", "", "echo")
	f.Add(`{`, "application/json", "-1", "echo")
	f.Add(`{}`, "text/plain", "x", "other")
	f.Add(`{"message":"x"}`, "application/vnd.a+json; charset=utf-8", "99999999999999999999", "")
	c, err := nops.NewClient(nops.Options{BaseURL: "http://127.0.0.1:1"})
	if err != nil {
		f.Fatal(err)
	}
	var got string
	capb := echoCapability(nil)
	capb.Handle = func(_ context.Context, inv *nops.Invocation) (any, error) {
		got = string(inv.Input)
		return json.RawMessage(`{}`), nil
	}
	a, err := nops.NewAgent(c, nops.AgentConfig{Name: "f", Version: "1.0.0", Capabilities: []nops.Capability{capb}})
	if err != nil {
		f.Fatal(err)
	}
	h := a.Handler()
	f.Fuzz(func(t *testing.T, body, ctype, timeout, capHeader string) {
		got = ""
		r := httptest.NewRequest(http.MethodPost, "/invoke/echo", strings.NewReader(body))
		r.Header.Set("Content-Type", ctype)
		if timeout != "" {
			r.Header.Set("Nops-Timeout-Ms", timeout)
		}
		if capHeader != "" {
			r.Header.Set("Nops-Capability", capHeader)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code == http.StatusOK {
			var in struct {
				Message *string `json:"message"`
			}
			if json.Unmarshal([]byte(body), &in) != nil || in.Message == nil || len([]rune(*in.Message)) > 64 || got != body {
				t.Fatalf("200 for body %q (handler saw %q)", body, got)
			}
			return
		}
		var p nops.Error
		if w.Header().Get("Content-Type") != "application/problem+json" || json.Unmarshal(w.Body.Bytes(), &p) != nil || p.Status != w.Code {
			t.Fatalf("refusal %d is not a problem: %s", w.Code, w.Body)
		}
	})
}
