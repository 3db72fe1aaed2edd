// Package clientip resolves the address of the client behind an HTTP request, for the rate
// limiter (internal/ratelimit) and the audit trail. The answer is the direct peer (the TCP
// connection's remote address) unless that peer is a trusted proxy; only then are the Forwarded
// (RFC 7239) or, when that is absent, X-Forwarded-For headers read, because any client can write
// them and only a proxy we run overwrites or appends to them honestly.
//
// Who may import it: internal/httpapi and internal/kernel (the middleware that resolves the
// address once per request), and anything that needs the same answer. It imports only
// internal/errs of the project.
//
// # Walk
//
// Each proxy appends the address it received the request from to the right end of the header.
// The resolver walks the header from right to left, starting at the peer: every hop that is a
// trusted proxy is skipped, and the first address that is not trusted is the client. Entries to
// the left of it were written by the client (or by proxies we do not control) and are ignored,
// so a client that puts a forged address in the header gains nothing: the trusted proxy appends
// the real one to its right.
//
// The walk stops at an entry it cannot use — "unknown", an obfuscated identifier ("_hidden"), an
// address that does not parse, an empty entry, a Forwarded element without for= — and answers the
// last good address it reached: the nearest trusted proxy that handed the request on. When every
// hop is trusted, the leftmost one is the answer. A Forwarded field that does not parse as RFC
// 7239 as a whole (an unclosed quote, a repeated parameter, a stray character) is not walked at
// all: the answer is the peer.
//
// Forwarded wins over X-Forwarded-For when both are present, since it is the standard and its
// for= nodes can carry IPv6 addresses with ports unambiguously ("[2001:db8::1]:4711", quoted). A
// Forwarded field with no elements counts as absent. Addresses are returned unmapped
// (::ffff:192.0.2.1 is 192.0.2.1) and without an IPv6 zone; ports are dropped.
//
// # Concurrency
//
// A Resolver is immutable after New and safe for concurrent use.
package clientip

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/nops-kernel/nops/internal/errs"
)

// Resolver finds a request's client address given the proxies it trusts.
type Resolver struct {
	trusted []netip.Prefix
}

// New returns a resolver trusting the proxies in the given prefixes. IPv4-mapped IPv6 prefixes
// are taken as the IPv4 prefixes they map. With no prefixes, headers are never read.
func New(trusted []netip.Prefix) *Resolver {
	r := &Resolver{trusted: make([]netip.Prefix, 0, len(trusted))}
	for _, p := range trusted {
		if !p.IsValid() {
			continue
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		r.trusted = append(r.trusted, p.Masked())
	}
	return r
}

// ParsePrefixes parses trusted-proxy entries of the configuration: CIDR prefixes
// ("10.0.0.0/8") or single addresses ("192.0.2.7", taken as /32 or /128). A prefix with host bits
// set is refused, since it most likely says something other than what was meant. Errors are
// errs.Field naming field.
func ParsePrefixes(field string, entries []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(entries))
	for i, s := range entries {
		name := fmt.Sprintf("%s[%d]", field, i)
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return nil, errs.Field(name, fmt.Sprintf("%q is not an IP address or CIDR prefix", s))
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, errs.Field(name, fmt.Sprintf("%q is not an IP address or CIDR prefix", s))
		}
		if p != p.Masked() {
			return nil, errs.Field(name, fmt.Sprintf("%q has host bits set; the prefix is %s", s, p.Masked()))
		}
		out = append(out, p)
	}
	return out, nil
}

// Trusted reports whether a is in a trusted-proxy prefix.
func (r *Resolver) Trusted(a netip.Addr) bool {
	a = normalize(a)
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP returns the client's address (see the package doc). It returns the invalid zero Addr
// only when the peer address itself does not parse (a Unix socket, a test request without
// RemoteAddr); callers put all such requests in one bucket.
func (r *Resolver) ClientIP(req *http.Request) netip.Addr {
	peer := PeerAddr(req.RemoteAddr)
	if !peer.IsValid() || !r.Trusted(peer) {
		return peer
	}
	if lines := req.Header.Values("Forwarded"); len(lines) > 0 {
		nodes, ok := forwardedFor(lines)
		if !ok {
			return peer
		}
		if len(nodes) > 0 {
			last := peer
			for i := len(nodes) - 1; i >= 0; i-- {
				a, ok := parseNode(nodes[i])
				if !ok {
					return last
				}
				if !r.Trusted(a) {
					return a
				}
				last = a
			}
			return last
		}
	}
	return r.walkXFF(peer, req.Header.Values("X-Forwarded-For"))
}

// walkXFF walks the X-Forwarded-For field lines from the right end of the last one, without
// splitting them into a slice.
func (r *Resolver) walkXFF(peer netip.Addr, lines []string) netip.Addr {
	last := peer
	for li := len(lines) - 1; li >= 0; li-- {
		rest := lines[li]
		for {
			entry := rest
			i := strings.LastIndexByte(rest, ',')
			if i >= 0 {
				entry, rest = rest[i+1:], rest[:i]
			}
			a, ok := parseXFFEntry(strings.Trim(entry, " \t"))
			if !ok {
				return last
			}
			if !r.Trusted(a) {
				return a
			}
			last = a
			if i < 0 {
				break
			}
		}
	}
	return last
}

// PeerAddr parses a net/http RemoteAddr ("192.0.2.1:1234", "[2001:db8::1]:443", or a bare
// address), unmapped and without zone; the zero Addr when it does not parse.
func PeerAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return normalize(ap.Addr())
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(remote, "["), "]")); err == nil {
		return normalize(a)
	}
	return netip.Addr{}
}

func normalize(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// parseXFFEntry parses one X-Forwarded-For entry: an address, optionally with a port
// ("192.0.2.1:80", "[2001:db8::1]:80", "[2001:db8::1]").
func parseXFFEntry(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return normalize(a), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return normalize(ap.Addr()), true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return normalize(a), true
		}
	}
	return netip.Addr{}, false
}

// parseNode parses the value of a for= parameter (RFC 7239 section 6):
//
//	node     = nodename [ ":" node-port ]
//	nodename = IPv4address / "[" IPv6address "]" / "unknown" / obfnode
//
// It reports false for "unknown", an obfuscated node and anything malformed. A bare IPv6 address
// without brackets, which the RFC does not allow but some proxies send, is accepted: it cannot be
// mistaken for anything else.
func parseNode(v string) (netip.Addr, bool) {
	if strings.HasPrefix(v, "[") {
		end := strings.IndexByte(v, ']')
		if end < 0 {
			return netip.Addr{}, false
		}
		a, err := netip.ParseAddr(v[1:end])
		if err != nil || !a.Is6() {
			return netip.Addr{}, false
		}
		if rest := v[end+1:]; rest != "" && (rest[0] != ':' || !validPort(rest[1:])) {
			return netip.Addr{}, false
		}
		return normalize(a), true
	}
	if a, err := netip.ParseAddr(v); err == nil {
		return normalize(a), true
	}
	host, port, found := strings.Cut(v, ":")
	if !found || !validPort(port) {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.Is4() {
		return netip.Addr{}, false
	}
	return a, true
}

// validPort reports whether s is a node-port: 1 to 5 digits, or an obfuscated port ("_" followed
// by letters, digits, '.', '_' or '-').
func validPort(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '_' {
		return validObf(s[1:])
	}
	if len(s) > 5 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func validObf(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
