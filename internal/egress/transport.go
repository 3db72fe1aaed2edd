package egress

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// Dialer returns a *net.Dialer that checks every address it connects to against p, in its
// ControlContext hook: after DNS resolution, once per address tried, right before connect(2).
// A check made earlier (at registration, or a lookup of our own before dialling) would let DNS
// rebinding through: the name can resolve to a public address for the check and to 127.0.0.1 or
// 169.254.169.254 for the dial. Only the address actually dialled is safe to judge.
//
// The hook is ControlContext rather than Control because the net package ignores Control when
// ControlContext is set: a caller adding socket options through Control cannot remove the check
// by accident. Callers must not replace ControlContext. The caller may set Resolver. A
// non-IP address (a Unix socket path) is refused.
func (p Policy) Dialer(timeout, keepAlive time.Duration) *net.Dialer {
	return p.RulesDialer(nil, timeout, keepAlive)
}

// RulesDialer is Dialer also checking each address against r (nil: the address policy only).
// Rules judge host names too: dial through DialHost so the hook knows the name being dialled.
func (p Policy) RulesDialer(r *Rules, timeout, keepAlive time.Duration) *net.Dialer {
	p = p.clone()
	return &net.Dialer{
		Timeout:   timeout,
		KeepAlive: keepAlive,
		ControlContext: func(ctx context.Context, _, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return &BlockedError{Reason: ReasonInvalid}
			}
			if err := p.Check(ap.Addr()); err != nil {
				return err
			}
			if r == nil {
				return nil
			}
			host, _ := ctx.Value(dialHostKey{}).(string)
			return r.Check(host, ap.Addr(), ap.Port())
		},
	}
}

// dialHostKey is the context key of the host name being dialled, for the rules check.
type dialHostKey struct{}

// DialHost dials addr ("host:port") with d, telling d's check the host name.
func DialHost(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(addr)
	return d.DialContext(context.WithValue(ctx, dialHostKey{}, host), network, addr)
}

// TransportOptions tunes NewTransport. Zero fields take the defaults below; a negative duration
// means no timeout (for KeepAlive: keep-alive probes off).
type TransportOptions struct {
	DialTimeout           time.Duration // default 5s: an agent that does not accept in 5s is down
	KeepAlive             time.Duration // default 30s: TCP keep-alive probe interval
	IdleConnTimeout       time.Duration // default 90s
	TLSHandshakeTimeout   time.Duration // default 5s
	ResponseHeaderTimeout time.Duration // default none: the call's context deadline bounds the wait
	ExpectContinueTimeout time.Duration // default 1s

	// MaxIdleConns defaults to 1024 and MaxIdleConnsPerHost to 128 (http.DefaultTransport keeps
	// 2 per host, which makes a proxy at 1k req/s open and close connections all the time);
	// MaxConnsPerHost defaults to 0, no limit (the per-agent bulkhead limits concurrency).
	MaxIdleConns, MaxIdleConnsPerHost, MaxConnsPerHost int

	// TLSClientConfig is cloned; nil means the system roots and TLS 1.2 or later.
	TLSClientConfig *tls.Config
	// Resolver resolves agents' host names; nil means the system resolver. Whatever it answers is
	// checked at dial time.
	Resolver *net.Resolver

	// Rules, when set, are checked at dial time after the Policy (the gate's allow-list for one
	// service and tenant); Service and Tenant name them in a refusal's BlockedError, and
	// OnBlocked, when set, hears of every refused dial (to count it).
	Rules     *Rules
	Service   string
	Tenant    string
	OnBlocked func(ctx context.Context, b *BlockedError)
}

// Defaults for zero TransportOptions fields.
const (
	DefaultDialTimeout         = 5 * time.Second
	DefaultKeepAlive           = 30 * time.Second
	DefaultIdleConnTimeout     = 90 * time.Second
	DefaultTLSHandshakeTimeout = 5 * time.Second
	DefaultExpectContinue      = 1 * time.Second
	DefaultMaxIdleConns        = 1024
	DefaultMaxIdleConnsPerHost = 128
	// MaxResponseHeaderBytes caps an agent's response header: an agent is not trusted to keep it
	// small (http.Transport's own default is 10 MiB).
	MaxResponseHeaderBytes = 1 << 20
)

// NewTransport returns an *http.Transport for calls to agents:
//
//   - Proxy is nil: HTTP_PROXY/HTTPS_PROXY from the environment are never used, because the
//     dial check would then judge the proxy's address, not the agent's.
//   - DialContext dials through p.Dialer, so every connection's address is checked. A refusal
//     comes back as a *BlockedError (find it with IsBlocked) with Host set to the host dialled.
//   - HTTP/2 is attempted on TLS connections (ForceAttemptHTTP2); plain http is HTTP/1.1.
//   - DisableCompression is true: the transport neither asks for gzip nor decodes it, so bodies
//     pass through byte for byte and Content-Encoding/Content-Length stay the agent's.
func NewTransport(p Policy, o TransportOptions) *http.Transport {
	d := p.RulesDialer(o.Rules, orDefault(o.DialTimeout, DefaultDialTimeout), keepAlive(o.KeepAlive))
	d.Resolver = o.Resolver
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.TLSClientConfig != nil {
		tlsConf = o.TLSClientConfig.Clone()
	}
	return &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := DialHost(ctx, d, network, addr)
			if be, ok := IsBlocked(err); ok && be.Host == "" {
				// The BlockedError was made by this dial's check: no one else holds it yet.
				be.Host, _, _ = net.SplitHostPort(addr)
				be.Service, be.Tenant = o.Service, o.Tenant
				if o.OnBlocked != nil {
					o.OnBlocked(ctx, be)
				}
			}
			return c, err
		},
		ForceAttemptHTTP2:      true,
		TLSClientConfig:        tlsConf,
		TLSHandshakeTimeout:    orDefault(o.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout),
		IdleConnTimeout:        orDefault(o.IdleConnTimeout, DefaultIdleConnTimeout),
		ResponseHeaderTimeout:  orDefault(o.ResponseHeaderTimeout, 0),
		ExpectContinueTimeout:  orDefault(o.ExpectContinueTimeout, DefaultExpectContinue),
		MaxIdleConns:           orDefaultInt(o.MaxIdleConns, DefaultMaxIdleConns),
		MaxIdleConnsPerHost:    orDefaultInt(o.MaxIdleConnsPerHost, DefaultMaxIdleConnsPerHost),
		MaxConnsPerHost:        o.MaxConnsPerHost,
		MaxResponseHeaderBytes: MaxResponseHeaderBytes,
		DisableCompression:     true,
	}
}

// Client returns an *http.Client over t that never follows redirects: a 3xx comes back to the
// caller as the response. Following one would send the request to wherever the agent points,
// with the caller's method and body (the dial check would still apply, but an agent must not be
// able to steer the kernel at all). The client has no Timeout: calls carry a context deadline.
// t must not be nil (a nil Transport would mean http.DefaultTransport, which checks nothing).
func Client(t http.RoundTripper) *http.Client {
	if t == nil {
		panic("egress: Client needs a transport")
	}
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d < 0:
		return 0
	case d == 0:
		return def
	}
	return d
}

// keepAlive maps the option to net.Dialer's meaning, where negative already means off.
func keepAlive(d time.Duration) time.Duration {
	if d == 0 {
		return DefaultKeepAlive
	}
	return d
}

func orDefaultInt(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}
