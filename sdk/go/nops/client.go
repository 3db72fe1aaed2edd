package nops

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nops-kernel/nops/sdk/go/nops/api"
)

// Options configure a Client. BaseURL and one credential (APIKey or BearerToken) are required.
type Options struct {
	// BaseURL is the kernel's URL as the client reaches it, e.g. http://127.0.0.1:8080. Request
	// signatures cover it, so it must be the URL the kernel is configured to see.
	BaseURL string
	// APIKey is a raw API key, nops_<keyid>_<secret>, sent as X-API-Key.
	APIKey string
	// BearerToken is an access token (JWT), sent as Authorization: Bearer.
	BearerToken string
	// RequestKey, when set, signs every request (RFC 9421). Tenants that require signatures
	// refuse unsigned requests.
	RequestKey *RequestKey
	// HTTPClient sends the requests; a client with its own transport when nil. Its Timeout
	// bounds each attempt; the request context bounds the whole call, retries included.
	HTTPClient *http.Client
	// Retry is the retry policy; zero fields take the defaults.
	Retry RetryPolicy
	// Hooks are called on retries (and by an Agent on heartbeats and invocations).
	Hooks Hooks
}

// RetryPolicy says how a Client retries.
type RetryPolicy struct {
	// MaxAttempts is the number of attempts, the first included (default 5; 1 disables retries).
	MaxAttempts int
	// BaseDelay is the backoff of the first retry (default 100 ms); it doubles at each retry.
	BaseDelay time.Duration
	// MaxDelay caps the backoff (default 10 s). A Retry-After longer than MaxDelay is still
	// honoured, within the request context's deadline.
	MaxDelay time.Duration
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 5
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = 100 * time.Millisecond
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = 10 * time.Second
	}
	return p
}

// backoff is the delay before retry number n (1 for the first retry): full jitter, uniform in
// [0, min(MaxDelay, BaseDelay·2^(n-1))].
func (p RetryPolicy) backoff(n int) time.Duration {
	ceiling := p.BaseDelay
	for i := 1; i < n && ceiling < p.MaxDelay; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, p.MaxDelay)
	return time.Duration(mrand.Int64N(int64(ceiling) + 1))
}

// credential is how requests authenticate; in-flight counts the requests sent with it whose
// answer has not arrived yet, so that a rotation waits for them before retiring it.
type credential struct {
	header, value string
	inFlight      atomic.Int64
}

// Client talks to one kernel. It is safe for concurrent use.
type Client struct {
	base   *url.URL
	hc     *http.Client
	cred   atomic.Pointer[credential]
	signer *signer
	retry  RetryPolicy
	hooks  Hooks
	api    *api.ClientWithResponses
	// rotateBy, when set, is told the deadline of a Nops-Api-Key-Rotate-By answer to a request
	// sent with the current API key (an Agent rotates the key then).
	rotateBy atomic.Pointer[func(time.Time)]
}

// HeaderAPIKeyRotateBy is the header the kernel adds to every answer to a request authenticated
// by an API key an administrator required to be rotated (force-rotate): the RFC 3339 deadline
// from which the key is refused unless rotated.
const HeaderAPIKeyRotateBy = "Nops-Api-Key-Rotate-By"

// watchRotateBy makes fn hear the rotation deadlines the kernel announces for the client's
// current API key (nil: nobody does). fn is called synchronously on the request's goroutine.
func (c *Client) watchRotateBy(fn func(time.Time)) {
	if fn == nil {
		c.rotateBy.Store(nil)
		return
	}
	c.rotateBy.Store(&fn)
}

// noticeRotateBy passes on the rotation deadline an answer to a request sent with cred
// announces, when cred is still the client's API key: an answer to a request sent before a
// rotation says nothing about the new secret.
func (c *Client) noticeRotateBy(cred *credential, resp *http.Response) {
	v := resp.Header.Get(HeaderAPIKeyRotateBy)
	fn := c.rotateBy.Load()
	if v == "" || fn == nil || cred.header != "X-API-Key" || c.cred.Load() != cred {
		return
	}
	by, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return // not a deadline: nothing to act on
	}
	(*fn)(by)
}

