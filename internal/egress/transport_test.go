package egress_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/egress"
)

// countingServer is a real HTTP server on 127.0.0.1:0 that counts the requests it receives.
type countingServer struct {
	*httptest.Server
	hits atomic.Int64
}

func newCountingServer(t *testing.T, h http.HandlerFunc) *countingServer {
	t.Helper()
	s := &countingServer{}
	if h == nil {
		h = func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }
	}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *countingServer) port(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Port()
}

// newClient returns an egress client under p whose idle connections are closed at cleanup.
func newClient(t *testing.T, p egress.Policy, o egress.TransportOptions) *http.Client {
	t.Helper()
	tr := egress.NewTransport(p, o)
	t.Cleanup(tr.CloseIdleConnections)
	return egress.Client(tr)
}

func get(t *testing.T, c *http.Client, rawURL string) (*http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err == nil {
		t.Cleanup(func() { _ = resp.Body.Close() })
	}
	return resp, err
}

func TestLoopbackServerReachableOnlyWhenAllowed(t *testing.T) {
	srv := newCountingServer(t, nil)

	resp, err := get(t, newClient(t, loopbackPolicy, egress.TransportOptions{}), srv.URL)
	if err != nil {
		t.Fatalf("with AllowLoopback: %v", err)
	}
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("with AllowLoopback: %d %q", resp.StatusCode, body)
	}
	if got := srv.hits.Load(); got != 1 {
		t.Fatalf("server saw %d requests, want 1", got)
	}

	_, err = get(t, newClient(t, defaultPolicy, egress.TransportOptions{}), srv.URL)
	be, ok := egress.IsBlocked(err)
	if !ok {
		t.Fatalf("default policy: error %v, want a *BlockedError in the chain", err)
	}
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Errorf("error %T is not a *url.Error", err)
	}
	wantAddr := netip.MustParseAddrPort(srv.Listener.Addr().String()).Addr()
	if be.Reason != egress.ReasonLoopback || be.Addr != wantAddr || be.Host != wantAddr.String() {
		t.Errorf("BlockedError = %+v, want loopback refusal of %s", be, wantAddr)
	}
	if got := srv.hits.Load(); got != 1 {
		t.Errorf("server saw %d requests, want still 1", got)
	}
}

