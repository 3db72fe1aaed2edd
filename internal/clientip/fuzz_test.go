package clientip

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// FuzzClientIP feeds arbitrary Forwarded and X-Forwarded-For values to resolvers in front of a
// trusted and an untrusted peer. It checks that nothing panics; that an untrusted peer is always
// answered as itself, whatever the headers say; and that a trusted peer is answered with a valid,
// unmapped, zone-free address that is the peer or appears in one of the headers. Seeds:
// testdata/fuzz/FuzzClientIP and the ones below.
func FuzzClientIP(f *testing.F) {
	for _, s := range [][2]string{
		{"for=203.0.113.7", ""},
		{`for="[2001:db8:cafe::17]:4711"`, ""},
		{"for=unknown, for=10.0.0.1", ""},
		{`for=_hidden;proto=https;by="[2001:db8::1]"`, ""},
		{`for="\"quoted\"", for=198.51.100.1`, ""},
		{`for="203.0.113.7`, "198.51.100.2"},
		{"", "203.0.113.7, 10.0.0.1"},
		{"", "[2001:db8::7]:1234, 203.0.113.7:80"},
		{"", ",,"},
		{"for=10.0.0.3;;host=example.com , ,for=10.0.0.4", "1.2.3.4"},
	} {
		f.Add(s[0], s[1])
	}
	r := New([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")})
	f.Fuzz(func(t *testing.T, fwd, xff string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		if fwd != "" {
			req.Header["Forwarded"] = strings.Split(fwd, "\n")
		}
		if xff != "" {
			req.Header["X-Forwarded-For"] = strings.Split(xff, "\n")
		}

		req.RemoteAddr = "198.51.100.9:1"
		if got := r.ClientIP(req); got != netip.MustParseAddr("198.51.100.9") {
			t.Fatalf("untrusted peer answered as %v", got)
		}

		req.RemoteAddr = "10.0.0.2:1"
		got := r.ClientIP(req)
		if !got.IsValid() || got.Is4In6() || got.Zone() != "" {
			t.Fatalf("trusted peer answered with %v", got)
		}
		if got != netip.MustParseAddr("10.0.0.2") && !mentions(fwd+xff, got) {
			t.Fatalf("answer %v appears neither as the peer nor in the headers %q %q", got, fwd, xff)
		}
		if _, ok := forwardedFor(req.Header.Values("Forwarded")); !ok && got != netip.MustParseAddr("10.0.0.2") {
			t.Fatalf("malformed Forwarded %q answered %v, want the peer", fwd, got)
		}
	})
}

// mentions reports whether some substring of s parses as a (mapped, zoned) spelling of a, which
// the answer must come from.
func mentions(s string, a netip.Addr) bool {
	s = strings.ReplaceAll(s, `\`, "") // quoted-pairs in Forwarded values
	for i := range len(s) {
		for j := i + 1; j <= len(s) && j-i <= 64; j++ {
			if b, err := netip.ParseAddr(s[i:j]); err == nil && normalize(b) == a {
				return true
			}
		}
	}
	return false
}
