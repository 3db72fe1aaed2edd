package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/mtls"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/scope"
)

// The mTLS listener serves the same API to workloads that authenticate with an X.509-SVID
// (docs/mtls.md). The TLS side — TLS 1.3, the client certificate required and verified against
// the current bundle, revocations, refusal reasons — is internal/mtls; this file is the HTTP
// side:
//
//   - the verified SPIFFE ID is the credential and the only one: a request that also carries
//     Authorization or X-API-Key is refused (401, audited), as a request with both of those is;
//   - the ID must name an agent (spiffe://<td>/tenant/<t>/agent/<a>) or a kernel
//     (spiffe://<td>/kernel/<node>); any other ID of the trust domain is granted nothing (403,
//     audited);
//   - the principal is the workload's (scope.Workload.Principal): the agent's ID and tenant, or
//     the kernel's SPIFFE ID above tenants, with the hierarchical scopes of the table and no
//     roles; the tenant must be active, as for any credential;
//   - authorisation is scope.Routes.Check, not the RBAC matrix: a mismatch answers 403 naming the
//     missing scope and is audited;
//   - everything else — signatures a tenant requires, ABAC policies (principal.kind "spiffe",
//     request.mtls_id), rate limits, in-flight caps — is the perimeter every request crosses;
//   - of the operations without a credential only the probes, the spec and the key documents
//     (JWKS, trust bundle) are served: logins belong on the API listener.

type mtlsKey struct{}

// Workloads is how the mTLS listener turns a verified client SVID into a principal and
// authorises it.
type Workloads struct {
	// TrustDomain is the kernel's trust domain (the listener accepts no other). Required.
	TrustDomain spiffeid.TrustDomain
	// Table grants scopes to each kind of workload. Nil: scope.DefaultTable().
	Table scope.Table
	// Routes says which scope each operation needs. Nil: scope.DefaultRoutes().
	Routes *scope.Routes
	// Peer returns the verified client of a request. Nil: mtls.PeerOf, which works on an
	// http.Server prepared by mtls.Server.Configure.
	Peer func(*http.Request) (mtls.Peer, bool)
}

// MTLS marks every request h serves as arriving through the mTLS listener, whose callers are
// authenticated by w. The kernel wraps the API handler with it for that listener only: the mark
// is what makes the dispatcher read the client certificate, so it must never wrap a listener
// that does not verify one.
func MTLS(h http.Handler, w Workloads) (http.Handler, error) {
	if w.TrustDomain.IsZero() {
		return nil, errors.New("mtls workloads: a trust domain is required")
	}
	if w.Table == nil {
		w.Table = scope.DefaultTable()
	}
	if err := w.Table.Validate(); err != nil {
		return nil, fmt.Errorf("mtls workloads: %w", err)
	}
	if w.Routes == nil {
		w.Routes = scope.DefaultRoutes()
	}
	if w.Peer == nil {
		w.Peer = mtls.PeerOf
	}
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), mtlsKey{}, &w)))
	}), nil
}

func mtlsFrom(ctx context.Context) (*Workloads, bool) {
	w, ok := ctx.Value(mtlsKey{}).(*Workloads)
	return w, ok
}

func viaMTLS(ctx context.Context) bool {
	_, ok := mtlsFrom(ctx)
	return ok
}

// mtlsID is the SPIFFE ID of the verified client of r, "" off the mTLS listener (policies'
// request.mtls_id).
func mtlsID(r *http.Request) string {
	w, ok := mtlsFrom(r.Context())
	if !ok {
		return ""
	}
	if p, ok := w.Peer(r); ok {
		return p.ID.String()
	}
	return ""
}

// mtlsPublic reports whether an operation without a credential is served on the mTLS listener:
// probes, the spec and the documents a workload needs to verify the kernel (JWKS, trust bundle).
func mtlsPublic(path string) bool {
	return gatewayPublic(path) || path == "/v1/identity/bundle"
}

// workloadIDKey carries, in the request context, the SPIFFE ID of a caller authenticated by its
// SVID, for GET /v1/auth/whoami.
type workloadIDKey struct{}

