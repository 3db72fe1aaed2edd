package egress_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"testing"

	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/egress"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Policies the table tests run under.
var (
	defaultPolicy  = egress.Policy{}
	loopbackPolicy = egress.Policy{AllowLoopback: true}
	privatePolicy  = egress.Policy{AllowPrivate: true}
	// openPolicy opens everything the configuration can open: what it still refuses is the
	// always-refused list.
	openPolicy = egress.Policy{
		AllowLoopback: true,
		AllowPrivate:  true,
		Allow:         []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
	}
)

// IPv4 addresses refused whatever the configuration, with their reasons.
var alwaysV4 = []struct{ addr, reason string }{
	{"0.0.0.0", egress.ReasonUnspecified},
	{"0.1.2.3", egress.ReasonUnspecified},
	{"169.254.0.1", egress.ReasonLinkLocal},
	{"169.254.255.255", egress.ReasonLinkLocal},
	{"169.254.169.254", egress.ReasonMetadata},
	{"169.254.170.2", egress.ReasonMetadata},
	{"169.254.170.23", egress.ReasonMetadata},
	{"100.100.100.200", egress.ReasonMetadata},
	{"168.63.129.16", egress.ReasonMetadata},
	{"192.0.0.192", egress.ReasonMetadata},
	{"224.0.0.1", egress.ReasonMulticast},
	{"239.255.255.250", egress.ReasonMulticast},
	{"255.255.255.255", egress.ReasonBroadcast},
	{"240.0.0.1", egress.ReasonReserved},
	{"255.255.255.254", egress.ReasonReserved},
	{"192.0.0.8", egress.ReasonReserved},
	{"192.0.2.1", egress.ReasonReserved},
	{"198.51.100.7", egress.ReasonReserved},
	{"203.0.113.9", egress.ReasonReserved},
	{"198.18.0.1", egress.ReasonReserved},
	{"198.19.255.255", egress.ReasonReserved},
	{"192.88.99.1", egress.ReasonReserved},
}

// IPv6 addresses refused whatever the configuration (besides the IPv4 embeddings of alwaysV4).
var alwaysV6 = []struct{ addr, reason string }{
	{"::", egress.ReasonUnspecified},
	{"fe80::1", egress.ReasonLinkLocal},
	{"fe80::1%eth0", egress.ReasonLinkLocal},
	{"febf:ffff::1", egress.ReasonLinkLocal},
	{"ff02::1", egress.ReasonMulticast},
	{"ff02::1%eth0", egress.ReasonMulticast},
	{"ff05::1:3", egress.ReasonMulticast},
	{"ff0e::1", egress.ReasonMulticast},
	{"fd00:ec2::254", egress.ReasonMetadata},
	{"fd00:ec2::23", egress.ReasonMetadata},
	{"2001::1", egress.ReasonTeredo},
	{"2001:0:4136:e378:8000:63bf:3fff:fdd2", egress.ReasonTeredo},
	{"2001:2::1", egress.ReasonReserved},
	{"2001:10::1", egress.ReasonReserved},
	{"2001:20::1", egress.ReasonReserved},
	{"2001:db8::1", egress.ReasonReserved},
	{"3fff::1", egress.ReasonReserved},
	{"::7f00:1", egress.ReasonReserved},        // IPv4-compatible 127.0.0.1 (deprecated)
	{"::ffff:0:7f00:1", egress.ReasonReserved}, // SIIT IPv4-translated
	{"100::1", egress.ReasonReserved},          // discard-only
	{"64:ff9b:1::7f00:1", egress.ReasonReserved},
	{"fec0::1", egress.ReasonReserved}, // deprecated site-local
	{"5f00::1", egress.ReasonReserved}, // SRv6 SIDs
	{"4000::1", egress.ReasonReserved},
	{"fe00::1", egress.ReasonReserved},
}

// The IPv6 forms that carry an IPv4 address.
func mapped(v4 netip.Addr) netip.Addr { return netip.AddrFrom16(v4.As16()) }

