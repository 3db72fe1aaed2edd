package egress_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/egress"
)

// mustList parses an allow-list text or fails the test.
func mustList(t testing.TB, text string) *egress.AllowList {
	t.Helper()
	l, err := egress.ParseAllowList([]byte(text))
	if err != nil {
		t.Fatalf("ParseAllowList: %v", err)
	}
	return l
}

const contractList = `serial: 4
services:
  agents:
    class: D2
    allow:
      - cidr: 10.20.0.0/16
        ports: [8080, "9000-9100"]
      - cidr: 127.0.0.1/32
        ports: [7000]
      - host: "*.agents.internal"
        class: D2
  otlp:
    class: D1
    allow:
      - cidr: ::1/128
tenants:
  t-wide:
    agents:
      class: D4
      allow:
        - cidr: 127.0.0.0/8
  t-none:
    agents:
      class: D0
`

// TestRulesContract is the contract of the gate's rules: which (service, tenant, host, address,
// port) it lets through and with which reason it refuses the rest. Deny by default: a service
// or class nothing names refuses everything.
func TestRulesContract(t *testing.T) {
	l := mustList(t, contractList)
	cases := []struct {
		name            string
		service, tenant string
		host, addr      string
		port            uint16
		want            string // "" allowed, else the reason
	}{
		{"listed private prefix and port", "agents", "t1", "10.20.1.2", "10.20.1.2", 8080, ""},
		{"listed port range", "agents", "t1", "10.20.1.2", "10.20.1.2", 9050, ""},
		{"listed prefix, other port", "agents", "t1", "10.20.1.2", "10.20.1.2", 8081, egress.ReasonNotListed},
		{"private address outside the prefix", "agents", "t1", "10.21.0.1", "10.21.0.1", 8080, egress.ReasonNotListed},
		{"listed loopback port", "agents", "t1", "127.0.0.1", "127.0.0.1", 7000, ""},
		{"loopback, other port", "agents", "t1", "127.0.0.1", "127.0.0.1", 7001, egress.ReasonNotListed},
		{"name entry of class D2 resolving privately", "agents", "t1", "a.agents.internal", "10.99.0.1", 443, ""},
		{"name entry matches deeper names", "agents", "t1", "x.y.agents.internal", "172.16.0.9", 443, ""},
		{"name entry does not match the bare suffix", "agents", "t1", "agents.internal", "10.99.0.1", 443, egress.ReasonNotListed},
		{"name entry of class D2 does not open loopback", "agents", "t1", "a.agents.internal", "127.0.0.1", 443, egress.ReasonNotListed},
		{"public address above class D2", "agents", "t1", "partner.example.com", "93.184.216.34", 443, egress.ReasonClass},
		{"public address, no name", "agents", "t1", "", "8.8.8.8", 443, egress.ReasonClass},
		{"a tenant's own rules replace the default: D4 public", "agents", "t-wide", "", "8.8.8.8", 443, ""},
		{"D4 does not open private ranges", "agents", "t-wide", "10.20.1.2", "10.20.1.2", 8080, egress.ReasonNotListed},
		{"D4 tenant's listed loopback", "agents", "t-wide", "localhost", "127.0.0.5", 1, ""},
		{"D0 tenant refuses everything", "agents", "t-none", "127.0.0.1", "127.0.0.1", 7000, egress.ReasonClass},
		{"otlp D1 listed", "otlp", "", "localhost", "::1", 4318, ""},
		{"otlp D1 refuses private", "otlp", "", "collector", "10.20.1.2", 4318, egress.ReasonClass},
		{"unlisted service denied by default", "federation", "", "peer", "10.20.1.2", 8080, egress.ReasonClass},
		{"IPv4-mapped address is its IPv4 address", "agents", "t1", "", "::ffff:10.20.1.2", 8080, ""},
		{"NAT64 address judged by its IPv4 address", "agents", "t-wide", "", "64:ff9b::808:808", 443, ""},
		{"NAT64 of a private address", "agents", "t-wide", "", "64:ff9b::a14:102", 8080, egress.ReasonNotListed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := l.Rules(c.service, c.tenant).Check(c.host, netip.MustParseAddr(c.addr), c.port)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var be *egress.BlockedError
			if !errors.As(err, &be) || be.Reason != c.want {
				t.Fatalf("got %v, want reason %q", err, c.want)
			}
		})
	}
}

func TestMayReachName(t *testing.T) {
	l := mustList(t, contractList)
	cases := []struct {
		tenant, host string
		port         uint16
		want         bool
	}{
		{"t1", "a.agents.internal", 443, true},
		{"t1", "unknown.example.org", 8080, true}, // a prefix entry: the name may resolve into it
		{"t1", "unknown.example.org", 443, false}, // no entry for that port
		{"t-none", "a.agents.internal", 443, false},
		{"t-wide", "anything.example.org", 443, true},
	}
	for _, c := range cases {
		if got := l.Rules("agents", c.tenant).MayReachName(c.host, c.port); got != c.want {
			t.Errorf("MayReachName(%s, %s, %d) = %v, want %v", c.tenant, c.host, c.port, got, c.want)
		}
	}
	names := mustList(t, "serial: 1\nservices:\n  agents:\n    class: D3\n    allow:\n      - host: partner.example.com\n        ports: [443]\n")
	r := names.Rules("agents", "t")
	if !r.MayReachName("Partner.Example.com.", 443) || r.MayReachName("partner.example.com", 80) || r.MayReachName("other.example.com", 443) {
		t.Fatal("name-only rules: MayReachName must follow the names and ports listed")
	}
}

