package perimeter

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/etag"
)

// MaxGatewayOrigins bounds a tenant's origin allow-list.
const MaxGatewayOrigins = 256

// maxOriginLen bounds the text of one origin; the longest IPv6 prefix is 43 characters.
const maxOriginLen = 64

// ErrVersionConflict is wrapped by every error that means "the settings changed since the caller
// read them": a stale If-Match (inside an errs.PreconditionFailed) or a compare-and-set write
// that lost (stores return it inside an errs.Conflict).
var ErrVersionConflict = errors.New("perimeter settings version changed")

// Settings are a tenant's perimeter settings. The zero value (with TenantID set) is the default
// of a tenant that never set them.
type Settings struct {
	TenantID string
	// RequireSignatures makes every request of the tenant's principals carry a verified RFC 9421
	// signature (internal/reqsig).
	RequireSignatures bool
	// GatewayOrigins are the networks the tenant's agents may reach the Zero Agent Gateway from:
	// canonical, sorted, without duplicates; empty (the default) keeps the tenant off the gateway.
	GatewayOrigins []netip.Prefix
	// Version is 0 for the defaults, 1 after the first Put, +1 on every change.
	Version   int64
	UpdatedAt time.Time // UTC, microsecond precision; zero for the defaults
}

// ETag returns the strong entity tag of s's version, quoted as HTTP wants it. It derives from the
// tenant and the version only, so it is opaque and the same on every replica; the defaults
// (version 0) have one too, so a client can make the first write conditional.
func (s Settings) ETag() string {
	return etag.New("perimeter", s.TenantID, strconv.FormatInt(s.Version, 10))
}

// AllowsOrigin reports whether a gateway request from addr may pass the origin allow-list: when
// a prefix contains addr (an IPv4-mapped IPv6 address counts as IPv4). The gateway is opt-in, so
// an empty list allows no address, and neither does an invalid addr.
func (s Settings) AllowsOrigin(addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range s.GatewayOrigins {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// equal reports whether a and b hold the same settings, version and time aside.
func (s Settings) equal(o Settings) bool {
	return s.TenantID == o.TenantID && s.RequireSignatures == o.RequireSignatures && slices.Equal(s.GatewayOrigins, o.GatewayOrigins)
}

// Input is what a client puts: the whole settings (absent origins mean none).
type Input struct {
	RequireSignatures bool
	GatewayOrigins    []string // CIDR prefixes or bare addresses
}

// ParseOrigins validates origins and returns them canonical, sorted and without duplicates (nil
// for none).
// Errors are one errs.Invalid naming prefix + "gateway_origins[i]" for each bad entry (prefix
// "body." for the API), and never quote more of the input than a parse error does.
func ParseOrigins(origins []string, prefix string) ([]netip.Prefix, error) {
	if len(origins) > MaxGatewayOrigins {
		return nil, errs.Field(prefix+"gateway_origins", fmt.Sprintf("must hold at most %d prefixes", MaxGatewayOrigins))
	}
	var (
		out    = make([]netip.Prefix, 0, len(origins))
		fields []errs.FieldError
	)
	for i, o := range origins {
		p, reason := parseOrigin(o)
		if reason != "" {
			fields = append(fields, errs.FieldError{Name: fmt.Sprintf("%sgateway_origins[%d]", prefix, i), Reason: reason})
			continue
		}
		out = append(out, p)
	}
	if len(fields) > 0 {
		return nil, &errs.Error{Code: errs.Invalid, Message: "invalid gateway origins", Fields: fields}
	}
	if len(out) == 0 {
		return nil, nil // as the stores return no origins
	}
	slices.SortFunc(out, comparePrefixes)
	return slices.Compact(out), nil
}

// parseOrigin reads one origin; reason is "" when it is valid.
func parseOrigin(s string) (netip.Prefix, string) {
	switch {
	case s == "":
		return netip.Prefix{}, "must not be empty"
	case len(s) > maxOriginLen:
		return netip.Prefix{}, fmt.Sprintf("must be at most %d characters", maxOriginLen)
	case strings.TrimSpace(s) != s:
		return netip.Prefix{}, "must not start or end with white space"
	case strings.Contains(s, "%"):
		return netip.Prefix{}, "must not hold an IPv6 zone"
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, "must be a CIDR prefix such as 203.0.113.0/24, or an IP address"
		}
		if a.Is4In6() {
			return netip.Prefix{}, "is an IPv4-mapped address; give the IPv4 address"
		}
		return netip.PrefixFrom(a, a.BitLen()), ""
	}
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return netip.Prefix{}, "must be a CIDR prefix such as 203.0.113.0/24, or an IP address"
	case p.Addr().Is4In6():
		return netip.Prefix{}, "is an IPv4-mapped prefix; give the IPv4 prefix"
	case p != p.Masked():
		return netip.Prefix{}, "has host bits set; the prefix is " + p.Masked().String()
	}
	return p, ""
}

// comparePrefixes orders IPv4 before IPv6, then by address, then shorter prefixes first.
func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// CheckIfMatch evaluates an optional If-Match field value (RFC 9110 §13.1.1) against s: empty
// and "*" pass (the settings always exist, as defaults at least), as does a list holding s's
// ETag; a malformed value is an errs.Field naming header.If-Match, anything else an
// errs.PreconditionFailed wrapping ErrVersionConflict. Weak tags never match.
func CheckIfMatch(header string, s Settings) error {
	if etag.Empty(header) {
		return nil
	}
	ok, err := etag.Match("header.If-Match", header, s.ETag())
	if err != nil || ok {
		return err
	}
	return errs.Wrap(errs.PreconditionFailed, ErrVersionConflict, "the perimeter settings were changed since they were read; get them again and retry")
}