func nat64(v4 netip.Addr) netip.Addr {
	b := netip.MustParseAddr("64:ff9b::").As16()
	copy(b[12:], v4.AsSlice())
	return netip.AddrFrom16(b)
}

func sixToFour(v4 netip.Addr) netip.Addr {
	b := netip.MustParseAddr("2002::1").As16()
	copy(b[2:6], v4.AsSlice())
	return netip.AddrFrom16(b)
}

func reasonOf(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	be, ok := egress.IsBlocked(err)
	if !ok {
		t.Fatalf("error %v (%T) is not a *BlockedError", err, err)
	}
	return be.Reason
}

func TestCheckAlwaysRefused(t *testing.T) {
	policies := map[string]egress.Policy{
		"default": defaultPolicy, "loopback": loopbackPolicy, "private": privatePolicy, "open": openPolicy,
	}
	type tc struct {
		addr   netip.Addr
		reason string
	}
	var cases []tc
	for _, c := range alwaysV4 {
		a := netip.MustParseAddr(c.addr)
		cases = append(cases, tc{a, c.reason}, tc{mapped(a), c.reason}, tc{nat64(a), c.reason}, tc{sixToFour(a), c.reason})
	}
	for _, c := range alwaysV6 {
		cases = append(cases, tc{netip.MustParseAddr(c.addr), c.reason})
	}
	for name, p := range policies {
		for _, c := range cases {
			t.Run(name+"/"+c.addr.String(), func(t *testing.T) {
				if got := reasonOf(t, p.Check(c.addr)); got != c.reason {
					t.Errorf("Check(%s) reason = %q, want %q", c.addr, got, c.reason)
				}
			})
		}
	}
}

func TestCheckConfigurable(t *testing.T) {
	const (
		public   = "public"
		loopback = "loopback"
		private  = "private"
	)
	cases := []struct{ addr, class string }{
		{"127.0.0.1", loopback},
		{"127.255.255.254", loopback},
		{"::1", loopback},
		{"::ffff:127.0.0.1", loopback},
		{"64:ff9b::7f00:1", loopback}, // NAT64 of 127.0.0.1
		{"10.0.0.1", private},
		{"10.255.255.255", private},
		{"172.16.0.1", private},
		{"172.31.255.255", private},
		{"192.168.1.1", private},
		{"100.64.0.1", private},
		{"100.127.255.254", private},
		{"fc00::1", private},
		{"fd12:3456::1", private},
		{"fd00:ec2::253", private}, // AWS DNS resolver: a ULA, not metadata
		{"::ffff:10.1.2.3", private},
		{"64:ff9b::a00:1", private}, // NAT64 of 10.0.0.1
		{"2002:a00:1::1", private},  // 6to4 of 10.0.0.1
		{"8.8.8.8", public},
		{"1.1.1.1", public},
		{"172.32.0.1", public},
		{"100.128.0.1", public},
		{"169.253.255.255", public},
		{"168.63.129.17", public},
		{"11.0.0.1", public},
		{"2606:4700::1111", public},
		{"2001:4860:4860::8888", public},
		{"64:ff9b::808:808", public}, // NAT64 of 8.8.8.8
		{"2002:808:808::1", public},  // 6to4 of 8.8.8.8
		{"::ffff:8.8.8.8", public},
	}
	for _, c := range cases {
		a := netip.MustParseAddr(c.addr)
		want := map[string]map[string]string{
			public:   {"default": "", "loopback": "", "private": "", "open": ""},
			loopback: {"default": egress.ReasonLoopback, "loopback": "", "private": egress.ReasonLoopback, "open": ""},
			private:  {"default": egress.ReasonPrivate, "loopback": egress.ReasonPrivate, "private": "", "open": ""},
		}[c.class]
		for name, p := range map[string]egress.Policy{
			"default": defaultPolicy, "loopback": loopbackPolicy, "private": privatePolicy, "open": openPolicy,
		} {
			if got := reasonOf(t, p.Check(a)); got != want[name] {
				t.Errorf("%s policy: Check(%s) reason = %q, want %q", name, a, got, want[name])
			}
		}
	}
}