// workloadIDFrom returns the SPIFFE ID of a caller authenticated by its SVID, or "".
func workloadIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(workloadIDKey{}).(string)
	return id
}

// workloadCaller is a caller authenticated by its SVID.
type workloadCaller struct {
	w       scope.Workload
	granted []scope.Scope
}

// credentials authenticates r: by its client certificate on the mTLS listener (the caller is
// then a workload), else by its bearer token or API key.
func (d *dispatcher) credentials(ctx context.Context, out http.Header, r *http.Request) (principal.Principal, *workloadCaller, error) {
	if m, ok := mtlsFrom(ctx); ok {
		return d.authenticateWorkload(ctx, r, m)
	}
	p, err := d.authenticate(ctx, out, r)
	return p, nil, err
}

// authenticateWorkload builds the principal of the verified client SVID of r. Refusals are
// audited here, with the SPIFFE ID as the actor where there is one.
func (d *dispatcher) authenticateWorkload(ctx context.Context, r *http.Request, m *Workloads) (principal.Principal, *workloadCaller, error) {
	resource := r.Method + " " + r.URL.Path
	peer, ok := m.Peer(r)
	if ok {
		ctx = principal.NewContext(ctx, principal.Principal{Subject: peer.ID.String()})
	}
	if r.Header.Get("Authorization") != "" || r.Header.Get("X-API-Key") != "" {
		// Which credential counts would be a guess: the certificate of one workload with the
		// key or token of another principal must not add up to either.
		d.audit(ctx, "", control.ActionAuthenticate, resource, "credential headers on the mTLS listener")
		return principal.Principal{}, nil, errs.New(errs.Unauthenticated,
			"on the mTLS listener the client certificate is the credential: send neither Authorization nor X-API-Key")
	}
	if !ok {
		// The handshake refuses a client without a certificate; reaching here is a wiring bug.
		d.audit(ctx, "", control.ActionAuthenticate, resource, "no verified client certificate on the mTLS listener")
		return principal.Principal{}, nil, errs.New(errs.Unauthenticated, "no verified client certificate")
	}
	w, err := scope.ParseWorkload(peer.ID, m.TrustDomain)
	if err != nil {
		d.audit(ctx, "", control.ActionAuthorize, resource, "SPIFFE ID names neither an agent nor a kernel: granted nothing")
		return principal.Principal{}, nil, errs.Wrap(errs.Forbidden, err,
			"the SPIFFE ID %s names neither an agent nor a kernel of this trust domain: it is granted nothing", peer.ID)
	}
	granted, err := m.Table.For(w)
	if err != nil {
		return principal.Principal{}, nil, fmt.Errorf("scopes of %s: %w", peer.ID, err)
	}
	return w.Principal(granted, "svid:"+peer.Serial, peer.NotAfter), &workloadCaller{w: w, granted: granted}, nil
}

// authorizeWorkload checks that the caller's scopes cover the operation of r (scope.Routes);
// a refusal is audited with its cause and the caller's SPIFFE ID.
func (d *dispatcher) authorizeWorkload(ctx context.Context, r *http.Request, c *workloadCaller) error {
	m, _ := mtlsFrom(ctx)
	_, err := m.Routes.Check(r, c.w, c.granted)
	if err == nil {
		return nil
	}
	if errs.Is(err, errs.Forbidden) {
		reason := "forbidden"
		if e := errs.As(err); e != nil && e.Err != nil {
			reason = e.Err.Error()
		}
		d.audit(ctx, c.w.Tenant, control.ActionAuthorize, r.Method+" "+r.URL.Path, c.w.ID.String()+": "+reason)
	}
	return err
}

// mtlsUnsecured refuses an operation without a credential that the mTLS listener does not serve.
func mtlsUnsecured(r *http.Request) error {
	if !viaMTLS(r.Context()) || mtlsPublic(r.URL.Path) {
		return nil
	}
	return errs.New(errs.Forbidden, "the mTLS listener authenticates workloads by their certificate: use the API listener for %s", r.URL.Path)
}
