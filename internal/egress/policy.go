package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Reasons a destination is refused; BlockedError.Reason is one of these. They are stable: logs,
// audit records, metrics labels and clients may rely on them.
const (
	ReasonInvalid     = "invalid address"
	ReasonUnspecified = "unspecified"
	ReasonLinkLocal   = "link-local"
	ReasonMetadata    = "cloud metadata"
	ReasonMulticast   = "multicast"
	ReasonBroadcast   = "broadcast"
	ReasonReserved    = "reserved"
	ReasonTeredo      = "teredo"
	ReasonDenied      = "denied by egress.deny"
	ReasonLoopback    = "loopback not allowed"
	ReasonPrivate     = "private not allowed"
)

// Policy is the address layer of the egress gate: which destination addresses may be dialled at
// all. The zero value refuses the always-refused ranges, loopback and private addresses and
// lets public addresses through to the second layer, the allow-list's Rules (rules.go), which
// decide by class, prefix, name and port — deny by default. A Policy is a value: the kernel
// builds it from configuration once and never mutates it, so it is safe for concurrent use.
type Policy struct {
	// AllowLoopback opens 127.0.0.0/8 and ::1. The embedded dev setup (make run) turns it on so
	// agents on the same machine can be called; production leaves it off.
	AllowLoopback bool
	// AllowPrivate opens RFC 1918 (10/8, 172.16/12, 192.168/16), ULA (fc00::/7) and CGNAT
	// (100.64.0.0/10). The metadata addresses inside them stay refused.
	AllowPrivate bool
	// Allow opens loopback or private addresses inside these prefixes when the flags above are
	// off. It is an exception to those two refusals only: it never opens an always-refused
	// address, and a public address needs no Allow entry.
	Allow []netip.Prefix
	// Deny refuses these prefixes in addition to the built-in list, whatever Allow and the flags
	// say.
	Deny []netip.Prefix
}

// BlockedError is the refusal of one destination address.
type BlockedError struct {
	Addr    netip.Addr // the refused address, IPv4-mapped addresses unmapped, zone removed
	Host    string     // the host name or literal being dialled, when known
	Port    uint16     // the port being dialled, when known (Rules refusals)
	Class   Class      // the address's class, for Rules refusals (ReasonClass, ReasonNotListed)
	Reason  string     // one of the Reason constants
	Service string     // the gated service whose connection was refused, when dialled through a gate
	Tenant  string     // the tenant the connection was for, when known
}

// Error says which address was refused and why. The host name is left out: the address is what
// was refused, and the host is what the tenant registered (the caller may show both).
func (e *BlockedError) Error() string {
	switch e.Reason {
	case ReasonClass:
		return fmt.Sprintf("egress to %s refused: %s (%s address, the %s egress class is narrower)", e.Addr, e.Reason, e.Class, e.serviceName())
	case ReasonNotListed:
		return fmt.Sprintf("egress to %s port %d refused: %s of %s", e.Addr, e.Port, e.Reason, e.serviceName())
	}
	return fmt.Sprintf("egress to %s refused: %s", e.Addr, e.Reason)
}

func (e *BlockedError) serviceName() string {
	if e.Service == "" {
		return "the service"
	}
	return "service " + e.Service
}

// IsBlocked finds a *BlockedError in err's chain (through *url.Error and *net.OpError, which
// http.Client and net.Dialer wrap it in).
func IsBlocked(err error) (*BlockedError, bool) {
	var be *BlockedError
	if errors.As(err, &be) {
		return be, true
	}
	return nil, false
}

