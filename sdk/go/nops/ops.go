package nops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nops-kernel/nops/sdk/go/nops/api"
)

// Error is an RFC 9457 problem the kernel (or an agent) answered.
type Error struct {
	Status int    `json:"status"`
	Code   string `json:"code,omitempty"`
	Title  string `json:"title,omitempty"`
	Detail string `json:"detail,omitempty"`
	Type   string `json:"type,omitempty"`
	// Errors name the offending input fields.
	Errors []FieldError `json:"errors,omitempty"`
	// RequestID is the kernel's request ID, to quote to its operators.
	RequestID string `json:"request_id,omitempty"`
}

// FieldError is one offending field of a problem.
type FieldError struct {
	Name   string `json:"name"`   // where the field is, e.g. body.message
	Reason string `json:"reason"` // what is wrong with it
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("nops: %d", e.Status)
	if e.Code != "" {
		msg += " " + e.Code
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	} else if e.Title != "" {
		msg += ": " + e.Title
	}
	if len(e.Errors) > 0 {
		fields := make([]string, 0, len(e.Errors))
		for _, f := range e.Errors {
			fields = append(fields, f.Name+": "+f.Reason)
		}
		msg += " (" + strings.Join(fields, "; ") + ")"
	}
	return msg
}

// problemOf reads the error of an unexpected answer: its problem when it has one.
func problemOf(status int, body []byte) error {
	e := &Error{}
	if json.Unmarshal(body, e) != nil || e.Status == 0 {
		e = &Error{Status: status, Detail: truncate(string(body), 512)}
	}
	e.Status = status
	return e
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// InvokeOptions tune one Invoke.
type InvokeOptions struct {
	// Timeout, when > 0, is sent as Nops-Timeout-Ms: the kernel's deadline for the call.
	Timeout time.Duration
	// IdempotencyKey is sent as Idempotency-Key (one is drawn when empty).
	IdempotencyKey string
	// ContentType of the input (application/json when empty).
	ContentType string
}

// InvokeResult is the answer of an invoked capability.
type InvokeResult struct {
	Status       int
	Header       http.Header
	Body         []byte
	AgentID      string // Nops-Agent-Id: the agent that answered
	InvocationID string // Nops-Invocation-Id
}

// Invoke calls capability through the kernel (POST /v1/invoke/{capability}) with input as the
// body, and returns the agent's answer. A kernel problem (no agent, deadline, refusal) or an
// agent's answer of 400 or more is returned as an *Error.
func (c *Client) Invoke(ctx context.Context, capability string, input []byte, o *InvokeOptions) (*InvokeResult, error) {
	if o == nil {
		o = &InvokeOptions{}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "/v1/invoke/"+url.PathEscape(capability), bytes.NewReader(input))
	if err != nil {
		return nil, fmt.Errorf("nops: invoke %s: %w", capability, err)
	}
	ct := o.ContentType
	if ct == "" {
		ct = "application/json"
	}
	req.Header.Set("Content-Type", ct)
	if o.Timeout > 0 {
		req.Header.Set("Nops-Timeout-Ms", strconv.FormatInt(max(o.Timeout.Milliseconds(), 1), 10))
	}
	if o.IdempotencyKey != "" {
		req.Header.Set("Idempotency-Key", o.IdempotencyKey)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("nops: invoke %s: %w", capability, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("nops: invoke %s: read answer: %w", capability, err)
	}
	if resp.StatusCode >= 400 {
		return nil, problemOf(resp.StatusCode, body)
	}
	return &InvokeResult{
		Status: resp.StatusCode, Header: resp.Header, Body: body,
		AgentID: resp.Header.Get("Nops-Agent-Id"), InvocationID: resp.Header.Get("Nops-Invocation-Id"),
	}, nil
}

// Rotation is the outcome of RotateAPIKey.
type Rotation struct {
	KeyID string
	// OldValidUntil is when the kernel stops accepting the previous secret.
	OldValidUntil time.Time
}

// RotateAPIKey rotates the client's own API key (POST /v1/api-keys/{id}/rotate) without a
// failed call: the kernel issues a new secret and keeps accepting the old one for grace (24 h
// when 0; the kernel caps it at 30 days); the client switches every new request to the new
// secret at once, waits until the requests it had sent with the old one have been answered,
// then confirms with the new secret that the kernel has the key's previous secret retiring at
// OldValidUntil. The key must allow apikeys:write (an ADMIN key). Requests made with the old
// secret by other holders keep working until OldValidUntil, then get 401.
func (c *Client) RotateAPIKey(ctx context.Context, grace time.Duration) (Rotation, error) {
	old := c.cred.Load()
	if old.header != "X-API-Key" {
		return Rotation{}, errors.New("nops: rotate: the client does not use an API key")
	}
	id, _ := apiKeyID(old.value)
	g := grace.String()
	resp, err := c.api.RotateApiKeyWithResponse(ctx, id, nil, api.ApiKeyRotate{GracePeriod: &g})
	if err != nil {
		return Rotation{}, fmt.Errorf("nops: rotate %s: %w", id, err)
	}
	if resp.JSON200 == nil {
		return Rotation{}, fmt.Errorf("nops: rotate %s: %w", id, problemOf(resp.StatusCode(), resp.Body))
	}
	next := &credential{header: "X-API-Key", value: resp.JSON200.Secret}
	if !c.cred.CompareAndSwap(old, next) {
		return Rotation{}, fmt.Errorf("nops: rotate %s: the credential changed during the rotation", id)
	}
	// Drain: the requests sent with the old secret are authenticated by now or will be within
	// the grace period; wait for their answers so the caller knows none depends on it any more.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for old.inFlight.Load() > 0 {
		select {
		case <-ctx.Done():
			return Rotation{}, fmt.Errorf("nops: rotate %s: waiting for requests with the old secret: %w", id, ctx.Err())
		case <-tick.C:
		}
	}
	got, err := c.api.GetApiKeyWithResponse(ctx, id, nil)
	if err != nil {
		return Rotation{}, fmt.Errorf("nops: rotate %s: confirm: %w", id, err)
	}
	if got.JSON200 == nil {
		return Rotation{}, fmt.Errorf("nops: rotate %s: confirm with the new secret: %w", id, problemOf(got.StatusCode(), got.Body))
	}
	if got.JSON200.PreviousSecretValidUntil == nil {
		return Rotation{}, fmt.Errorf("nops: rotate %s: the kernel reports no retiring previous secret", id)
	}
	return Rotation{KeyID: id, OldValidUntil: *got.JSON200.PreviousSecretValidUntil}, nil
}

// APIKey returns the raw API key the client currently sends ("" without one): after a
// rotation, the new one, which the caller must store to survive a restart.
func (c *Client) APIKey() string {
	if cr := c.cred.Load(); cr.header == "X-API-Key" {
		return cr.value
	}
	return ""
}
