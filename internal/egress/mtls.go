package egress

import (
	"container/list"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/mtls"
)

// Reasons an mTLS handshake with an agent is refused; TLSRefusedError.Reason is one of these and
// so is the reason label of nops_egress_mtls_handshakes_total. They are stable.
const (
	TLSReasonNoCertificate      = "no_certificate"       // the agent sent no certificate
	TLSReasonInvalidCertificate = "invalid_certificate"  // unparsable, or a chain failure not listed below
	TLSReasonNoSPIFFEID         = "no_spiffe_id"         // the leaf has no single valid SPIFFE ID URI SAN
	TLSReasonForeignTrustDomain = "foreign_trust_domain" // a SPIFFE ID of another trust domain
	TLSReasonUnknownAuthority   = "unknown_authority"    // no chain to a root of the kernel's bundle
	TLSReasonExpired            = "expired"              // the leaf or an intermediate has expired
	TLSReasonNotYetValid        = "not_yet_valid"        // the leaf's NotBefore is in the future
	TLSReasonWrongID            = "wrong_spiffe_id"      // a valid SVID, of another workload
	TLSReasonRefusedByAgent     = "refused_by_agent"     // the agent refused the kernel's certificate (a TLS alert)
)

// TLSRefusedError is a refused mTLS handshake with an agent: the agent's certificate is not an
// SVID of the agent the call is for, or the agent refused the kernel's. Nothing of the request
// was delivered to a verified agent. Find it with IsTLSRefused.
type TLSRefusedError struct {
	Reason    string // one of the TLSReason constants
	Expected  string // the SPIFFE ID the agent had to present
	Presented string // the SPIFFE ID it presented, when its leaf carried one
	Err       error  // the verification or TLS error
}