// TestDNSRebinding: a name that resolves to a public address when it is checked and to 127.0.0.1
// when it is dialled is refused at dial time, and the server behind 127.0.0.1 sees nothing.
func TestDNSRebinding(t *testing.T) {
	srv := newCountingServer(t, nil)
	public := netip.MustParseAddr("93.184.216.34")
	dns := startDNS(t, "rebind.test", func(n int64) []netip.Addr {
		if n <= 1 {
			return []netip.Addr{public}
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	})
	r := dns.resolver()

	// A check made before dialling (as registration would) sees the public address and passes.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addrs, err := r.LookupNetIP(ctx, "ip4", "rebind.test")
	if err != nil || len(addrs) != 1 || addrs[0] != public {
		t.Fatalf("first lookup = %v, %v; want [%s]", addrs, err, public)
	}
	if err := defaultPolicy.Check(addrs[0]); err != nil {
		t.Fatalf("the early check refused %s: %v", addrs[0], err)
	}

	// The dial resolves again, gets 127.0.0.1, and the dial-time check refuses it.
	target := "http://rebind.test:" + srv.port(t) + "/"
	_, err = get(t, newClient(t, defaultPolicy, egress.TransportOptions{Resolver: r}), target)
	be, ok := egress.IsBlocked(err)
	if !ok {
		t.Fatalf("rebound dial: error %v, want a *BlockedError", err)
	}
	if be.Reason != egress.ReasonLoopback || be.Addr != netip.MustParseAddr("127.0.0.1") || be.Host != "rebind.test" {
		t.Errorf("BlockedError = %+v, want loopback refusal of 127.0.0.1 for rebind.test", be)
	}
	if got := srv.hits.Load(); got != 0 {
		t.Fatalf("server saw %d requests, want 0", got)
	}
	if dns.queries.Load() < 2 {
		t.Fatalf("the dial did not resolve the name again (%d A queries)", dns.queries.Load())
	}

	// Control: the same resolution with loopback allowed does reach the server, so the refusal
	// above came from the check and not from a broken resolution.
	if _, err := get(t, newClient(t, loopbackPolicy, egress.TransportOptions{Resolver: r}), target); err != nil {
		t.Fatalf("with AllowLoopback: %v", err)
	}
	if got := srv.hits.Load(); got != 1 {
		t.Fatalf("server saw %d requests, want 1", got)
	}
}

// TestRefusedAddressFallsThrough: a name with a refused and an allowed address is reached on the
// allowed one; the refused one is never connected to.
func TestRefusedAddressFallsThrough(t *testing.T) {
	srv := newCountingServer(t, nil)
	dns := startDNS(t, "mixed.test", func(int64) []netip.Addr {
		return []netip.Addr{netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("127.0.0.1")}
	})
	c := newClient(t, loopbackPolicy, egress.TransportOptions{Resolver: dns.resolver()})
	if _, err := get(t, c, "http://mixed.test:"+srv.port(t)+"/"); err != nil {
		t.Fatalf("get: %v", err)
	}
	if got := srv.hits.Load(); got != 1 {
		t.Fatalf("server saw %d requests, want 1", got)
	}
}

func TestDialerRefusesBeforeConnecting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := defaultPolicy.Dialer(5*time.Second, 0)
	for _, addr := range []string{"169.254.169.254:80", "[fd00:ec2::254]:80", "127.0.0.1:1", "[::ffff:10.0.0.1]:80", "0.0.0.0:80"} {
		c, err := d.DialContext(ctx, "tcp", addr)
		if c != nil {
			_ = c.Close()
		}
		if _, ok := egress.IsBlocked(err); !ok {
			t.Errorf("dial %s: %v, want a *BlockedError", addr, err)
		}
	}
	// A Unix socket path is not an IP address: refused rather than let through unchecked.
	c, err := d.DialContext(ctx, "unix", t.TempDir()+"/agent.sock")
	if c != nil {
		_ = c.Close()
	}
	if be, ok := egress.IsBlocked(err); !ok || be.Reason != egress.ReasonInvalid {
		t.Errorf("dial unix: %v, want an invalid-address refusal", err)
	}
}

// TestDialerCopiesPolicy: editing the Allow slice after building the dialer does not change it.
func TestDialerCopiesPolicy(t *testing.T) {
	srv := newCountingServer(t, nil)
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	d := egress.Policy{Allow: allow}.Dialer(5*time.Second, 0)
	allow[0] = netip.MustParsePrefix("10.0.0.0/8")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	_ = c.Close()
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var other atomic.Int64
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/meta":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		case "/local":
			http.Redirect(w, r, "/other", http.StatusTemporaryRedirect)
		default:
			other.Add(1)
		}
	})
	c := newClient(t, loopbackPolicy, egress.TransportOptions{})
	for path, want := range map[string]struct {
		code     int
		location string
	}{
		"/meta":  {http.StatusFound, "http://169.254.169.254/latest/meta-data/"},
		"/local": {http.StatusTemporaryRedirect, "/other"},
	} {
		resp, err := get(t, c, srv.URL+path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if resp.StatusCode != want.code || resp.Header.Get("Location") != want.location {
			t.Errorf("%s: %d Location %q, want %d %q", path, resp.StatusCode, resp.Header.Get("Location"), want.code, want.location)
		}
	}
	if got := other.Load(); got != 0 {
		t.Errorf("a redirect was followed (%d requests to /other)", got)
	}
}

func TestBodiesPassThroughUncompressed(t *testing.T) {
	raw := "\x1f\x8b not really gzip, and the transport must not try to decode it"
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if ae := r.Header.Get("Accept-Encoding"); ae != "" {
			http.Error(w, "transport added Accept-Encoding: "+ae, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = io.WriteString(w, raw)
	})
	resp, err := get(t, newClient(t, loopbackPolicy, egress.TransportOptions{}), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != raw || resp.Uncompressed || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("got %d %q (uncompressed %v, Content-Encoding %q), want the body byte for byte",
			resp.StatusCode, body, resp.Uncompressed, resp.Header.Get("Content-Encoding"))
	}
}