func TestCheckAllowDeny(t *testing.T) {
	pfx := netip.MustParsePrefix
	cases := []struct {
		name   string
		p      egress.Policy
		addr   string
		reason string
	}{
		{"allow opens a private prefix", egress.Policy{Allow: []netip.Prefix{pfx("10.1.0.0/16")}}, "10.1.2.3", ""},
		{"allow opens only its prefix", egress.Policy{Allow: []netip.Prefix{pfx("10.1.0.0/16")}}, "10.2.0.1", egress.ReasonPrivate},
		{"allow of private does not open loopback", egress.Policy{Allow: []netip.Prefix{pfx("10.1.0.0/16")}}, "127.0.0.1", egress.ReasonLoopback},
		{"allow opens loopback", egress.Policy{Allow: []netip.Prefix{pfx("127.0.0.0/8")}}, "127.0.0.5", ""},
		{"allow in IPv4-mapped form", egress.Policy{Allow: []netip.Prefix{pfx("::ffff:10.1.0.0/112")}}, "10.1.2.3", ""},
		{"allow applies to a mapped address", egress.Policy{Allow: []netip.Prefix{pfx("10.1.0.0/16")}}, "::ffff:10.1.2.3", ""},
		{"allow applies to the NAT64 embedded address", egress.Policy{Allow: []netip.Prefix{pfx("10.1.0.0/16")}}, "64:ff9b::a01:203", ""},
		{"allow opens a ULA prefix", egress.Policy{Allow: []netip.Prefix{pfx("fd12::/16")}}, "fd12::1", ""},
		{"allow does not reopen link-local", egress.Policy{Allow: []netip.Prefix{pfx("169.254.0.0/16")}}, "169.254.1.1", egress.ReasonLinkLocal},
		{"allow does not reopen metadata", egress.Policy{Allow: []netip.Prefix{pfx("169.254.169.254/32")}}, "169.254.169.254", egress.ReasonMetadata},
		{"allow does not reopen ULA metadata", egress.Policy{AllowPrivate: true, Allow: []netip.Prefix{pfx("fd00:ec2::/32")}}, "fd00:ec2::254", egress.ReasonMetadata},
		{"allow does not reopen CGNAT metadata", egress.Policy{AllowPrivate: true, Allow: []netip.Prefix{pfx("100.64.0.0/10")}}, "100.100.100.200", egress.ReasonMetadata},
		{"allow does not reopen reserved", egress.Policy{Allow: []netip.Prefix{pfx("240.0.0.0/4")}}, "240.1.2.3", egress.ReasonReserved},
		{"allow does not reopen teredo", egress.Policy{Allow: []netip.Prefix{pfx("2001::/32")}}, "2001::1", egress.ReasonTeredo},
		{"deny refuses a public address", egress.Policy{Deny: []netip.Prefix{pfx("8.8.8.0/24")}}, "8.8.8.8", egress.ReasonDenied},
		{"deny refuses only its prefix", egress.Policy{Deny: []netip.Prefix{pfx("8.8.8.0/24")}}, "8.8.4.4", ""},
		{"deny wins over the loopback flag", egress.Policy{AllowLoopback: true, Deny: []netip.Prefix{pfx("127.0.0.2/32")}}, "127.0.0.2", egress.ReasonDenied},
		{"deny leaves the rest of loopback", egress.Policy{AllowLoopback: true, Deny: []netip.Prefix{pfx("127.0.0.2/32")}}, "127.0.0.1", ""},
		{"deny wins over allow", egress.Policy{Allow: []netip.Prefix{pfx("10.0.0.0/8")}, Deny: []netip.Prefix{pfx("10.9.0.0/16")}}, "10.9.0.1", egress.ReasonDenied},
		{"deny reaches a mapped address", egress.Policy{Deny: []netip.Prefix{pfx("8.8.8.8/32")}}, "::ffff:8.8.8.8", egress.ReasonDenied},
		{"deny reaches a NAT64 address", egress.Policy{Deny: []netip.Prefix{pfx("8.8.8.8/32")}}, "64:ff9b::808:808", egress.ReasonDenied},
		{"deny reaches a 6to4 address", egress.Policy{Deny: []netip.Prefix{pfx("8.8.8.8/32")}}, "2002:808:808::1", egress.ReasonDenied},
		{"deny in IPv4-mapped form", egress.Policy{Deny: []netip.Prefix{pfx("::ffff:8.8.8.0/120")}}, "8.8.8.8", egress.ReasonDenied},
		{"deny an IPv6 prefix", egress.Policy{Deny: []netip.Prefix{pfx("2606:4700::/32")}}, "2606:4700::1111", egress.ReasonDenied},
		{"deny the NAT64 prefix itself", egress.Policy{Deny: []netip.Prefix{pfx("64:ff9b::/96")}}, "64:ff9b::808:808", egress.ReasonDenied},
		{"always-refused reason comes before deny", egress.Policy{Deny: []netip.Prefix{pfx("169.254.0.0/16")}}, "169.254.169.254", egress.ReasonMetadata},
		{"a zero prefix matches nothing", egress.Policy{Allow: []netip.Prefix{{}}, Deny: []netip.Prefix{{}}}, "10.0.0.1", egress.ReasonPrivate},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := reasonOf(t, c.p.Check(netip.MustParseAddr(c.addr))); got != c.reason {
				t.Errorf("Check(%s) reason = %q, want %q", c.addr, got, c.reason)
			}
		})
	}
}

