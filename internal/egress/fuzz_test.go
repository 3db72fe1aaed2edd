package egress_test

import (
	"bytes"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/egress"
)

// The reference predicate for FuzzCheck, written apart from the package's tables: plain prefix
// lists, with the IPv6 side stated as "what is open" (2000::/3, ULA, ::1) minus exceptions rather
// than as the package's "what is refused" list.
var (
	refV4Always = prefixes(
		"0.0.0.0/8", "169.254.0.0/16",
		"224.0.0.0/3", // multicast, 240/4 and broadcast in one
		"192.0.0.0/24", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
		"198.18.0.0/15", "192.88.99.0/24",
		"168.63.129.16/32", "100.100.100.200/32",
	)
	refV4Loopback = prefixes("127.0.0.0/8")
	refV4Private  = prefixes("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")

	refV6Open      = prefixes("2000::/3")
	refV6OpenNot   = prefixes("2001::/32", "2001:2::/48", "2001:10::/28", "2001:20::/28", "2001:db8::/32", "3fff::/20")
	refV6Private   = prefixes("fc00::/7")
	refV6Metadata  = prefixes("fd00:ec2::254/128", "fd00:ec2::23/128")
	refV6Loopback  = prefixes("::1/128")
	refV6Mapped    = netip.MustParsePrefix("::ffff:0:0/96")
	refV6NAT64     = netip.MustParsePrefix("64:ff9b::/96")
	refV6SixToFour = netip.MustParsePrefix("2002::/16")
)

func prefixes(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}

// refClass classifies a (no zone) as "always", "loopback", "private" or "public".
func refClass(a netip.Addr) string {
	b := a.As16()
	if a.Is6() {
		switch {
		case refV6Mapped.Contains(a):
			return refClass(netip.AddrFrom4([4]byte(b[12:16])))
		case refV6NAT64.Contains(a):
			return refClass(netip.AddrFrom4([4]byte(b[12:16])))
		case refV6SixToFour.Contains(a):
			return refClass(netip.AddrFrom4([4]byte(b[2:6])))
		case inAny(refV6Loopback, a):
			return "loopback"
		case inAny(refV6Metadata, a):
			return "always"
		case inAny(refV6Private, a):
			return "private"
		case inAny(refV6Open, a) && !inAny(refV6OpenNot, a):
			return "public"
		}
		return "always"
	}
	switch {
	case inAny(refV4Always, a) || a == netip.MustParseAddr("169.254.170.2") || a == netip.MustParseAddr("192.0.0.192"):
		return "always"
	case inAny(refV4Loopback, a):
		return "loopback"
	case inAny(refV4Private, a):
		return "private"
	}
	return "public"
}