// TestParseAllowListRefusals: every malformed list is refused with an error naming the field.
func TestParseAllowListRefusals(t *testing.T) {
	cases := []struct{ text, field string }{
		{"services: {}\n", "serial"},
		{"serial: 1\nservices:\n  agents:\n    allow: []\n", "services.agents.class"},
		{"serial: 1\nservices:\n  agents:\n    class: D5\n", "services.agents.class"},
		{"serial: 1\nservices:\n  mail:\n    class: D1\n", "unknown service"},
		{"serial: 1\nservices:\n  agents:\n    class: D2\n    allow:\n      - cidr: 10.0.0.0/33\n", "services.agents.allow[0].cidr"},
		{"serial: 1\nservices:\n  agents:\n    class: D2\n    allow:\n      - cidr: 10.0.0.0/8\n        host: a.b\n", "not both"},
		{"serial: 1\nservices:\n  agents:\n    class: D2\n    allow:\n      - {}\n", "cidr or host required"},
		{"serial: 1\nservices:\n  agents:\n    class: D2\n    allow:\n      - host: 10.0.0.1\n", "services.agents.allow[0].host"},
		{"serial: 1\nservices:\n  agents:\n    class: D2\n    allow:\n      - host: bad_name.example\n", "services.agents.allow[0].host"},
		{"serial: 1\nservices:\n  agents:\n    class: D1\n    allow:\n      - host: a.example\n", "wider than the service's class D1"},
		{"serial: 1\nservices:\n  agents:\n    class: D4\n    allow:\n      - host: a.example\n        class: D4\n", "D1, D2 or D3"},
		{"serial: 1\nservices:\n  agents:\n    class: D2\n    allow:\n      - cidr: 10.0.0.0/8\n        ports: [0]\n", "ports[0]"},
		{"serial: 1\nservices:\n  agents:\n    class: D2\n    allow:\n      - cidr: 10.0.0.0/8\n        ports: [\"90-80\"]\n", "ports[0]"},
		{"serial: 1\nservices:\n  agents:\n    class: D2\n    allow:\n      - cidr: 10.0.0.0/8\n        ports: [70000]\n", "ports[0]"},
		{"serial: 1\nservices:\n  agents:\n    class: D2\n    on_violation: reboot\n", "on_violation"},
		{"serial: 1\nservices:\n  otlp:\n    class: D2\n    on_violation: deregister_agent\n", "agents service only"},
		{"serial: 1\nservices:\n  agents:\n    class: D2\n    colour: red\n", "colour"},
		{"serial: 1\ntenants:\n  t1:\n    agents:\n      class: X\n", "tenants.t1.agents.class"},
	}
	for _, c := range cases {
		_, err := egress.ParseAllowList([]byte(c.text))
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("ParseAllowList(%q) = %v, want an error naming %q", c.text, err, c.field)
		}
	}
}

func TestParseClass(t *testing.T) {
	for i, s := range []string{"D0", "d1", "D2", "D3", "D4"} {
		c, err := egress.ParseClass(s)
		if err != nil || c != egress.Class(i) || c.String() != strings.ToUpper(s) {
			t.Errorf("ParseClass(%q) = %v, %v", s, c, err)
		}
	}
	for _, s := range []string{"", "D", "D9", "E1", "D10"} {
		if _, err := egress.ParseClass(s); err == nil {
			t.Errorf("ParseClass(%q) accepted", s)
		}
	}
}

// TestFlagRules: without a signed list the flags decide loopback and private addresses (the
// Policy) and allow_public decides public ones.
func TestFlagRules(t *testing.T) {
	closed, open := egress.FlagRules(false, egress.ActionNone), egress.FlagRules(true, egress.ActionNone)
	for _, a := range []string{"127.0.0.1", "::1", "10.1.2.3", "172.20.0.1", "192.168.1.1", "fd12::1", "100.64.1.1"} {
		if err := closed.Check("", netip.MustParseAddr(a), 80); err != nil {
			t.Errorf("%s refused by the flag rules: %v", a, err)
		}
	}
	if err := closed.Check("", netip.MustParseAddr("8.8.8.8"), 443); err == nil {
		t.Error("public address allowed without allow_public")
	}
	if err := open.Check("", netip.MustParseAddr("8.8.8.8"), 443); err != nil {
		t.Errorf("public address refused with allow_public: %v", err)
	}
}

func TestEndpointRules(t *testing.T) {
	r := egress.EndpointRules("collector.local", 4318)
	if err := r.Check("collector.local", netip.MustParseAddr("10.1.1.1"), 4318); err != nil {
		t.Errorf("configured collector refused: %v", err)
	}
	if err := r.Check("other.local", netip.MustParseAddr("10.1.1.1"), 4318); err == nil {
		t.Error("another host allowed")
	}
	if err := r.Check("collector.local", netip.MustParseAddr("10.1.1.1"), 4317); err == nil {
		t.Error("another port allowed")
	}
	lit := egress.EndpointRules("127.0.0.1", 4318)
	if err := lit.Check("127.0.0.1", netip.MustParseAddr("127.0.0.1"), 4318); err != nil {
		t.Errorf("configured literal refused: %v", err)
	}
	if err := lit.Check("127.0.0.1", netip.MustParseAddr("127.0.0.2"), 4318); err == nil {
		t.Error("another address allowed")
	}
	for _, c := range []struct {
		in   string
		host string
		port uint16
	}{{"http://collector:4318", "collector", 4318}, {"https://c.example.com", "c.example.com", 443}, {"http://c", "c", 4318}, {"127.0.0.1:9999", "127.0.0.1", 9999}} {
		h, p, err := egress.EndpointHostPort(c.in)
		if err != nil || h != c.host || p != c.port {
			t.Errorf("EndpointHostPort(%q) = %q %d %v", c.in, h, p, err)
		}
	}
}
