package ratelimit

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// Headers renders a decision as the RateLimit and RateLimit-Policy fields of
// draft-ietf-httpapi-ratelimit-headers (draft 11), Structured Field Lists of one Item each:
//
//	RateLimit-Policy: "per_ip";q=100;w=60
//	RateLimit: "per_ip";r=42;t=17
//
// q is the rule's limit and w its period in seconds (rounded up); r is the quota left now and t
// the seconds until it is whole again, or for a refusal the seconds until a request passes —
// the same value as Retry-After, which the draft asks not to end before t. Both are "" when no
// rule applied (send neither field then).
func Headers(d Decision) (rateLimit, rateLimitPolicy string) {
	if d.Rule == "" || d.Limit <= 0 || d.Period <= 0 {
		return "", ""
	}
	name, ok := sfString(d.Rule)
	if !ok { // a rule name that is no SF String; Config.Validate refuses those
		return "", ""
	}
	// Written out rather than through httpsfv: they are on every limited response, and an SF
	// List of one String Item with Integer parameters is this much (TestHeaders parses them back).
	r, t := int64(0), int64(ceilSecond(d.RetryAfter)/time.Second)
	if d.Allowed {
		r, t = int64(max(d.Remaining, 0)), seconds(d.Reset)
	}
	rateLimit = name + ";r=" + strconv.FormatInt(r, 10) + ";t=" + strconv.FormatInt(t, 10)
	rateLimitPolicy = name + ";q=" + strconv.FormatInt(int64(d.Limit), 10) + ";w=" + strconv.FormatInt(seconds(d.Period), 10)
	return rateLimit, rateLimitPolicy
}

// sfString renders s as an RFC 9651 String (printable ASCII, with " and \ escaped), or reports
// that it is none.
func sfString(s string) (string, bool) {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c > 0x7e:
			return "", false
		case c == '"' || c == '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String(), true
}

// seconds rounds d up to whole seconds.
func seconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}