func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		"0.0.0.0", "127.0.0.1", "10.0.0.1", "100.100.100.200", "168.63.129.16", "169.254.169.254",
		"192.0.0.192", "255.255.255.255", "8.8.8.8", "::", "::1", "::ffff:127.0.0.1",
		"::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "64:ff9b::808:808", "2002:a9fe:a9fe::1",
		"2002:808:808::1", "2001::1", "fd00:ec2::254", "fc00::1", "fe80::1", "ff02::1",
		"2606:4700::1111", "fec0::1", "64:ff9b:1::1", "3fff::1", "2001:db8::1",
	} {
		a := netip.MustParseAddr(s)
		f.Add(a.AsSlice(), a.Is4())
	}
	f.Fuzz(func(t *testing.T, raw []byte, as4 bool) {
		var a netip.Addr
		if as4 {
			var b [4]byte
			copy(b[:], raw)
			a = netip.AddrFrom4(b)
		} else {
			var b [16]byte
			copy(b[:], raw)
			a = netip.AddrFrom16(b)
		}
		class := refClass(a)

		// The open policy refuses exactly the always-refused addresses.
		if refused := openPolicy.Check(a) != nil; refused != (class == "always") {
			t.Fatalf("open policy: Check(%s) refused=%v, reference class %q", a, refused, class)
		}
		// The default policy refuses everything but public addresses, and an always-refused
		// address gets the same reason under both policies.
		errDef := defaultPolicy.Check(a)
		if refused := errDef != nil; refused != (class != "public") {
			t.Fatalf("default policy: Check(%s) = %v, reference class %q", a, errDef, class)
		}
		if class == "always" && errDef.Error() != openPolicy.Check(a).Error() {
			t.Fatalf("Check(%s): default %q, open %q", a, errDef, openPolicy.Check(a))
		}
		// The flags open their class and nothing else.
		if refused := loopbackPolicy.Check(a) != nil; refused != (class != "public" && class != "loopback") {
			t.Fatalf("loopback policy: Check(%s) refused=%v, reference class %q", a, refused, class)
		}
		if refused := privatePolicy.Check(a) != nil; refused != (class != "public" && class != "private") {
			t.Fatalf("private policy: Check(%s) refused=%v, reference class %q", a, refused, class)
		}
		// An IPv4 address and its IPv4-mapped form are the same destination.
		if a.Is4() {
			m := netip.AddrFrom16(a.As16())
			if got, want := defaultPolicy.Check(m), errDef; (got == nil) != (want == nil) || (got != nil && got.Error() != want.Error()) {
				t.Fatalf("Check(%s) = %v but Check(%s) = %v", m, got, a, want)
			}
		}
	})
}

func FuzzValidateEndpoint(f *testing.F) {
	for _, s := range []string{
		"https://agent.example.com/v1", "http://127.0.0.1:8080/", "http://[::ffff:169.254.169.254]/",
		"http://[fe80::1%25eth0]/", "http://user:pw@x/", "http://2130706433/", "http:x", "http://x:0/",
		"ftp://x/", "http://[64:ff9b::a9fe:a9fe]:80/", "http://0x7f.1/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := defaultPolicy.ValidateEndpoint(raw)
		if err != nil {
			if be, ok := egress.IsBlocked(err); ok && be.Host == "" {
				t.Fatalf("ValidateEndpoint(%q): BlockedError without Host", raw)
			}
			return
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.User != nil || u.Opaque != "" || u.Hostname() == "" {
			t.Fatalf("ValidateEndpoint(%q) accepted %#v", raw, u)
		}
		if a, perr := netip.ParseAddr(u.Hostname()); perr == nil {
			if cerr := defaultPolicy.Check(a); cerr != nil {
				t.Fatalf("ValidateEndpoint(%q) accepted an address Check refuses: %v", raw, cerr)
			}
		}
	})
}

// FuzzHeaders feeds arbitrary header names, values and Connection lists through both directions
// and checks that nothing that must be stripped survives.
func FuzzHeaders(f *testing.F) {
	f.Add("X-Api-Key", "k", "keep-alive, X-Secret", "trailers")
	f.Add("x-forwarded-for", "1.2.3.4", "", "gzip")
	f.Add("Set-Cookie", "a=b", "close", "")
	f.Add("access-control-allow-origin", "*", "x-a,,x-b", "TRAILERS;q=0.5")
	f.Fuzz(func(t *testing.T, name, value, connection, te string) {
		src := http.Header{
			name:            {value},
			"Connection":    {connection},
			"Te":            {te},
			"Authorization": {"Bearer secret"},
			"X-Secret":      {"s"},
		}
		named := map[string]bool{}
		for tok := range strings.SplitSeq(connection, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				named[http.CanonicalHeaderKey(tok)] = true
			}
		}
		out := http.Header{}
		egress.OutboundHeader(out, src)
		for k, vv := range out {
			ck := http.CanonicalHeaderKey(k)
			if ck != k {
				t.Fatalf("outbound key %q not canonical", k)
			}
			switch {
			case ck == "Te":
				if !slices.Equal(vv, []string{"trailers"}) {
					t.Fatalf("outbound Te %q", vv)
				}
			case named[ck], strings.HasPrefix(ck, "X-Forwarded-"), slices.Contains(outboundStripped, ck):
				t.Fatalf("outbound kept %q (Connection %q)", ck, connection)
			}
		}
		in := http.Header{}
		egress.InboundHeader(in, src)
		for k := range in {
			if named[k] || strings.HasPrefix(k, "Access-Control-") || slices.Contains(inboundStripped, k) {
				t.Fatalf("inbound kept %q (Connection %q)", k, connection)
			}
		}
	})
}

