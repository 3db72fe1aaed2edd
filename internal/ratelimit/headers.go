package ratelimit

import (
	"math"
	"time"

	"github.com/dunglas/httpsfv"
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
	policy := httpsfv.NewParams()
	policy.Add("q", int64(d.Limit))
	policy.Add("w", seconds(d.Period))
	state := httpsfv.NewParams()
	if d.Allowed {
		state.Add("r", int64(max(d.Remaining, 0)))
		state.Add("t", seconds(d.Reset))
	} else {
		state.Add("r", int64(0))
		state.Add("t", int64(ceilSecond(d.RetryAfter)/time.Second))
	}
	p, err := httpsfv.Marshal(httpsfv.List{httpsfv.Item{Value: d.Rule, Params: policy}})
	if err != nil { // a rule name that is no SF String; Config.Validate refuses those
		return "", ""
	}
	s, err := httpsfv.Marshal(httpsfv.List{httpsfv.Item{Value: d.Rule, Params: state}})
	if err != nil {
		return "", ""
	}
	return s, p
}

// seconds rounds d up to whole seconds.
func seconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}
