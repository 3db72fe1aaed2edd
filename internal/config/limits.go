package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// RateRule is a rate limit as the configuration writes it: <limit>/<period>[+<burst>].
type RateRule struct {
	Limit  int
	Period time.Duration
	Burst  int
}

// ParseRateRule parses "100/1m" or "10/1s+20"; "" is the zero RateRule (no limit).
func ParseRateRule(s string) (RateRule, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return RateRule{}, nil
	}
	limit, rest, ok := strings.Cut(s, "/")
	if !ok {
		return RateRule{}, fmt.Errorf("want <limit>/<period>[+<burst>] such as 100/1m, got %q", s)
	}
	period, burst, hasBurst := strings.Cut(rest, "+")
	var r RateRule
	var err error
	if r.Limit, err = strconv.Atoi(strings.TrimSpace(limit)); err != nil || r.Limit < 0 {
		return RateRule{}, fmt.Errorf("limit must be a non-negative integer, got %q", limit)
	}
	p := strings.TrimSpace(period)
	if p != "" && (p[0] < '0' || p[0] > '9') {
		p = "1" + p // "100/s", "100/min" read as one unit
	}
	if p == "1min" {
		p = "1m"
	}
	if r.Period, err = time.ParseDuration(p); err != nil || r.Period < time.Second || r.Period > 24*time.Hour {
		return RateRule{}, fmt.Errorf("period must be a duration between 1s and 24h, got %q", period)
	}
	if hasBurst {
		if r.Burst, err = strconv.Atoi(strings.TrimSpace(burst)); err != nil || r.Burst < 0 {
			return RateRule{}, fmt.Errorf("burst must be a non-negative integer, got %q", burst)
		}
	}
	return r, nil
}

// NamedRateRule is one entry of a rule list: a class name, or kind:target of an override.
type NamedRateRule struct {
	Name string
	Rule RateRule
}

// ParseRateRules parses "name=rule;name=rule". The name is everything before the last '=',
// so route overrides may contain spaces ("route:GET /v1/agents=50/1m").
func ParseRateRules(s string) ([]NamedRateRule, error) {
	var out []NamedRateRule
	for entry := range strings.SplitSeq(s, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		i := strings.LastIndex(entry, "=")
		if i <= 0 {
			return nil, fmt.Errorf("want name=<limit>/<period>[+<burst>], got %q", entry)
		}
		r, err := ParseRateRule(entry[i+1:])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", strings.TrimSpace(entry[:i]), err)
		}
		out = append(out, NamedRateRule{Name: strings.TrimSpace(entry[:i]), Rule: r})
	}
	return out, nil
}

// ParsePrefixList parses a comma-separated list of CIDRs or addresses (a single address is its
// own /32 or /128).
func ParsePrefixList(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if p, err := netip.ParsePrefix(item); err == nil {
			if p != p.Masked() {
				return nil, fmt.Errorf("%q has host bits set (did you mean %s?)", item, p.Masked())
			}
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an IP address", item)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// RateLimitClasses are the route classes rate limits may name.
var RateLimitClasses = []string{"auth", "read", "write", "admin"}

func (v *validator) limits(l LimitsConfig) {
	if _, err := ParsePrefixList(l.TrustedProxies); err != nil {
		v.add("limits.trusted_proxies", err.Error())
	}
	for _, r := range []struct{ path, rule string }{{"limits.global", l.Global}, {"limits.per_ip", l.PerIP},
		{"limits.per_tenant", l.PerTenant}, {"limits.per_principal", l.PerPrincipal}} {
		if _, err := ParseRateRule(r.rule); err != nil {
			v.add(r.path, err.Error())
		}
	}
	classes, err := ParseRateRules(l.Classes)
	if err != nil {
		v.add("limits.classes", err.Error())
	}
	for _, c := range classes {
		if !slices.Contains(RateLimitClasses, c.Name) {
			v.add("limits.classes", fmt.Sprintf("unknown class %q (want %s)", c.Name, strings.Join(RateLimitClasses, ", ")))
		}
	}
	overrides, err := ParseRateRules(l.Overrides)
	if err != nil {
		v.add("limits.overrides", err.Error())
	}
	for _, o := range overrides {
		kind, target, ok := strings.Cut(o.Name, ":")
		switch {
		case !ok || target == "":
			v.add("limits.overrides", fmt.Sprintf("%q: want kind:target with kind cidr, tenant or route", o.Name))
		case kind == "cidr":
			if _, err := ParsePrefixList(target); err != nil {
				v.add("limits.overrides", err.Error())
			}
		case kind != "tenant" && kind != "route":
			v.add("limits.overrides", fmt.Sprintf("%q: kind must be cidr, tenant or route", o.Name))
		}
	}
	for _, c := range []struct {
		path string
		n    int
	}{{"limits.max_conns_per_ip", l.MaxConnsPerIP}, {"limits.max_conns", l.MaxConns},
		{"limits.inflight_per_ip", l.InFlightPerIP}, {"limits.inflight_per_tenant", l.InFlightPerTenant}, {"limits.inflight_max", l.InFlightMax}} {
		if c.n < 1 {
			v.add(c.path, fmt.Sprintf("must be at least 1, got %d", c.n))
		}
	}
}