func (e *TLSRefusedError) Error() string {
	msg := "mtls handshake with agent " + e.Expected + " refused: " + e.Reason
	if e.Presented != "" && e.Presented != e.Expected {
		msg += " (it presented " + e.Presented + ")"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *TLSRefusedError) Unwrap() error { return e.Err }

// IsTLSRefused finds a *TLSRefusedError in err's chain (through the *url.Error of http.Client).
func IsTLSRefused(err error) (*TLSRefusedError, bool) {
	return errors.AsType[*TLSRefusedError](err)
}

// agentKey is the context key of the agent a request is for.
type agentKey struct{}

type agentRef struct{ tenant, agent string }

// WithAgent returns ctx carrying the agent an outbound request is for. AgentTransport reads it to
// know which SPIFFE ID an https endpoint must present; set it on the request's context.
func WithAgent(ctx context.Context, tenantID, agentID string) context.Context {
	return context.WithValue(ctx, agentKey{}, agentRef{tenantID, agentID})
}

// AgentFromContext returns the agent WithAgent put in ctx.
func AgentFromContext(ctx context.Context) (tenantID, agentID string, ok bool) {
	r, ok := ctx.Value(agentKey{}).(agentRef)
	return r.tenant, r.agent, ok
}

// errNoAgent is the error of an https request whose context does not say which agent it is for:
// without the agent there is no identity to verify, and the kernel never calls an https agent
// without verifying it.
var errNoAgent = errors.New("egress: an https call to an agent needs the agent in its context (egress.WithAgent)")

// AgentTransportOptions tunes NewAgentTransport.
type AgentTransportOptions struct {
	// TransportOptions apply to the plain transport and to every per-agent one.
	// TLSClientConfig is not used: https calls use mtls.ClientConfig.
	TransportOptions
	// MaxAgents bounds the per-agent transports kept (default 4096); the least recently used is
	// dropped beyond it.
	MaxAgents int
	// IdleAgentTimeout drops a per-agent transport unused for that long (default: the
	// IdleConnTimeout, after which it holds no connection anyway).
	IdleAgentTimeout time.Duration
	// Meter supplies nops_egress_mtls_handshakes_total; nil: no metric.
	Meter metric.Meter
	// Gate, when set, supplies the allow-list rules of the agents service for each call's tenant
	// (checked at dial time after the Policy) and hears of refused dials. Connections are pooled
	// per tenant (and, for https, per agent), so a connection dialled under one tenant's rules
	// never serves another's, and every pool is dropped when the gate loads a new allow-list.
	Gate *Gate
}

// Defaults of AgentTransportOptions.
const DefaultMaxAgents = 4096

// AgentTransport is the http.RoundTripper of kernel → agent calls:
//
//   - http URLs go through one plain transport (NewTransport), as before: no TLS, no identity.
//   - https URLs use mutual TLS: the kernel presents its own SVID (read at every handshake, so a
//     renewal needs nothing) and accepts only the SPIFFE ID of the agent the request is for
//     (identity.AgentID of the tenant and agent in the request's context, see WithAgent), with a
//     chain to the kernel's trust bundle; TLS 1.3; host names are not checked (the SPIFFE ID is
//     the identity); no session resumption, so every connection is verified in full
//     (mtls.ClientConfig). A refusal is a *TLSRefusedError.
//
// Connections verified for one agent never carry a call for another: each expected SPIFFE ID
// has its own *http.Transport (own pool), so two agents behind one host:port never share a
// connection. Those transports are kept in a bounded LRU cache (MaxAgents) and dropped when
// unused for IdleAgentTimeout. Every transport dials through the policy's checked dialer, uses
// no proxy, and the client (Client) follows no redirects, for https as for http.
type AgentTransport struct {
	pol   Policy
	opts  TransportOptions
	ids   identity.Source
	gate  *Gate
	plain *http.Transport // http without a gate; nil with one (each tenant has its own, plains)
	max   int
	idle  time.Duration
	now   func() time.Time // the clock of idle eviction; tests replace it

	mu        sync.Mutex // guards agents, lru, swept, list and plains
	agents    map[spiffeid.ID]*list.Element
	lru       *list.List // of *agentTransport, most recently used first
	swept     time.Time
	list      *AllowList                 // the gate's list the pools below were made under
	plains    map[string]*http.Transport // http with a gate, one pool per tenant
	handshake func(ctx context.Context, reason string)
}

// agentTransport is the transport of one expected SPIFFE ID.
type agentTransport struct {
	id   spiffeid.ID
	t    *http.Transport
	used time.Time
}

// NewAgentTransport returns the transport of calls to agents under policy p, presenting the
// kernel's identity ids (its SVID and trust bundle) to https agents.
func NewAgentTransport(p Policy, ids identity.Source, o AgentTransportOptions) (*AgentTransport, error) {
	if ids == nil {
		return nil, errors.New("egress: the agent transport needs the kernel's identity source")
	}
	if o.MaxAgents < 0 {
		return nil, fmt.Errorf("egress: negative MaxAgents %d", o.MaxAgents)
	}
	plainOpts := o.TransportOptions
	plainOpts.TLSClientConfig = nil
	t := &AgentTransport{
		pol:    p.clone(),
		opts:   plainOpts,
		ids:    ids,
		gate:   o.Gate,
		plains: map[string]*http.Transport{},
		max:    orDefaultInt(o.MaxAgents, DefaultMaxAgents),
		idle:   orDefault(o.IdleAgentTimeout, orDefault(o.IdleConnTimeout, DefaultIdleConnTimeout)),
		now:    time.Now,
		agents: map[spiffeid.ID]*list.Element{},
		lru:    list.New(),
	}
	if t.gate == nil {
		t.plain = NewTransport(p, plainOpts) // with a gate, each tenant has its own (plainFor)
	}
	t.handshake = func(context.Context, string) {}
	if o.Meter != nil {
		c, err := o.Meter.Int64Counter("nops_egress_mtls_handshakes_total",
			metric.WithDescription("mTLS handshakes of the kernel with https agents: accepted, or refused with a reason."))
		if err != nil {
			return nil, fmt.Errorf("egress metrics: %w", err)
		}
		t.handshake = func(ctx context.Context, reason string) {
			result := "refused"
			if reason == "" {
				result = "accepted"
			}
			c.Add(ctx, 1, metric.WithAttributes(attribute.String("result", result), attribute.String("reason", reason)))
		}
	}
	return t, nil
}

// RoundTrip sends req through the plain transport (http) or the transport of the agent in req's
// context (https).
func (t *AgentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tenantID, agentID, ok := AgentFromContext(req.Context())
	if req.URL.Scheme != "https" {
		return t.plainFor(tenantID).RoundTrip(req)
	}
	var expected spiffeid.ID
	err := errNoAgent
	if ok {
		expected, err = identity.AgentID(t.ids.TrustDomain(), tenantID, agentID)
	}
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close() // a RoundTripper closes the body, errors included
		}
		return nil, err
	}
	resp, err := t.transportFor(expected, tenantID).RoundTrip(req)
	if err != nil {
		if _, ok := IsTLSRefused(err); !ok && isRemoteAlert(err) {
			// The handshake completed on the kernel's side (TLS 1.3 verifies the client last) and
			// the agent answered the request with an alert: it refused the kernel's certificate.
			t.handshake(req.Context(), TLSReasonRefusedByAgent)
			err = &TLSRefusedError{Reason: TLSReasonRefusedByAgent, Expected: expected.String(), Err: err}
		}
		return nil, err
	}
	return resp, nil
}

