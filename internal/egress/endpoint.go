package egress

import (
	"errors"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// ValidateEndpoint parses an agent endpoint URL and refuses what can never be dialled safely: a
// scheme other than http or https, a relative or opaque URL, user information (credentials in a
// URL end up in logs, and the kernel authenticates to agents its own way), an empty host, a bad
// port, a host that is neither a DNS name nor an IP literal (numeric forms such as 2130706433 or
// 0x7f.1 that some resolvers read as IPv4 addresses), and an IP literal p.Check refuses (the
// error is then a *BlockedError with Host set).
//
// A host name is not resolved here: what it resolves to now says nothing about what it will
// resolve to when the kernel dials it, so names are checked at dial time only (Dialer). The
// errors are short reasons meant for errs.Field("body.endpoint", err.Error()).
func (p Policy) ValidateEndpoint(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("required")
	}
	if strings.IndexFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return nil, errors.New("must not contain white space or control characters")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, errors.New("must be an absolute http or https URL")
	}
	switch {
	case u.Opaque != "":
		return nil, errors.New("must be an absolute http or https URL with a host")
	case u.User != nil:
		return nil, errors.New("must not contain user info")
	case u.Hostname() == "":
		return nil, errors.New("must name a host")
	case strings.HasSuffix(u.Host, ":"):
		return nil, errors.New("must not end the host with an empty port")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, errors.New("port must be between 1 and 65535")
		}
	}
	host := u.Hostname()
	if addr, err := netip.ParseAddr(host); err == nil {
		if err := p.Check(addr); err != nil {
			be, _ := IsBlocked(err)
			be.Host = host
			return nil, be
		}
		return u, nil
	}
	if !isDNSName(host) {
		return nil, errors.New("host must be a DNS name (internationalised names in punycode) or an IP address")
	}
	return u, nil
}

// isDNSName reports whether host is made of DNS labels (letters, digits, '-', '_'; one trailing
// dot allowed) and is not numeric: no top-level domain is all digits, and a last label of digits
// or 0x-hex is what inet_aton-style parsers read as an IPv4 address (127.1, 0x7f.1, 2130706433),
// so such a host would be an IP address in disguise.
func isDNSName(host string) bool {
	host = strings.TrimSuffix(host, ".")
	if host == "" || len(host) > 253 {
		return false
	}
	labels := strings.Split(host, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	last := strings.ToLower(labels[len(labels)-1])
	if strings.HasPrefix(last, "0x") {
		return false
	}
	return strings.IndexFunc(last, func(r rune) bool { return r < '0' || r > '9' }) >= 0
}

// AddressOnly judges agent endpoints with the address policy p alone, for every tenant alike
// (no allow-list rules): what a registry without the kernel's gate uses.
func AddressOnly(p Policy) interface {
	ValidateEndpoint(tenantID, raw string) (*url.URL, error)
} {
	return addressOnly{p.clone()}
}

type addressOnly struct{ p Policy }

func (a addressOnly) ValidateEndpoint(_ string, raw string) (*url.URL, error) {
	return a.p.ValidateEndpoint(raw)
}