var hopByHopNames = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

var outboundStripped = append(slices.Clone(hopByHopNames),
	"Authorization", "Cookie", "X-Api-Key", "Signature", "Signature-Input", "Forwarded", "X-Real-Ip", "Host")

var inboundStripped = append(slices.Clone(hopByHopNames),
	"Set-Cookie", "Strict-Transport-Security", "Alt-Svc", "Clear-Site-Data")

// FuzzParseAllowList: arbitrary text never panics; whatever parses survives its own checks
// (every service known, classes in range, host entries within their service's class).
func FuzzParseAllowList(f *testing.F) {
	f.Add([]byte(contractList))
	f.Add([]byte("serial: 1\nservices:\n  agents:\n    class: D4\n"))
	f.Add([]byte("serial: 1\nservices:\n  agents:\n    class: D2\n    allow:\n      - host: '*.a.b'\n        class: D2\n        ports: ['1-2', 3]\n"))
	f.Add([]byte("serial: 9\ntenants:\n  t:\n    otlp: {class: D1, allow: [{cidr: ::1/128}]}\n"))
	f.Fuzz(func(t *testing.T, text []byte) {
		l, err := egress.ParseAllowList(text)
		if err != nil {
			return
		}
		check := func(service string, r *egress.Rules) {
			if r.Class > egress.D4 || (r.Action != egress.ActionNone && r.Action != egress.ActionDeregister) {
				t.Fatalf("%s: accepted class %v action %q", service, r.Class, r.Action)
			}
			for _, d := range r.Allow {
				if d.Prefix.IsValid() == (d.Host != "") {
					t.Fatalf("%s: entry %+v is neither an address nor a name entry", service, d)
				}
				if d.Host != "" && (d.Class < egress.D1 || d.Class > r.Class) {
					t.Fatalf("%s: name entry of class %v in a %v service", service, d.Class, r.Class)
				}
				for _, p := range d.Ports {
					if p.From == 0 || p.From > p.To {
						t.Fatalf("%s: port range %+v", service, p)
					}
				}
			}
		}
		for name, r := range l.Services {
			check(name, r)
		}
		for _, svcs := range l.Tenants {
			for name, r := range svcs {
				check(name, r)
			}
		}
	})
}

// FuzzOpenAllowList: arbitrary bytes are never accepted as signed by a key that did not sign
// them, and never panic.
func FuzzOpenAllowList(f *testing.F) {
	skey, vkey, err := egress.GenerateAllowListKey("fuzz")
	if err != nil {
		f.Fatal(err)
	}
	vs, err := egress.ParseVerifierKeys(vkey)
	if err != nil {
		f.Fatal(err)
	}
	signed, err := egress.SignAllowList([]byte("serial: 1\nservices:\n  agents:\n    class: D1\n"), skey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signed)
	f.Add([]byte("serial: 1\n\n— fuzz AAAA\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := egress.OpenAllowList(data, vs)
		if err != nil {
			return
		}
		// Accepted: it must be the signed text, byte for byte up to the signature block.
		if !bytes.HasPrefix(data, signed[:bytes.LastIndex(signed, []byte("\n\n"))]) || l.Serial != 1 {
			t.Fatalf("accepted a list that was not signed: %q", data)
		}
	})
}