// isRemoteAlert reports whether err is a TLS alert sent by the peer.
func isRemoteAlert(err error) bool {
	op, ok := errors.AsType[*net.OpError](err)
	return ok && op.Op == "remote error"
}

// CloseIdleConnections closes the idle connections of every transport.
func (t *AgentTransport) CloseIdleConnections() {
	if t.plain != nil {
		t.plain.CloseIdleConnections()
	}
	t.mu.Lock()
	ts := make([]*http.Transport, 0, t.lru.Len()+len(t.plains))
	for e := t.lru.Front(); e != nil; e = e.Next() {
		ts = append(ts, e.Value.(*agentTransport).t)
	}
	for _, p := range t.plains {
		ts = append(ts, p)
	}
	t.mu.Unlock()
	for _, tr := range ts {
		tr.CloseIdleConnections()
	}
}

// Agents returns how many per-agent transports are cached.
func (t *AgentTransport) Agents() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len()
}

// transportFor returns the transport of calls expecting id, making it when needed, and drops
// the transports beyond the cache's bound or idle too long. A dropped transport's idle
// connections are closed; one still serving a response finishes it and its connection closes
// after IdleConnTimeout.
func (t *AgentTransport) transportFor(id spiffeid.ID, tenantID string) *http.Transport {
	now := t.now()
	t.mu.Lock()
	dropped := t.syncList()
	e, ok := t.agents[id]
	if ok {
		t.lru.MoveToFront(e)
	} else {
		e = t.lru.PushFront(&agentTransport{id: id, t: t.newAgentTransport(id, tenantID)})
		t.agents[id] = e
	}
	at := e.Value.(*agentTransport)
	at.used = now
	for t.lru.Len() > t.max {
		dropped = append(dropped, t.drop(t.lru.Back()))
	}
	if now.Sub(t.swept) >= t.idle/4 {
		t.swept = now
		for b := t.lru.Back(); b != nil && b != e && now.Sub(b.Value.(*agentTransport).used) >= t.idle; b = t.lru.Back() {
			dropped = append(dropped, t.drop(b))
		}
	}
	t.mu.Unlock()
	for _, d := range dropped {
		d.CloseIdleConnections()
	}
	return at.t
}

// drop removes e from the cache. Caller holds t.mu.
func (t *AgentTransport) drop(e *list.Element) *http.Transport {
	at := t.lru.Remove(e).(*agentTransport)
	delete(t.agents, at.id)
	return at.t
}

