package egress

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Class is the egress taxonomy's class of a destination, from D0 (nothing) to D4 (the public
// internet). A service's Rules carry the widest class it may reach; each destination address
// falls in one class: D1 loopback, D2 private network, D3 a public address the allow-list names,
// D4 any other public address.
type Class uint8

// The classes, narrowest first.
const (
	D0 Class = iota // none: the service makes no outbound connection
	D1              // this host: loopback addresses
	D2              // the private network: RFC 1918, fc00::/7, 100.64.0.0/10
	D3              // named partners: public destinations listed on the allow-list
	D4              // the public internet: any public address
)

// String returns "D0" … "D4".
func (c Class) String() string {
	if c > D4 {
		return "D?" + strconv.Itoa(int(c))
	}
	return "D" + strconv.Itoa(int(c))
}

// ParseClass reads "D0" … "D4" (case-insensitive).
func ParseClass(s string) (Class, error) {
	if len(s) == 2 && (s[0] == 'D' || s[0] == 'd') && s[1] >= '0' && s[1] <= '4' {
		return Class(s[1] - '0'), nil
	}
	return 0, fmt.Errorf("must be one of D0, D1, D2, D3, D4, got %q", s)
}

// Services whose outbound connections go through the egress gate. Each has its own Rules.
const (
	ServiceAgents = "agents" // calls to the endpoints tenants registered for their agents
	ServiceOTLP   = "otlp"   // the OpenTelemetry trace exporter
)

// Services lists the services the gate knows, for validation and documentation.
var Services = []string{ServiceAgents, ServiceOTLP}

// Action is what the kernel does when a service's connection is refused by its Rules, besides
// refusing, auditing and counting it.
type Action string

// The rollback actions.
const (
	ActionNone       Action = "none"             // refuse, audit, count
	ActionDeregister Action = "deregister_agent" // also deregister the agent whose endpoint was refused (agents only)
)

// Reasons an address is refused by Rules (BlockedError.Reason), beside the Policy's reasons.
const (
	ReasonClass     = "class not allowed"     // the address's class is wider than the service's
	ReasonNotListed = "not on the allow-list" // the class is allowed but no entry names the destination
)

// PortRange is an inclusive range of TCP ports.
type PortRange struct{ From, To uint16 }

// Destination is one allow-list entry: an address prefix, or a host name (exact, or "*.suffix"
// for any name under suffix) whose resolved addresses must be of Class. Ports empty means any.
type Destination struct {
	Prefix netip.Prefix // set for an address entry
	Host   string       // set for a name entry: lower case, no trailing dot
	Class  Class        // a name entry's class (D1–D3): what its addresses may be
	Ports  []PortRange
}

// Rules is the egress policy of one service, for one tenant or as the default of every tenant:
// the widest class it may reach and the destinations it may reach below D4. A Rules value is
// never changed once the gate holds it; transports use its address as the identity of a
// connection pool.
type Rules struct {
	Class  Class
	Allow  []Destination
	Action Action // ActionNone when empty
}

// DenyAll is the rules of a service nothing names: deny by default.
var DenyAll = &Rules{Class: D0}

// classOf returns the class of an address that passed Policy.Check (unmapped, no zone). NAT64
// and 6to4 addresses are judged by the IPv4 address they carry.
func classOf(a netip.Addr) Class {
	if v4, ok := embeddedIPv4(a); ok {
		a = v4
	}
	switch {
	case a.IsLoopback():
		return D1
	case isPrivate(a):
		return D2
	}
	return D3
}

// Check returns nil when r lets the service connect to ip on port, having dialled host (the
// name or IP literal of the URL; "" when unknown), else a *BlockedError with ReasonClass or
// ReasonNotListed. ip must already have passed Policy.Check.
func (r *Rules) Check(host string, ip netip.Addr, port uint16) error {
	a := ip.WithZone("").Unmap()
	c := classOf(a)
	switch {
	case c > r.Class:
		return &BlockedError{Addr: a, Port: port, Class: c, Reason: ReasonClass}
	case c == D3 && r.Class == D4:
		return nil
	case r.listed(normalHost(host), a, c, port):
		return nil
	}
	return &BlockedError{Addr: a, Port: port, Class: c, Reason: ReasonNotListed}
}

// listed reports whether an entry of r names the destination.
func (r *Rules) listed(host string, a netip.Addr, c Class, port uint16) bool {
	for _, d := range r.Allow {
		if !portAllowed(d.Ports, port) {
			continue
		}
		if d.Prefix.IsValid() {
			if containsAny([]netip.Prefix{d.Prefix}, a) {
				return true
			}
			continue
		}
		if d.Class == c && hostMatches(d.Host, host) {
			return true
		}
	}
	return false
}

// MayReachName reports whether some address host could resolve to might be allowed on port:
// false when r is D0, or when no prefix entry exists, the class is below D4 and no name entry
// matches host and port. Registration uses it to refuse an endpoint that can never be called.
func (r *Rules) MayReachName(host string, port uint16) bool {
	if r.Class == D0 {
		return false
	}
	if r.Class == D4 {
		return true
	}
	host = normalHost(host)
	for _, d := range r.Allow {
		if !portAllowed(d.Ports, port) {
			continue
		}
		if d.Prefix.IsValid() || hostMatches(d.Host, host) {
			return true
		}
	}
	return false
}

func portAllowed(ps []PortRange, port uint16) bool {
	if len(ps) == 0 {
		return true
	}
	for _, p := range ps {
		if port >= p.From && port <= p.To {
			return true
		}
	}
	return false
}

// hostMatches reports whether name matches pattern: equal, or pattern "*.suffix" and name ends
// in ".suffix" with at least one label before it. An IP literal matches no pattern.
func hostMatches(pattern, name string) bool {
	if name == "" || pattern == "" {
		return false
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return false
	}
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return len(name) > len(suffix) && strings.HasSuffix(name, suffix)
	}
	return name == pattern
}

// normalHost lower-cases a host name and drops a trailing dot and IPv6 brackets.
func normalHost(h string) string {
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
}

// FlagRules is the unsigned allow-list the egress.* configuration flags describe, for a kernel
// without a signed allow-list: the Policy's loopback and private openings decide those
// addresses, so every loopback and private address is listed here, and public addresses are D4
// when public is true and refused otherwise.
func FlagRules(public bool, action Action) *Rules {
	r := &Rules{Class: D2, Action: action, Allow: []Destination{
		{Prefix: netip.MustParsePrefix("127.0.0.0/8")}, {Prefix: netip.MustParsePrefix("::1/128")},
		{Prefix: netip.MustParsePrefix("10.0.0.0/8")}, {Prefix: netip.MustParsePrefix("172.16.0.0/12")},
		{Prefix: netip.MustParsePrefix("192.168.0.0/16")}, {Prefix: netip.MustParsePrefix("fc00::/7")},
		{Prefix: cgnatV4},
	}}
	if public {
		r.Class = D4
	}
	return r
}