// NewClient returns a client of the kernel at o.BaseURL.
func NewClient(o Options) (*Client, error) {
	base, err := url.Parse(strings.TrimSuffix(o.BaseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("nops: base URL %q must be an absolute http or https URL", o.BaseURL)
	}
	c := &Client{base: base, hc: o.HTTPClient, retry: o.Retry.withDefaults(), hooks: o.Hooks}
	if c.hc == nil {
		c.hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	switch {
	case o.APIKey != "" && o.BearerToken != "":
		return nil, errors.New("nops: give APIKey or BearerToken, not both")
	case o.APIKey != "":
		if _, err := apiKeyID(o.APIKey); err != nil {
			return nil, err
		}
		c.cred.Store(&credential{header: "X-API-Key", value: o.APIKey})
	case o.BearerToken != "":
		c.cred.Store(&credential{header: "Authorization", value: "Bearer " + o.BearerToken})
	default:
		c.cred.Store(&credential{})
	}
	if o.RequestKey != nil {
		if c.signer, err = newSigner(*o.RequestKey); err != nil {
			return nil, fmt.Errorf("nops: %w", err)
		}
	}
	c.api, err = api.NewClientWithResponses(base.String(), api.WithHTTPClient(doer{c}))
	if err != nil {
		return nil, fmt.Errorf("nops: %w", err)
	}
	return c, nil
}

// API returns the typed client of the kernel API, sending its requests through c (credentials,
// signatures, idempotency keys, retries).
func (c *Client) API() *api.ClientWithResponses { return c.api }

// BaseURL returns the kernel's URL.
func (c *Client) BaseURL() string { return c.base.String() }

// doer adapts a Client to the generated client's HttpRequestDoer.
type doer struct{ c *Client }

func (d doer) Do(r *http.Request) (*http.Response, error) { return d.c.Do(r) }

// Do sends r to the kernel with the client's credential and signature, retrying as the policy
// says, and returns the last answer. r's URL may be relative to the base URL. The body is read
// once and resent on each attempt. A POST or PATCH without an Idempotency-Key gets one, the same
// on every attempt, so the kernel processes it once.
func (c *Client) Do(r *http.Request) (*http.Response, error) {
	ctx := r.Context()
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(r.Body)
		_ = r.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("nops: read request body: %w", err)
		}
		body = b
	}
	u := r.URL
	if !u.IsAbs() {
		u = c.base.ResolveReference(u)
	}
	header := r.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	if (r.Method == http.MethodPost || r.Method == http.MethodPatch) && header.Get("Idempotency-Key") == "" {
		header.Set("Idempotency-Key", newToken())
	}
	// Every request may be retried on 429/503 (the kernel did not process it) and on transport
	// errors when it is idempotent: a safe method, PUT/DELETE, or one with an Idempotency-Key.
	idempotent := header.Get("Idempotency-Key") != "" || r.Method == http.MethodGet || r.Method == http.MethodHead ||
		r.Method == http.MethodOptions || r.Method == http.MethodPut || r.Method == http.MethodDelete
	for attempt := 1; ; attempt++ {
		resp, err := c.send(ctx, r.Method, u, header, body)
		delay, reason, retry := c.retryable(resp, err, idempotent, attempt)
		if !retry {
			return resp, err
		}
		if d, ok := ctx.Deadline(); ok && time.Until(d) < delay {
			return resp, err // no time left for another attempt: the caller gets this answer
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
		}
		c.hooks.retry(RetryEvent{Method: r.Method, Path: u.Path, Attempt: attempt, Reason: reason, Delay: delay})
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// send makes one attempt: a fresh request, authenticated with the current credential and
// signed anew (new nonce, new created).
func (c *Client) send(ctx context.Context, method string, u *url.URL, header http.Header, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("nops: %w", err)
	}
	if len(body) == 0 {
		req.Body, req.GetBody, req.ContentLength = http.NoBody, nil, 0
	}
	req.Header = header.Clone()
	cred := c.cred.Load()
	if cred.header != "" {
		req.Header.Set(cred.header, cred.value)
	}
	if c.signer != nil {
		req.Header.Del("Signature-Input")
		req.Header.Del("Signature")
		if err := c.signer.sign(req, body); err != nil {
			return nil, fmt.Errorf("nops: %w", err)
		}
	}
	cred.inFlight.Add(1)
	defer cred.inFlight.Add(-1)
	resp, err := c.hc.Do(req)
	if err == nil {
		c.noticeRotateBy(cred, resp)
	}
	return resp, err
}

// retryable says whether the outcome of attempt calls for another, after which delay.
func (c *Client) retryable(resp *http.Response, err error, idempotent bool, attempt int) (time.Duration, string, bool) {
	if attempt >= c.retry.MaxAttempts {
		return 0, "", false
	}
	if err != nil {
		if !idempotent || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return 0, "", false
		}
		return c.retry.backoff(attempt), "transport", true
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusServiceUnavailable:
	case resp.StatusCode == http.StatusConflict && idempotent && resp.Header.Get("Retry-After") != "":
		// The kernel is still processing the first request with this Idempotency-Key.
	default:
		return 0, "", false
	}
	delay := c.retry.backoff(attempt)
	if ra, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		delay = max(delay, ra)
	}
	return delay, strconv.Itoa(resp.StatusCode), true
}

// retryAfter parses a Retry-After value: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0, false
		}
		return time.Duration(min(s, int64(24*time.Hour/time.Second))) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// newToken returns 16 random bytes in hex: an Idempotency-Key token.
func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// apiKeyID returns the key ID of a raw API key, nops_<keyid>_<secret>.
func apiKeyID(raw string) (string, error) {
	rest, ok := strings.CutPrefix(raw, "nops_")
	id, _, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 || id == "" {
		return "", errors.New("nops: API key must have the form nops_<keyid>_<secret>")
	}
	return id, nil
}