// newAgentTransport makes the transport of calls expecting id: mtls.ClientConfig over the
// kernel's identity, its verification wrapped to name the reason of a refusal and count it.
func (t *AgentTransport) newAgentTransport(id spiffeid.ID, tenantID string) *http.Transport {
	conf := mtls.ClientConfig(t.ids, t.ids, id)
	verify := conf.VerifyPeerCertificate
	conf.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if err := verify(raw, chains); err != nil {
			e := tlsRefusal(raw, id, err, t.now())
			t.handshake(context.Background(), e.Reason)
			return e
		}
		t.handshake(context.Background(), "")
		return nil
	}
	o := t.gated(tenantID)
	o.TLSClientConfig = conf
	return NewTransport(t.pol, o)
}

// gated returns the transport options of calls for tenantID: with a gate, its current rules of
// the agents service for the tenant and the gate's refusal hook. Caller holds t.mu.
func (t *AgentTransport) gated(tenantID string) TransportOptions {
	o := t.opts
	if t.gate != nil {
		o.Rules = t.list.Rules(ServiceAgents, tenantID)
		o.Service, o.Tenant, o.OnBlocked = ServiceAgents, tenantID, t.gate.refused
	}
	return o
}

// syncList drops every pool when the gate holds another allow-list than the one they were
// made under, and returns the dropped transports for the caller to close once it has released
// t.mu. Caller holds t.mu.
func (t *AgentTransport) syncList() []*http.Transport {
	if t.gate == nil {
		return nil
	}
	cur := t.gate.AllowList()
	if cur == t.list {
		return nil
	}
	var dropped []*http.Transport
	for e := t.lru.Front(); e != nil; e = e.Next() {
		dropped = append(dropped, e.Value.(*agentTransport).t)
	}
	for _, p := range t.plains {
		dropped = append(dropped, p)
	}
	t.agents, t.lru, t.plains, t.list = map[spiffeid.ID]*list.Element{}, list.New(), map[string]*http.Transport{}, cur
	return dropped
}

// plainFor returns the transport of http calls for tenantID: without a gate the one plain
// transport, with one the tenant's own (its rules, and its name in refusals). The tenants'
// transports hold no connection once idle for IdleConnTimeout.
func (t *AgentTransport) plainFor(tenantID string) *http.Transport {
	if t.gate == nil {
		return t.plain
	}
	t.mu.Lock()
	dropped := t.syncList()
	p, ok := t.plains[tenantID]
	if !ok {
		p = NewTransport(t.pol, t.gated(tenantID))
		t.plains[tenantID] = p
	}
	t.mu.Unlock()
	for _, d := range dropped {
		d.CloseIdleConnections()
	}
	return p
}

// tlsRefusal names why the agent's certificates raw failed verification with err, when the
// agent had to be expected.
func tlsRefusal(raw [][]byte, expected spiffeid.ID, err error, now time.Time) *TLSRefusedError {
	e := &TLSRefusedError{Expected: expected.String(), Err: err}
	if len(raw) == 0 {
		e.Reason = TLSReasonNoCertificate
		return e
	}
	leaf, perr := x509.ParseCertificate(raw[0])
	if perr != nil {
		e.Reason = TLSReasonInvalidCertificate
		return e
	}
	id, ierr := x509svid.IDFromCert(leaf)
	if ierr != nil {
		e.Reason = TLSReasonNoSPIFFEID
		return e
	}
	e.Presented = id.String()
	_, isUnknown := errors.AsType[x509.UnknownAuthorityError](err)
	invalid, isInvalid := errors.AsType[x509.CertificateInvalidError](err)
	switch {
	case !id.MemberOf(expected.TrustDomain()):
		e.Reason = TLSReasonForeignTrustDomain
	case isUnknown:
		e.Reason = TLSReasonUnknownAuthority
	case isInvalid && invalid.Reason == x509.Expired && now.Before(leaf.NotBefore):
		e.Reason = TLSReasonNotYetValid
	case isInvalid && invalid.Reason == x509.Expired:
		e.Reason = TLSReasonExpired
	case id != expected:
		e.Reason = TLSReasonWrongID
	default:
		e.Reason = TLSReasonInvalidCertificate
	}
	return e
}
