// Package egress is the kernel's egress gate: every outbound connection (calls to the HTTP
// endpoints tenants registered for their agents, the OTLP exporter) goes through it, so the
// kernel cannot become an SSRF tool or send data where nobody approved. It has two layers,
// both checked at dial time on the address being connected to: an address policy (Policy:
// always-refused ranges, egress.deny, the configuration's loopback/private openings) and the
// allow-list rules of the connecting service and tenant (Rules: destination classes D0–D4,
// prefixes, names, ports; deny by default), loaded from a signed allow-list (AllowList,
// OpenAllowList: an Ed25519 signed note, verified at load) or built from the configuration. Gate
// holds the current list, reloads it (Reload, Run), counts refusals and hands them to hooks for
// audit and rollback. Around that: an http.Transport and http.Client built on the checked
// dialer (no proxy from the environment, no redirects followed), header hygiene for proxying a
// caller's request to an agent and the agent's response back, and the validation of an endpoint
// URL.
//
// Who may import it: the packages that call agents or accept their endpoints (invoke and routing,
// registry for ValidateEndpoint) and internal/kernel, which builds the Gate from configuration
// (egress.allow_loopback, egress.allow_private, egress.allow, egress.allow_public, egress.deny,
// egress.allowlist_file) and cmd/nops (nops egress keygen|sign|verify). It imports identity
// and mtls of the project, for mTLS to agents with https endpoints (mtls.go: NewAgentTransport
// presents the kernel's SVID and checks that the agent presents its registered SPIFFE ID). docs/egress.md is the operator's view.
//
// # Usage
//
//	p := egress.Policy{AllowLoopback: cfg.AllowLoopback, Allow: cfg.Allow, Deny: cfg.Deny}
//	client := egress.Client(egress.NewTransport(p, egress.TransportOptions{}))
//
//	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, agent.Endpoint, body)
//	egress.OutboundHeader(req.Header, in.Header)
//	req.Header.Set("X-Forwarded-For", clientIP) // the kernel's own, after the copy
//	resp, err := client.Do(req)
//	if be, ok := egress.IsBlocked(err); ok {
//		// the agent's address is refused: a clear error for the caller, an audit record
//	}
//	egress.InboundHeader(w.Header(), resp.Header)
//
// # Why dial time
//
// The only check DNS rebinding cannot pass is one made on the address the socket is about to
// connect to: Policy.Dialer checks it in the dialer's ControlContext hook, after resolution, once
// per address tried (a name with several addresses falls through to the next one when an
// address is refused). ValidateEndpoint checks IP literals early so a tenant gets a clear error
// at registration, but never resolves names.
//
// # What is refused
//
// Always, whatever the configuration: invalid and unspecified addresses (0.0.0.0/8, ::),
// link-local unicast and multicast, all multicast, broadcast, the cloud metadata addresses
// (some of which are ULA, CGNAT or public addresses), reserved special-purpose ranges
// (240.0.0.0/4, 192.0.0.0/24, 198.18.0.0/15, the documentation ranges, IPv6 outside 2000::/3
// other than ::1 and ULA), and Teredo. NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses are
// judged by the IPv4 address they carry as well; IPv4-mapped addresses are unmapped first.
// Loopback and private (RFC 1918, ULA, CGNAT) are refused unless the flags or Allow open them;
// Deny refuses more. See Policy.Check.
//
// # Concurrency
//
// Policy is a value; Check, Dialer and ValidateEndpoint may be called concurrently. Dialer copies
// the Allow and Deny slices, so later edits by the caller do not reach a dialer already built.
// The transport and client are safe for concurrent use like any http.Transport and http.Client.
//
// # Testing
//
// Tests run real servers on 127.0.0.1:0, a tiny DNS server on UDP 127.0.0.1:0 for the rebinding
// test, and FuzzCheck compares Check with an independent reference predicate over arbitrary
// addresses.
package egress