// Check returns nil when the policy lets the kernel dial ip, otherwise a *BlockedError. IPv4
// addresses written as IPv4-mapped IPv6 (::ffff:a.b.c.d) are checked as the IPv4 address they
// are; a zone (fe80::1%eth0) is ignored, because netip.Prefix never matches a zoned address and
// a zone must not be a way around a prefix.
//
// Order: the built-in always-refused list, then Deny, then the loopback and private refusals
// (which the flags or Allow open). For NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses the
// embedded IPv4 address is what the packets finally reach, so it is checked as well: refused if
// either the IPv6 address or the embedded IPv4 address is refused.
func (p Policy) Check(ip netip.Addr) error {
	if !ip.IsValid() {
		return &BlockedError{Reason: ReasonInvalid}
	}
	a := ip.WithZone("").Unmap()
	if r := alwaysRefused(a); r != "" {
		return &BlockedError{Addr: a, Reason: r}
	}
	target := a
	if v4, ok := embeddedIPv4(a); ok {
		target = v4
	}
	if containsAny(p.Deny, a) || containsAny(p.Deny, target) {
		return &BlockedError{Addr: a, Reason: ReasonDenied}
	}
	switch {
	case target.IsLoopback():
		if !p.AllowLoopback && !containsAny(p.Allow, a) && !containsAny(p.Allow, target) {
			return &BlockedError{Addr: a, Reason: ReasonLoopback}
		}
	case isPrivate(target):
		if !p.AllowPrivate && !containsAny(p.Allow, a) && !containsAny(p.Allow, target) {
			return &BlockedError{Addr: a, Reason: ReasonPrivate}
		}
	}
	return nil
}

// clone returns p with its own copies of the prefix lists, so a dialer built from p does not
// change when the caller later edits the slices it passed in.
func (p Policy) clone() Policy {
	p.Allow = slices.Clone(p.Allow)
	p.Deny = slices.Clone(p.Deny)
	return p
}

// metadataAddrs are the cloud instance-metadata and platform endpoints: they hand out
// credentials to whoever asks from inside the instance, which is what SSRF is after. Some sit in
// ranges the flags can open (ULA, CGNAT) or are public addresses, so they are listed one by one.
var metadataAddrs = map[netip.Addr]bool{
	netip.MustParseAddr("169.254.169.254"): true, // AWS, GCP, Azure IMDS, OpenStack, DigitalOcean, ...
	netip.MustParseAddr("169.254.170.2"):   true, // AWS ECS task credentials
	netip.MustParseAddr("169.254.170.23"):  true, // AWS EKS Pod Identity agent
	netip.MustParseAddr("fd00:ec2::254"):   true, // AWS IMDS over IPv6 (a ULA)
	netip.MustParseAddr("fd00:ec2::23"):    true, // AWS EKS Pod Identity agent over IPv6 (a ULA)
	netip.MustParseAddr("100.100.100.200"): true, // Alibaba Cloud metadata (in CGNAT space)
	netip.MustParseAddr("168.63.129.16"):   true, // Azure WireServer (a public address)
	netip.MustParseAddr("192.0.0.192"):     true, // Oracle Cloud metadata
}

type refusedPrefix struct {
	p      netip.Prefix
	reason string
}

// v4Refused is checked in order: the first match gives the reason, so the specific entries
// (broadcast) come before the ranges that contain them (240/4).
var v4Refused = []refusedPrefix{
	// Linux routes 0.0.0.0 (and the rest of 0/8 on some stacks) to the local host.
	{netip.MustParsePrefix("0.0.0.0/8"), ReasonUnspecified},
	{netip.MustParsePrefix("169.254.0.0/16"), ReasonLinkLocal},
	{netip.MustParsePrefix("224.0.0.0/4"), ReasonMulticast},
	{netip.MustParsePrefix("255.255.255.255/32"), ReasonBroadcast},
	// Special-purpose ranges (RFC 6890 registry) that are never a real agent's address. Networks
	// that reuse them internally (fake-IP DNS proxies in 198.18/15, clouds in 240/4) make them a
	// way to reach local services, not a reason to open them.
	{netip.MustParsePrefix("240.0.0.0/4"), ReasonReserved},     // future use (RFC 1112)
	{netip.MustParsePrefix("192.0.0.0/24"), ReasonReserved},    // IETF protocol assignments
	{netip.MustParsePrefix("192.0.2.0/24"), ReasonReserved},    // documentation TEST-NET-1
	{netip.MustParsePrefix("198.51.100.0/24"), ReasonReserved}, // documentation TEST-NET-2
	{netip.MustParsePrefix("203.0.113.0/24"), ReasonReserved},  // documentation TEST-NET-3
	{netip.MustParsePrefix("198.18.0.0/15"), ReasonReserved},   // benchmarking (RFC 2544)
	{netip.MustParsePrefix("192.88.99.0/24"), ReasonReserved},  // deprecated 6to4 relay anycast
}

