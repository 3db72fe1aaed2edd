package kerneltest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"testing"

	"github.com/getkin/kin-openapi/openapi3filter"

	"github.com/nops-kernel/nops/internal/httpapi"
)

// ContractTransport is an http.RoundTripper that validates every exchange against the spec:
//   - a request the spec allows must get a response the spec declares, with a body matching the
//     declared schema;
//   - a request the spec refuses (wrong shape, missing fields) must be refused with a 4xx problem;
//   - a request to a route the spec lacks must get a problem (404 or 405).
//
// Violations fail the test through t.Errorf and make the round trip return an error.
type ContractTransport struct {
	t        testing.TB
	next     http.RoundTripper
	contract *httpapi.Contract
}

// NewContractTransport wraps next.
func NewContractTransport(t testing.TB, next http.RoundTripper) *ContractTransport {
	c, err := httpapi.NewContract()
	if err != nil {
		t.Fatalf("load contract: %v", err)
	}
	return &ContractTransport{t: t, next: next, contract: c}
}

// RoundTrip implements http.RoundTripper.
func (ct *ContractTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		_ = req.Body.Close()
		reqBody = b
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	resp, err := ct.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	respBody, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	if verr := ct.check(req, reqBody, resp, respBody); verr != nil {
		ct.t.Errorf("live contract: %s %s → %d: %v\nresponse body: %s", req.Method, req.URL.Path, resp.StatusCode, verr, truncate(respBody))
		return nil, fmt.Errorf("%w: %v", errContract, verr)
	}
	return resp, nil
}

func (ct *ContractTransport) check(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) error {
	ctx := context.Background()
	route, params, ok := ct.contract.Match(req)
	if !ok {
		if req.Method == http.MethodHead {
			return nil
		}
		if resp.StatusCode == http.StatusMovedPermanently || resp.StatusCode == http.StatusTemporaryRedirect || resp.StatusCode == http.StatusPermanentRedirect {
			return nil // ServeMux redirecting an unclean path to its clean form
		}
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
			return fmt.Errorf("route not in spec answered %d, want 404 or 405", resp.StatusCode)
		}
		return ct.checkProblem(resp, respBody)
	}
	clone := req.Clone(ctx)
	clone.Body = io.NopCloser(bytes.NewReader(reqBody))
	in := &openapi3filter.RequestValidationInput{
		Request:    clone,
		PathParams: params,
		Route:      route,
		Options: &openapi3filter.Options{
			MultiError:         true,
			AuthenticationFunc: func(context.Context, *openapi3filter.AuthenticationInput) error { return nil },
		},
	}
	if reqErr := openapi3filter.ValidateRequest(ctx, in); reqErr != nil {
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			return fmt.Errorf("request outside the contract was answered %d, want a 4xx refusal (%v)", resp.StatusCode, reqErr)
		}
		if req.Method == http.MethodHead {
			return nil // a HEAD answer has no body to check
		}
		return ct.checkProblem(resp, respBody)
	}
	if req.Method == http.MethodHead {
		return nil // no body to check
	}
	if relay, _ := route.Operation.Extensions["x-nops-relay"].(bool); relay {
		// The answer is an agent's, relayed as it is: only the kernel's own problems are checked.
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/problem+json" && resp.Header.Get("Nops-Agent-Id") == "" {
			return ct.checkProblem(resp, respBody)
		}
		return nil
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(respBody)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("response does not match the spec: %w", err)
	}
	// The spec decides which statuses carry problems (the 503 of /_readyz does not); where one is
	// sent, its status member must agree with the response.
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/problem+json" {
		return ct.checkProblem(resp, respBody)
	}
	return nil
}

// checkProblem requires an RFC 9457 body matching the spec's Problem schema, whose status
// member equals the HTTP status.
func (ct *ContractTransport) checkProblem(resp *http.Response, body []byte) error {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "application/problem+json" {
		return fmt.Errorf("error response Content-Type %q, want application/problem+json", resp.Header.Get("Content-Type"))
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("problem body is not JSON: %w", err)
	}
	schema := ct.contract.Doc.Components.Schemas["Problem"].Value
	if err := schema.VisitJSON(v); err != nil {
		return fmt.Errorf("problem body does not match the Problem schema: %w", err)
	}
	if status, _ := v.(map[string]any)["status"].(float64); int(status) != resp.StatusCode {
		return fmt.Errorf("problem status %v differs from HTTP status %d", status, resp.StatusCode)
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "…"
	}
	return string(b)
}