func TestCheckInvalidAndZones(t *testing.T) {
	if got := reasonOf(t, defaultPolicy.Check(netip.Addr{})); got != egress.ReasonInvalid {
		t.Errorf("zero Addr: reason %q, want %q", got, egress.ReasonInvalid)
	}
	// A zone must not make an address slip past a prefix (netip.Prefix never matches a zoned
	// address).
	p := egress.Policy{AllowPrivate: true, Deny: []netip.Prefix{netip.MustParsePrefix("fd12::/16")}}
	if got := reasonOf(t, p.Check(netip.MustParseAddr("fd12::1%eth0"))); got != egress.ReasonDenied {
		t.Errorf("zoned denied address: reason %q, want %q", got, egress.ReasonDenied)
	}
	if got := reasonOf(t, defaultPolicy.Check(netip.MustParseAddr("fd12::1%eth0"))); got != egress.ReasonPrivate {
		t.Errorf("zoned ULA: reason %q, want %q", got, egress.ReasonPrivate)
	}
	err := defaultPolicy.Check(netip.MustParseAddr("::ffff:169.254.169.254"))
	be, _ := egress.IsBlocked(err)
	if be == nil || be.Addr != netip.MustParseAddr("169.254.169.254") {
		t.Errorf("mapped metadata: %v, want the unmapped address in Addr", err)
	}
}

func TestBlockedErrorAndIsBlocked(t *testing.T) {
	err := defaultPolicy.Check(netip.MustParseAddr("169.254.169.254"))
	if got, want := err.Error(), "egress to 169.254.169.254 refused: cloud metadata"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	err6 := defaultPolicy.Check(netip.MustParseAddr("::1"))
	if got, want := err6.Error(), "egress to ::1 refused: loopback not allowed"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	wrapped := &url.Error{Op: "Get", URL: "http://x/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("check: %w", err)}}
	be, ok := egress.IsBlocked(wrapped)
	if !ok || be.Reason != egress.ReasonMetadata {
		t.Errorf("IsBlocked(wrapped) = %v, %v", be, ok)
	}
	for _, e := range []error{nil, errors.New("connection refused"), &net.OpError{Op: "dial", Err: errors.New("x")}} {
		if be, ok := egress.IsBlocked(e); ok || be != nil {
			t.Errorf("IsBlocked(%v) = %v, %v; want nil, false", e, be, ok)
		}
	}
}
