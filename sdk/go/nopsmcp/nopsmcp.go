// Package nopsmcp lets an agent (or any Go program) call the tools of other agents through a NOPS
// kernel's MCP server: it wraps the official MCP Go SDK client
// (github.com/modelcontextprotocol/go-sdk/mcp) with the kernel's authentication — an API key
// (X-API-Key) or a bearer token on every request — and helpers to list tools and call one.
//
// Calls go through the kernel's invoke path: routing, policies, rate limits, audit and billing
// apply as for POST /v1/invoke/{capability}, and the caller's credential never reaches the agent
// that serves the call. Only tools an administrator approved are listed (docs/mcp.md).
//
//	c, err := nopsmcp.Connect(ctx, "https://kernel.example.com", nopsmcp.Options{APIKey: key})
//	if err != nil { … }
//	defer c.Close()
//	var out struct{ Echo map[string]string `json:"echo"` }
//	err = c.CallJSON(ctx, "text.echo", map[string]string{"text": "hi"}, &out)
package nopsmcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Options configure Connect. One of APIKey, Token or TokenSource is required.
type Options struct {
	APIKey string // sent as X-API-Key
	Token  string // sent as Authorization: Bearer
	// TokenSource returns the bearer token for each request (a token that is refreshed); it wins
	// over Token.
	TokenSource func(ctx context.Context) (string, error)
	// Tenant names the tenant whose tools to use; only a principal above tenants (SUPER_ADMIN)
	// may name one.
	Tenant string
	// HTTPClient carries the requests; nil: a client with http.DefaultTransport. Its Transport
	// gets the credential added; the client itself is not modified.
	HTTPClient *http.Client
	// Name and Version identify the client to the server; defaults "nopsmcp" and "0".
	Name, Version string
}

// Client is a connection to a kernel's MCP server. It is safe for concurrent use.
type Client struct {
	session *mcp.ClientSession
}

// Connect opens an MCP session with the kernel at baseURL (its /mcp endpoint). The server is
// stateless: the session is the client's only (the initialize handshake is checked), and any
// replica of the kernel serves each later request.
func Connect(ctx context.Context, baseURL string, opts Options) (*Client, error) {
	if opts.APIKey == "" && opts.Token == "" && opts.TokenSource == nil {
		return nil, errors.New("nopsmcp: an API key, a token or a token source is required")
	}
	u, err := url.Parse(strings.TrimRight(baseURL, "/") + "/mcp")
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("nopsmcp: kernel URL %q must be an absolute http(s) URL", baseURL)
	}
	if opts.Tenant != "" {
		q := u.Query()
		q.Set("tenant", opts.Tenant)
		u.RawQuery = q.Encode()
	}
	hc := &http.Client{}
	if opts.HTTPClient != nil {
		*hc = *opts.HTTPClient
	}
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	hc.Transport = &authTransport{base: base, opts: opts}
	name, version := opts.Name, opts.Version
	if name == "" {
		name = "nopsmcp"
	}
	if version == "" {
		version = "0"
	}
	client := mcp.NewClient(&mcp.Implementation{Name: name, Version: version}, nil)
	s, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   u.String(),
		HTTPClient: hc,
		// The kernel's server is stateless: it serves no standalone stream.
		DisableStandaloneSSE: true,
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("nopsmcp: connect to %s: %w", u.Redacted(), err)
	}
	return &Client{session: s}, nil
}

// Session is the underlying MCP session, for what this package does not wrap.
func (c *Client) Session() *mcp.ClientSession { return c.session }

// Close ends the session.
func (c *Client) Close() error { return c.session.Close() }

// Tools lists every tool the caller may call, all pages.
func (c *Client) Tools(ctx context.Context) ([]*mcp.Tool, error) {
	var out []*mcp.Tool
	for t, err := range c.session.Tools(ctx, nil) {
		if err != nil {
			return nil, fmt.Errorf("nopsmcp: list tools: %w", err)
		}
		out = append(out, t)
	}
	return out, nil
}

// Call calls tool name with args (any value that encodes as a JSON object; nil for none). A
// result with IsError set is returned as is, without an error: the error of the call itself
// (unknown tool, refused request, transport) is the error.
func (c *Client) Call(ctx context.Context, name string, args any) (*mcp.CallToolResult, error) {
	res, err := c.session.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return nil, fmt.Errorf("nopsmcp: call %s: %w", name, err)
	}
	return res, nil
}

// ToolError is a call that ran but whose result is an error: the agent answered 4xx/5xx, or the
// kernel refused the call (policy, rate limit, invalid input, no live agent).
type ToolError struct {
	Tool    string
	Message string // the result's text
}

func (e *ToolError) Error() string { return "nopsmcp: tool " + e.Tool + " failed: " + e.Message }

// CallJSON calls tool name with args and decodes its JSON answer into out (nil: discard). A result
// with IsError set is a *ToolError.
func (c *Client) CallJSON(ctx context.Context, name string, args, out any) error {
	res, err := c.Call(ctx, name, args)
	if err != nil {
		return err
	}
	text := resultText(res)
	if res.IsError {
		return &ToolError{Tool: name, Message: text}
	}
	if out == nil {
		return nil
	}
	raw := []byte(text)
	if res.StructuredContent != nil {
		if raw, err = json.Marshal(res.StructuredContent); err != nil {
			return fmt.Errorf("nopsmcp: tool %s: structured content: %w", name, err)
		}
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("nopsmcp: tool %s: decode its answer: %w", name, err)
	}
	return nil
}

// resultText joins the text contents of res.
func resultText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			b.WriteString(t.Text)
		}
	}
	return b.String()
}

// authTransport adds the credential to every request.
type authTransport struct {
	base http.RoundTripper
	opts Options
}

func (a *authTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	switch {
	case a.opts.TokenSource != nil:
		tok, err := a.opts.TokenSource(r.Context())
		if err != nil {
			return nil, fmt.Errorf("nopsmcp: token: %w", err)
		}
		r.Header.Set("Authorization", "Bearer "+tok)
	case a.opts.Token != "":
		r.Header.Set("Authorization", "Bearer "+a.opts.Token)
	default:
		r.Header.Set("X-API-Key", a.opts.APIKey)
	}
	return a.base.RoundTrip(r)
}
