// Package nops is the Go SDK of the NOPS kernel: a client of the kernel API and a runtime for
// agents that the kernel routes invocations to.
//
// # Client
//
// [NewClient] returns a [Client] that sends every request to the kernel with:
//
//   - authentication: an API key (`X-API-Key: nops_<keyid>_<secret>`) or a bearer JWT;
//   - an RFC 9421 signature made with a request key (`hmac-sha256` or `ed25519`) when one is
//     configured, covering @method, @target-uri, content-digest and content-type with the
//     parameters created, keyid, a fresh nonce and tag="nops-request" (see docs/request-signing.md);
//   - an `Idempotency-Key` on every POST and PATCH that lacks one, so that a retry is never
//     processed twice;
//   - retries with exponential backoff and full jitter on 429 and 503 (waiting at least what
//     `Retry-After` asks) and on transport errors, within the request context's deadline.
//
// [Client.API] is the typed client generated from api/kernel.yaml (package
// github.com/nops-kernel/nops/sdk/go/nops/api) running on that pipeline; [Client.Invoke] calls a
// capability through the kernel. [Client.RotateAPIKey] rotates the client's own API key without
// a failed call: it rotates with a grace period, switches to the new secret, waits for the
// requests sent with the old one to finish, and confirms that the kernel retires the old one.
//
// # Agent
//
// [NewAgent] builds an agent: its capabilities, each with a [HandlerFunc] and optionally a JSON
// Schema of its input. [Agent.Run] registers it (idempotently: an agent of the same name is
// updated, not duplicated), serves invocations on its listener, heartbeats with jitter and the
// runtime's own load figures (in-flight calls, free capacity, p50/p95 latency and error rate of
// the last invocations), serves https with an X.509-SVID when given an [SVIDSource] (issued by
// the kernel and renewed at half its lifetime, [KernelSVIDs], or from a SPIFFE Workload API,
// [WorkloadSVIDs]), and on cancellation drains in-flight calls and deregisters.
// [Agent.Handler] is the http.Handler that serves invocations: it reads the kernel's headers
// (Nops-Invocation-Id, Nops-Tenant, Nops-Capability, Nops-Timeout-Ms as the context deadline,
// the W3C traceparent into the context), validates the input against the capability's schema
// (compiled once) and answers RFC 9457 problems for bad input.
//
// [Hooks] are callbacks for metrics (heartbeats, invocations served, retries), so that
// Prometheus or OpenTelemetry counters can be plugged in without the SDK depending on them.
//
// This package imports nothing of the kernel's internal packages: it can be vendored or
// extracted on its own.
package nops
