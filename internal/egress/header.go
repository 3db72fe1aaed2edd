package egress

import (
	"net/http"
	"slices"
	"strings"
)

// hopByHop are the headers that describe one connection, not the message (RFC 9110 section
// 7.6.1, plus the pre-standard Proxy-Connection and Keep-Alive, and HTTP2-Settings, which belongs
// to one h2c upgrade). A proxy never forwards them; headers named in Connection join them.
var hopByHop = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
	"Http2-Settings",
}

// outboundDropped are the caller's request headers the agent must not see: the caller's
// credentials (an agent that saw them could replay them against the kernel; the caller's RFC 9421
// signature covers the request to the kernel, not to the agent), forwarding information as the
// caller claimed it (the kernel sets its own, from what it saw), and Host (the agent's URL
// decides it).
var outboundDropped = []string{
	"Authorization",
	"Cookie",
	"X-Api-Key",
	"Signature",
	"Signature-Input",
	"Forwarded",
	"X-Real-Ip",
	"Host",
}

// inboundDropped are agent response headers that would set policy for the kernel's whole origin
// in a browser, which one agent must not do for every other tenant and agent behind the same
// host: cookies, HSTS, alternative services, Clear-Site-Data (which would wipe the origin's
// storage) and CORS grants (Access-Control-* by prefix, below).
var inboundDropped = []string{
	"Set-Cookie",
	"Set-Cookie2",
	"Strict-Transport-Security",
	"Alt-Svc",
	"Clear-Site-Data",
}

// OutboundHeader copies a caller's request headers src into dst (which must not be nil) for the
// request to an agent, minus the hop-by-hop headers and every header a Connection header names,
// the caller's credentials (Authorization, Cookie, X-API-Key, Signature, Signature-Input),
// Forwarded, X-Forwarded-* and X-Real-IP as received, and Host.
//
// "TE: trailers" is kept: it is the one TE value HTTP/2 allows, it says the client accepts
// trailers (gRPC needs it), and the caller's acceptance holds along the whole chain. Any other TE
// value is dropped. Values are appended to dst, never aliased with src; headers the kernel sets
// itself (its own forwarding headers, credentials for the agent, deadline) must be Set after
// this call, which also replaces anything of the same name the caller sent.
func OutboundHeader(dst, src http.Header) {
	drop := connectionNamed(src)
	trailers := false
	for k, vv := range src {
		ck := http.CanonicalHeaderKey(k)
		if ck == "Te" && hasToken(vv, "trailers") {
			trailers = true
		}
		if slices.Contains(hopByHop, ck) || slices.Contains(outboundDropped, ck) || strings.HasPrefix(ck, "X-Forwarded-") || drop[ck] {
			continue
		}
		dst[ck] = append(dst[ck], vv...)
	}
	if trailers {
		dst["Te"] = []string{"trailers"}
	}
}

// InboundHeader copies an agent's response headers src into dst (which must not be nil), minus
// the hop-by-hop headers and every header a Connection header names, and minus the headers that
// set browser policy for the kernel's origin: Set-Cookie (an agent must not plant cookies on the
// kernel's origin), Strict-Transport-Security, Alt-Svc, Clear-Site-Data and Access-Control-*.
// Trailer is hop-by-hop here too: the caller announces the trailers it forwards. Values are
// appended to dst, never aliased with src.
func InboundHeader(dst, src http.Header) {
	drop := connectionNamed(src)
	for k, vv := range src {
		ck := http.CanonicalHeaderKey(k)
		if slices.Contains(hopByHop, ck) || slices.Contains(inboundDropped, ck) || strings.HasPrefix(ck, "Access-Control-") || drop[ck] {
			continue
		}
		dst[ck] = append(dst[ck], vv...)
	}
}

// connectionNamed returns the canonical names the Connection headers of h list (RFC 9110
// section 7.6.1: the sender marks them as meant for the next hop only). The map is nil when there
// are none, which is the common case and costs no allocation.
func connectionNamed(h http.Header) map[string]bool {
	var names map[string]bool
	for k, vv := range h {
		if http.CanonicalHeaderKey(k) != "Connection" {
			continue
		}
		for _, v := range vv {
			for tok := range strings.SplitSeq(v, ",") {
				if tok = strings.TrimSpace(tok); tok != "" {
					if names == nil {
						names = map[string]bool{}
					}
					names[http.CanonicalHeaderKey(tok)] = true
				}
			}
		}
	}
	return names
}

// hasToken reports whether a comma-separated list in vv holds token (case-insensitive, any
// parameters after ';' ignored).
func hasToken(vv []string, token string) bool {
	for _, v := range vv {
		for tok := range strings.SplitSeq(v, ",") {
			tok, _, _ = strings.Cut(tok, ";")
			if strings.EqualFold(strings.TrimSpace(tok), token) {
				return true
			}
		}
	}
	return false
}