func TestHTTP2OverTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	conf := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	resp, err := get(t, newClient(t, loopbackPolicy, egress.TransportOptions{TLSClientConfig: conf}), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2", resp.Proto)
	}
	if conf.NextProtos != nil {
		t.Errorf("the caller's tls.Config was modified (NextProtos %v)", conf.NextProtos)
	}
	// The TLS path dials through the same check.
	if _, err := get(t, newClient(t, defaultPolicy, egress.TransportOptions{TLSClientConfig: conf}), srv.URL); err == nil {
		t.Error("TLS dial to loopback succeeded under the default policy")
	} else if _, ok := egress.IsBlocked(err); !ok {
		t.Errorf("TLS dial: %v, want a *BlockedError", err)
	}
}

func TestNewTransportSettings(t *testing.T) {
	// Proxy variables in the environment must make no difference.
	t.Setenv("HTTP_PROXY", "http://proxy.invalid:3128")
	t.Setenv("HTTPS_PROXY", "http://proxy.invalid:3128")

	tr := egress.NewTransport(defaultPolicy, egress.TransportOptions{})
	if tr.Proxy != nil {
		t.Error("Proxy is set: a proxy would bypass the dial check")
	}
	if tr.DialContext == nil || tr.DialTLSContext != nil {
		t.Error("dialing must go through DialContext only")
	}
	if !tr.ForceAttemptHTTP2 || !tr.DisableCompression {
		t.Errorf("ForceAttemptHTTP2 %v DisableCompression %v, want both true", tr.ForceAttemptHTTP2, tr.DisableCompression)
	}
	if tr.TLSClientConfig == nil || tr.TLSClientConfig.MinVersion != tls.VersionTLS12 {
		t.Errorf("default TLS config %+v, want TLS 1.2 minimum", tr.TLSClientConfig)
	}
	type durations struct{ idle, tlsHS, respHdr, expect time.Duration }
	type ints struct{ idle, idlePerHost, perHost int }
	if got, want := (durations{tr.IdleConnTimeout, tr.TLSHandshakeTimeout, tr.ResponseHeaderTimeout, tr.ExpectContinueTimeout}),
		(durations{egress.DefaultIdleConnTimeout, egress.DefaultTLSHandshakeTimeout, 0, egress.DefaultExpectContinue}); got != want {
		t.Errorf("default durations %+v, want %+v", got, want)
	}
	if got, want := (ints{tr.MaxIdleConns, tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost}),
		(ints{egress.DefaultMaxIdleConns, egress.DefaultMaxIdleConnsPerHost, 0}); got != want {
		t.Errorf("default limits %+v, want %+v", got, want)
	}
	if tr.MaxResponseHeaderBytes != egress.MaxResponseHeaderBytes {
		t.Errorf("MaxResponseHeaderBytes %d", tr.MaxResponseHeaderBytes)
	}

	tr = egress.NewTransport(defaultPolicy, egress.TransportOptions{
		IdleConnTimeout: time.Second, TLSHandshakeTimeout: -1, ResponseHeaderTimeout: 3 * time.Second,
		ExpectContinueTimeout: -1, MaxIdleConns: 7, MaxIdleConnsPerHost: 3, MaxConnsPerHost: 9,
	})
	if got, want := (durations{tr.IdleConnTimeout, tr.TLSHandshakeTimeout, tr.ResponseHeaderTimeout, tr.ExpectContinueTimeout}),
		(durations{time.Second, 0, 3 * time.Second, 0}); got != want {
		t.Errorf("set durations %+v, want %+v", got, want)
	}
	if got, want := (ints{tr.MaxIdleConns, tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost}), (ints{7, 3, 9}); got != want {
		t.Errorf("set limits %+v, want %+v", got, want)
	}
}

func TestDialerSettings(t *testing.T) {
	d := defaultPolicy.Dialer(3*time.Second, -1)
	if d.Timeout != 3*time.Second || d.KeepAlive != -1 || d.ControlContext == nil {
		t.Errorf("Dialer = timeout %v keepalive %v control %v", d.Timeout, d.KeepAlive, d.ControlContext != nil)
	}
}

func TestClientNeedsTransport(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Client(nil) did not panic: it would fall back to http.DefaultTransport")
		}
	}()
	egress.Client(nil)
}
