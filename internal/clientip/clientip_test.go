package clientip_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/nops-kernel/nops/internal/clientip"
	"github.com/nops-kernel/nops/internal/errs"
)

// trusted: the two proxy tiers of the tests, 10.0.0.0/8 (load balancers) and 2001:db8:f::/48.
func resolver(t *testing.T) *clientip.Resolver {
	t.Helper()
	ps, err := clientip.ParsePrefixes("trusted_proxies", []string{"10.0.0.0/8", "2001:db8:f::/48", "192.0.2.200"})
	if err != nil {
		t.Fatal(err)
	}
	return clientip.New(ps)
}

type header struct{ name, value string }

func TestClientIP(t *testing.T) {
	r := resolver(t)
	tests := []struct {
		name   string
		remote string
		hdrs   []header
		want   string
	}{
		// Refused first: what an untrusted peer writes is never read.
		{"untrusted peer spoofing X-Forwarded-For", "198.51.100.9:5555",
			[]header{{"X-Forwarded-For", "203.0.113.7"}}, "198.51.100.9"},
		{"untrusted peer spoofing a trusted hop in X-Forwarded-For", "198.51.100.9:5555",
			[]header{{"X-Forwarded-For", "203.0.113.7, 10.0.0.1"}}, "198.51.100.9"},
		{"untrusted peer spoofing Forwarded", "198.51.100.9:5555",
			[]header{{"Forwarded", "for=203.0.113.7"}}, "198.51.100.9"},
		{"client forging the left of the chain behind a trusted proxy", "10.0.0.2:443",
			[]header{{"X-Forwarded-For", "1.1.1.1, 8.8.8.8, 203.0.113.7"}}, "203.0.113.7"},
		{"client forging a trusted hop behind a trusted proxy", "10.0.0.2:443",
			[]header{{"X-Forwarded-For", "10.9.9.9, 203.0.113.7"}}, "203.0.113.7"},
		{"malformed rightmost X-Forwarded-For entry", "10.0.0.2:443",
			[]header{{"X-Forwarded-For", "203.0.113.7, not-an-ip"}}, "10.0.0.2"},
		{"malformed X-Forwarded-For entry left of a trusted hop", "10.0.0.2:443",
			[]header{{"X-Forwarded-For", "203.0.113.7, bogus, 10.0.0.1"}}, "10.0.0.1"},
		{"empty X-Forwarded-For entry", "10.0.0.2:443",
			[]header{{"X-Forwarded-For", "203.0.113.7,,10.0.0.1"}}, "10.0.0.1"},
		{"malformed Forwarded: unclosed quote", "10.0.0.2:443",
			[]header{{"Forwarded", `for="203.0.113.7`}}, "10.0.0.2"},
		{"malformed Forwarded: repeated for", "10.0.0.2:443",
			[]header{{"Forwarded", `for=203.0.113.7;for=198.51.100.1`}}, "10.0.0.2"},
		{"malformed Forwarded: client garbage before the proxy's element", "10.0.0.2:443",
			[]header{{"Forwarded", `for=@@, for=203.0.113.7`}}, "10.0.0.2"},
		{"malformed Forwarded: unquoted IPv6", "10.0.0.2:443",
			[]header{{"Forwarded", `for=[2001:db8::1]`}}, "10.0.0.2"},
		{"Forwarded unknown stops at the last good hop", "10.0.0.2:443",
			[]header{{"Forwarded", "for=unknown, for=10.0.0.1"}}, "10.0.0.1"},
		{"Forwarded obfuscated node stops at the peer", "10.0.0.2:443",
			[]header{{"Forwarded", "for=_hidden"}}, "10.0.0.2"},
		{"Forwarded element without for stops", "10.0.0.2:443",
			[]header{{"Forwarded", "for=203.0.113.7, proto=https"}}, "10.0.0.2"},

		// Accepted.
		{"no headers", "198.51.100.9:5555", nil, "198.51.100.9"},
		{"trusted peer without headers", "10.0.0.2:443", nil, "10.0.0.2"},
		{"trusted peer, one client", "10.0.0.2:443",
			[]header{{"X-Forwarded-For", "203.0.113.7"}}, "203.0.113.7"},
		{"chain of two trusted proxies", "10.0.0.2:443",
			[]header{{"X-Forwarded-For", "203.0.113.7, 10.0.0.1"}}, "203.0.113.7"},
		{"chain of two trusted proxies over two field lines", "10.0.0.2:443",
			[]header{{"X-Forwarded-For", "203.0.113.7"}, {"X-Forwarded-For", "10.0.0.1"}}, "203.0.113.7"},
		{"every hop trusted: the leftmost", "10.0.0.2:443",
			[]header{{"X-Forwarded-For", "10.0.0.5, 10.0.0.1"}}, "10.0.0.5"},
		{"X-Forwarded-For with ports", "10.0.0.2:443",
			[]header{{"X-Forwarded-For", "[2001:db8::7]:1234, 203.0.113.7:80"}}, "203.0.113.7"},
		{"X-Forwarded-For bracketed IPv6", "10.0.0.2:443",
			[]header{{"X-Forwarded-For", "[2001:db8::7]"}}, "2001:db8::7"},
		{"single trusted address", "192.0.2.200:443",
			[]header{{"X-Forwarded-For", "203.0.113.7"}}, "203.0.113.7"},
		{"IPv4-mapped trusted peer", "[::ffff:10.0.0.2]:443",
			[]header{{"X-Forwarded-For", "::ffff:203.0.113.7"}}, "203.0.113.7"},
		{"IPv6 trusted peer with zone", "[2001:db8:f::1%eth0]:443",
			[]header{{"X-Forwarded-For", "2001:db8:1::5"}}, "2001:db8:1::5"},
		{"Forwarded quoted IPv6 with port", "10.0.0.2:443",
			[]header{{"Forwarded", `for="[2001:db8:cafe::17]:4711"`}}, "2001:db8:cafe::17"},
		{"Forwarded IPv4 with port, case-insensitive name, other params", "10.0.0.2:443",
			[]header{{"Forwarded", `For="192.0.2.60:8080";proto=http;by=203.0.113.43`}}, "192.0.2.60"},
		{"Forwarded chain through a trusted IPv6 proxy", "10.0.0.2:443",
			[]header{{"Forwarded", `for=203.0.113.7;proto=https, for="[2001:db8:f::9]"`}}, "203.0.113.7"},
		{"Forwarded over two lines, empty elements, spaces around ;", "10.0.0.2:443",
			[]header{{"Forwarded", "for=198.51.100.3 ; proto=https,"}, {"Forwarded", ", for=10.0.0.1"}}, "198.51.100.3"},
		{"Forwarded wins over X-Forwarded-For", "10.0.0.2:443",
			[]header{{"Forwarded", "for=203.0.113.7"}, {"X-Forwarded-For", "198.51.100.1"}}, "203.0.113.7"},
		{"empty Forwarded falls back to X-Forwarded-For", "10.0.0.2:443",
			[]header{{"Forwarded", ""}, {"X-Forwarded-For", "198.51.100.1"}}, "198.51.100.1"},
		{"Forwarded obfuscated port", "10.0.0.2:443",
			[]header{{"Forwarded", `for="198.51.100.3:_port-1"`}}, "198.51.100.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.RemoteAddr = tt.remote
			for _, h := range tt.hdrs {
				req.Header.Add(h.name, h.value)
			}
			got := r.ClientIP(req)
			if got != netip.MustParseAddr(tt.want) {
				t.Errorf("ClientIP = %v, want %s", got, tt.want)
			}
		})
	}
}

