package egress_test

import (
	"testing"

	"github.com/nops-kernel/nops/internal/egress"
)

func TestValidateEndpoint(t *testing.T) {
	cases := []struct {
		raw     string
		p       egress.Policy
		wantErr string // the error text; "" means accepted
	}{
		{raw: "https://agent.example.com/v1/invoke"},
		{raw: "http://agent.example.com:8080"},
		{raw: "https://agent.example.com./"},
		{raw: "http://agent_1.internal.example/"},
		{raw: "https://xn--bcher-kva.example/"},
		{raw: "HTTPS://Agent.Example.com/"},
		{raw: "http://8.8.8.8/"},
		{raw: "http://[2606:4700::1111]:443/"},
		// Names are not resolved: these would fail or be refused at dial time, not here.
		{raw: "http://localhost:8080/"},
		{raw: "http://does-not-exist.invalid/"},

		{raw: "http://127.0.0.1:8080/", wantErr: "egress to 127.0.0.1 refused: loopback not allowed"},
		{raw: "http://127.0.0.1:8080/", p: loopbackPolicy},
		{raw: "http://[::1]:8080/", wantErr: "egress to ::1 refused: loopback not allowed"},
		{raw: "http://10.0.0.5:8080/", wantErr: "egress to 10.0.0.5 refused: private not allowed"},
		{raw: "http://10.0.0.5:8080/", p: privatePolicy},
		{raw: "http://169.254.169.254/latest/meta-data/", p: openPolicy, wantErr: "egress to 169.254.169.254 refused: cloud metadata"},
		{raw: "http://[::ffff:169.254.169.254]/", p: openPolicy, wantErr: "egress to 169.254.169.254 refused: cloud metadata"},
		{raw: "http://[fd00:ec2::254]/", p: openPolicy, wantErr: "egress to fd00:ec2::254 refused: cloud metadata"},
		{raw: "http://[fe80::1%25eth0]:80/", p: openPolicy, wantErr: "egress to fe80::1 refused: link-local"},
		{raw: "http://0.0.0.0:8080/", p: openPolicy, wantErr: "egress to 0.0.0.0 refused: unspecified"},
		{raw: "http://[64:ff9b::a9fe:a9fe]/", p: openPolicy, wantErr: "egress to 64:ff9b::a9fe:a9fe refused: cloud metadata"},

		{raw: "", wantErr: "required"},
		{raw: " http://x.example/", wantErr: "must not contain white space or control characters"},
		{raw: "http://x.example/\n", wantErr: "must not contain white space or control characters"},
		{raw: "ftp://x.example/", wantErr: "must be an absolute http or https URL"},
		{raw: "file:///etc/passwd", wantErr: "must be an absolute http or https URL"},
		{raw: "gopher://127.0.0.1:6379/_INFO", wantErr: "must be an absolute http or https URL"},
		{raw: "//x.example/", wantErr: "must be an absolute http or https URL"},
		{raw: "/relative", wantErr: "must be an absolute http or https URL"},
		{raw: "http://%zz/", wantErr: "must be an absolute http or https URL"},
		{raw: "http:x.example", wantErr: "must be an absolute http or https URL with a host"},
		{raw: "http://user:pw@x.example/", wantErr: "must not contain user info"},
		{raw: "http://user@x.example/", wantErr: "must not contain user info"},
		{raw: "http:///path", wantErr: "must name a host"},
		{raw: "http://:8080/", wantErr: "must name a host"},
		{raw: "http://x.example:/", wantErr: "must not end the host with an empty port"},
		{raw: "http://x.example:0/", wantErr: "port must be between 1 and 65535"},
		{raw: "http://x.example:65536/", wantErr: "port must be between 1 and 65535"},
		{raw: "http://2130706433/", wantErr: "host must be a DNS name (internationalised names in punycode) or an IP address"},
		{raw: "http://0x7f.1/", wantErr: "host must be a DNS name (internationalised names in punycode) or an IP address"},
		{raw: "http://127.1/", wantErr: "host must be a DNS name (internationalised names in punycode) or an IP address"},
		{raw: "http://169.254.169.254./", wantErr: "host must be a DNS name (internationalised names in punycode) or an IP address"},
		{raw: "http://example.0xa9fea9fe/", wantErr: "host must be a DNS name (internationalised names in punycode) or an IP address"},
		{raw: "http://bücher.example/", wantErr: "host must be a DNS name (internationalised names in punycode) or an IP address"},
		{raw: "http://a..example/", wantErr: "host must be a DNS name (internationalised names in punycode) or an IP address"},
	}
	for _, c := range cases {
		t.Run(c.raw, func(t *testing.T) {
			u, err := c.p.ValidateEndpoint(c.raw)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("ValidateEndpoint(%q) = %v, want accepted", c.raw, err)
			case c.wantErr == "":
				if u == nil || u.Hostname() == "" {
					t.Fatalf("ValidateEndpoint(%q) returned URL %v", c.raw, u)
				}
			case err == nil:
				t.Fatalf("ValidateEndpoint(%q) accepted, want %q", c.raw, c.wantErr)
			case err.Error() != c.wantErr:
				t.Fatalf("ValidateEndpoint(%q) = %q, want %q", c.raw, err, c.wantErr)
			}
			if be, ok := egress.IsBlocked(err); ok && be.Host == "" {
				t.Errorf("BlockedError without Host: %+v", be)
			}
		})
	}
}