// v6Refused is checked in order after the IPv4-embedding forms have been handled.
var v6Refused = []refusedPrefix{
	{netip.MustParsePrefix("::/128"), ReasonUnspecified},
	{netip.MustParsePrefix("fe80::/10"), ReasonLinkLocal},
	{netip.MustParsePrefix("ff00::/8"), ReasonMulticast},
	// Teredo tunnels to an IPv4 address obfuscated in the low bits through a relay; nothing an
	// agent needs, and checking the obfuscated address would trust the relay.
	{netip.MustParsePrefix("2001::/32"), ReasonTeredo},
	{netip.MustParsePrefix("2001:2::/48"), ReasonReserved},   // benchmarking
	{netip.MustParsePrefix("2001:10::/28"), ReasonReserved},  // ORCHID (deprecated)
	{netip.MustParsePrefix("2001:20::/28"), ReasonReserved},  // ORCHIDv2
	{netip.MustParsePrefix("2001:db8::/32"), ReasonReserved}, // documentation
	{netip.MustParsePrefix("3fff::/20"), ReasonReserved},     // documentation (RFC 9637)
}

var (
	loopback6   = netip.MustParseAddr("::1")
	globalV6    = netip.MustParsePrefix("2000::/3") // all IPv6 global unicast IANA allocates
	ulaV6       = netip.MustParsePrefix("fc00::/7")
	cgnatV4     = netip.MustParsePrefix("100.64.0.0/10")
	nat64V6     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFourV6 = netip.MustParsePrefix("2002::/16")
)

// alwaysRefused returns the reason a is refused whatever the configuration, or "". a is
// unmapped and has no zone.
func alwaysRefused(a netip.Addr) string {
	if metadataAddrs[a] {
		return ReasonMetadata
	}
	if a.Is4() {
		for _, r := range v4Refused {
			if r.p.Contains(a) {
				return r.reason
			}
		}
		return ""
	}
	if v4, ok := embeddedIPv4(a); ok {
		return alwaysRefused(v4)
	}
	for _, r := range v6Refused {
		if r.p.Contains(a) {
			return r.reason
		}
	}
	if a == loopback6 || ulaV6.Contains(a) || globalV6.Contains(a) {
		return ""
	}
	// Everything else is unallocated or special: the rest of ::/8 (IPv4-compatible addresses,
	// SIIT), 100::/64 (discard), 64:ff9b:1::/48 (local-use NAT64, where the IPv4 address sits at
	// a position only the local network knows), fec0::/10 (deprecated site-local), 5f00::/16
	// (SRv6 SIDs).
	return ReasonReserved
}

// embeddedIPv4 returns the IPv4 address a NAT64 (RFC 6052 well-known prefix, last 32 bits) or
// 6to4 (RFC 3056, bits 16-47) address carries.
func embeddedIPv4(a netip.Addr) (netip.Addr, bool) {
	if !a.Is6() {
		return netip.Addr{}, false
	}
	b := a.As16()
	switch {
	case nat64V6.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFourV6.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// isPrivate reports the ranges AllowPrivate opens.
func isPrivate(a netip.Addr) bool {
	return a.IsPrivate() || cgnatV4.Contains(a)
}

// containsAny reports whether a prefix of ps contains a. A prefix written in IPv4-mapped form
// (::ffff:10.0.0.0/104) is read as the IPv4 prefix it means, since addresses are unmapped before
// they are compared.
func containsAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if pa := p.Addr(); pa.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(pa.Unmap(), p.Bits()-96)
		}
		if p.Contains(a) {
			return true
		}
	}
	return false
}