// TestRotatingSpoofedHeadersStayInOneBucket: a client behind no proxy that sends a new forged
// address on every request is always answered as its own peer address.
func TestRotatingSpoofedHeadersStayInOneBucket(t *testing.T) {
	r := resolver(t)
	seen := map[netip.Addr]bool{}
	for i := range 200 {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.RemoteAddr = "198.51.100.9:40000"
		forged := netip.AddrFrom4([4]byte{203, 0, byte(i / 256), byte(i)})
		req.Header.Set("X-Forwarded-For", forged.String()+", 10.0.0.1")
		req.Header.Set("Forwarded", "for="+forged.String())
		seen[r.ClientIP(req)] = true
	}
	if len(seen) != 1 || !seen[netip.MustParseAddr("198.51.100.9")] {
		t.Fatalf("addresses answered: %v, want only the peer 198.51.100.9", seen)
	}
}

func TestNoTrustedProxies(t *testing.T) {
	r := clientip.New(nil)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = "10.0.0.2:443"
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	if got := r.ClientIP(req); got != netip.MustParseAddr("10.0.0.2") {
		t.Fatalf("ClientIP = %v, want the peer", got)
	}
}

func TestUnparsablePeer(t *testing.T) {
	r := resolver(t)
	for _, remote := range []string{"", "@", "pipe", "10.0.0.2:99999x"} {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.RemoteAddr = remote
		req.Header.Set("X-Forwarded-For", "203.0.113.7")
		if got := r.ClientIP(req); got.IsValid() {
			t.Errorf("RemoteAddr %q: ClientIP = %v, want the zero Addr", remote, got)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	bad := []string{"10.0.0.1/8", "not-a-prefix", "10.0.0.0/33", "fe80::1%eth0", ""}
	for _, s := range bad {
		_, err := clientip.ParsePrefixes("server.trusted_proxies", []string{"10.0.0.0/8", s})
		e := errs.As(err)
		if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != "server.trusted_proxies[1]" {
			t.Errorf("ParsePrefixes(%q) = %v, want an invalid error naming server.trusted_proxies[1]", s, err)
		}
	}
	got, err := clientip.ParsePrefixes("p", []string{" 192.0.2.7 ", "2001:db8::/32", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("::1/128")}
	if len(got) != len(want) {
		t.Fatalf("ParsePrefixes = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("prefix %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestMappedTrustedPrefix(t *testing.T) {
	r := clientip.New([]netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")})
	if !r.Trusted(netip.MustParseAddr("10.1.2.3")) || !r.Trusted(netip.MustParseAddr("::ffff:10.1.2.3")) {
		t.Fatal("an IPv4-mapped trusted prefix does not cover its IPv4 addresses")
	}
	if r.Trusted(netip.MustParseAddr("11.0.0.1")) {
		t.Fatal("11.0.0.1 is trusted")
	}
}
