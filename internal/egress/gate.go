package egress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/mod/sumdb/note"
)

// Gate is the one egress gate every outbound connection of the kernel goes through: the address
// Policy (always-refused ranges, egress.deny and, for agents, the configuration's openings) and
// the allow-list's Rules of the connecting service and tenant, both checked on the address being
// dialled. The allow-list is either signed (Ed25519, verified at load, refused when tampered) or
// built from the configuration; a service it does not name may connect nowhere.
//
// Reload replaces a signed list by the file's new version when its signature holds and its
// serial does not go back; otherwise the current list stays. Run polls the file.
type Gate struct {
	agents Policy // the address policy of the agents service
	others Policy // the address policy of the other services: always-refused and egress.deny
	file   string
	keys   note.Verifiers
	logger *slog.Logger
	list   atomic.Pointer[AllowList]
	hooks  atomic.Pointer[GateHooks]
	inst   atomic.Pointer[gateInstruments]

	reloadMu sync.Mutex // serialises Reload
	lastSum  string     // hex SHA-256 of the file last read (loaded or refused)
}

// GateHooks are told of the gate's decisions, for audit and rollback. Both may be nil.
type GateHooks struct {
	// Refused hears of every refused connection of every service, after it is counted.
	Refused func(ctx context.Context, b *BlockedError)
	// Loaded hears of every allow-list file read by Reload: err nil when it was loaded, else
	// why it was refused (the current list stays).
	Loaded func(ctx context.Context, l *AllowList, err error)
}

// GateConfig configures NewGate.
type GateConfig struct {
	// AgentsPolicy is the address policy of calls to agents; Deny the extra refusals of every
	// other service, whose address policy otherwise opens loopback and private ranges and
	// leaves the choice to their Rules.
	AgentsPolicy Policy
	Deny         []netip.Prefix
	// List is the allow-list the configuration describes, used when File is empty.
	List *AllowList
	// File is a signed allow-list verified with Keys; it replaces List.
	File   string
	Keys   note.Verifiers
	Logger *slog.Logger
}

// NewGate builds the gate. With a File, the file must verify with Keys and parse: a tampered,
// unsigned or invalid file is an error, and the kernel does not start.
func NewGate(cfg GateConfig) (*Gate, error) {
	g := &Gate{
		agents: cfg.AgentsPolicy.clone(),
		others: Policy{AllowLoopback: true, AllowPrivate: true, Deny: append([]netip.Prefix(nil), cfg.Deny...)},
		file:   cfg.File,
		keys:   cfg.Keys,
		logger: cfg.Logger,
	}
	if g.logger == nil {
		g.logger = slog.New(slog.DiscardHandler)
	}
	g.hooks.Store(&GateHooks{})
	if cfg.File == "" {
		if cfg.List == nil {
			return nil, errors.New("egress gate: an allow-list or a signed allow-list file is required")
		}
		g.list.Store(cfg.List)
		return g, nil
	}
	if cfg.Keys == nil {
		return nil, errors.New("egress.allowlist_keys: required with egress.allowlist_file")
	}
	raw, err := readAllowListFile(cfg.File)
	if err != nil {
		return nil, err
	}
	l, err := OpenAllowList(raw, cfg.Keys)
	if err != nil {
		return nil, fmt.Errorf("egress.allowlist_file %s: %w", cfg.File, err)
	}
	g.lastSum = l.SHA256
	g.list.Store(l)
	return g, nil
}

type gateInstruments struct {
	refusal metric.Int64Counter
	loads   metric.Int64Counter
}

// Instrument registers the gate's metrics with m: nops_egress_refused_total (by service,
// tenant, reason), nops_egress_allowlist_loads_total (by result) and
// nops_egress_allowlist_serial. The gate exists before the kernel's telemetry (the OTLP exporter
// dials through it), hence a method rather than a field of GateConfig.
func (g *Gate) Instrument(m metric.Meter) error {
	var in gateInstruments
	var err error
	if in.refusal, err = m.Int64Counter("nops_egress_refused_total",
		metric.WithDescription("Outbound connections the egress gate refused, by service, tenant and reason.")); err != nil {
		return fmt.Errorf("egress metrics: %w", err)
	}
	if in.loads, err = m.Int64Counter("nops_egress_allowlist_loads_total",
		metric.WithDescription("Signed allow-list files read again, by result (loaded or refused).")); err != nil {
		return fmt.Errorf("egress metrics: %w", err)
	}
	if _, err := m.Int64ObservableGauge("nops_egress_allowlist_serial",
		metric.WithDescription("Serial of the allow-list the egress gate holds (0: built from the configuration)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(g.AllowList().Serial))
			return nil
		})); err != nil {
		return fmt.Errorf("egress metrics: %w", err)
	}
	g.inst.Store(&in)
	return nil
}

// SetHooks installs the hooks (the kernel's audit and rollback, which exist after the gate).
func (g *Gate) SetHooks(h GateHooks) { g.hooks.Store(&h) }

// AllowList returns the list the gate holds now.
func (g *Gate) AllowList() *AllowList { return g.list.Load() }

// Rules returns the rules of service for tenant under the current list.
func (g *Gate) Rules(service, tenant string) *Rules { return g.AllowList().Rules(service, tenant) }

// AgentsPolicy returns the address policy of calls to agents.
func (g *Gate) AgentsPolicy() Policy { return g.agents }

// ValidateEndpoint is Policy.ValidateEndpoint for an agent endpoint of tenantID, also refusing
// an endpoint the tenant's rules can never let the kernel call: an IP literal and port they
// refuse, or a host name no entry names while the class is below D4.
func (g *Gate) ValidateEndpoint(tenantID, raw string) (*url.URL, error) {
	u, err := g.agents.ValidateEndpoint(raw)
	if err != nil {
		return nil, err
	}
	r := g.Rules(ServiceAgents, tenantID)
	port := urlPort(u)
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := r.Check(host, ip, port); err != nil {
			be := err.(*BlockedError)
			be.Host, be.Service, be.Tenant = host, ServiceAgents, tenantID
			return nil, be
		}
		return u, nil
	}
	if !r.MayReachName(host, port) {
		return nil, &BlockedError{Host: host, Port: port, Class: r.Class, Reason: ReasonNotListed, Service: ServiceAgents, Tenant: tenantID}
	}
	return u, nil
}

func urlPort(u *url.URL) uint16 {
	if p, err := strconv.ParseUint(u.Port(), 10, 16); err == nil {
		return uint16(p)
	}
	if u.Scheme == "https" {
		return 443
	}
	return 80
}

// refused counts b and tells the hook.
func (g *Gate) refused(ctx context.Context, b *BlockedError) {
	if in := g.inst.Load(); in != nil {
		in.refusal.Add(ctx, 1, metric.WithAttributes(attribute.String("service", b.Service),
			attribute.String("tenant", b.Tenant), attribute.String("reason", b.Reason)))
	}
	if h := g.hooks.Load(); h.Refused != nil {
		h.Refused(ctx, b)
	}
}

// Reload reads the signed allow-list file again. When its bytes changed since the last read it
// is verified and parsed; it replaces the current list when that succeeds and its serial is not
// lower than the current one. A refused file leaves the current list in place and is reported
// once (until the file changes again). It reports whether a new list was loaded. Without a
// file it does nothing.
func (g *Gate) Reload(ctx context.Context) (bool, error) {
	if g.file == "" {
		return false, nil
	}
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	raw, err := readAllowListFile(g.file)
	if err != nil {
		return false, err
	}
	sum := sha256.Sum256(raw)
	if hex.EncodeToString(sum[:]) == g.lastSum {
		return false, nil
	}
	g.lastSum = hex.EncodeToString(sum[:])
	l, err := OpenAllowList(raw, g.keys)
	if err == nil && l.Serial < g.AllowList().Serial {
		err = fmt.Errorf("serial %d is lower than the loaded allow-list's %d: an older list is not loaded again", l.Serial, g.AllowList().Serial)
	}
	result := "loaded"
	if err != nil {
		result = "refused"
		err = fmt.Errorf("egress.allowlist_file %s: %w", g.file, err)
		g.logger.ErrorContext(ctx, "egress allow-list refused; the loaded one stays", "error", err)
	} else {
		g.list.Store(l)
		g.logger.InfoContext(ctx, "egress allow-list loaded", "serial", l.Serial, "signer", l.Signer, "sha256", l.SHA256)
	}
	if in := g.inst.Load(); in != nil {
		in.loads.Add(ctx, 1, metric.WithAttributes(attribute.String("result", result)))
	}
	if h := g.hooks.Load(); h.Loaded != nil {
		h.Loaded(ctx, l, err)
	}
	return err == nil, err
}

// Run calls Reload every interval until ctx ends. Errors are reported by Reload.
func (g *Gate) Run(ctx context.Context, interval time.Duration) {
	if g.file == "" || interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_, _ = g.Reload(ctx)
		}
	}
}

func readAllowListFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("egress.allowlist_file: %w", err)
	}
	defer func() { _ = f.Close() }()
	raw, err := io.ReadAll(io.LimitReader(f, MaxAllowListBytes+1))
	if err != nil {
		return nil, fmt.Errorf("egress.allowlist_file %s: %w", path, err)
	}
	return raw, nil
}

// Transport returns the RoundTripper of a service other than agents (no tenant): its dials are
// checked against the gate's address policy and the service's current rules; a new allow-list
// takes effect on the next connection (pooled connections of the previous list are dropped).
// o's Rules, Service, Tenant and OnBlocked are set by the gate.
func (g *Gate) Transport(service string, o TransportOptions) http.RoundTripper {
	return &serviceTransport{g: g, service: service, opts: o}
}

type serviceTransport struct {
	g       *Gate
	service string
	opts    TransportOptions

	mu   sync.Mutex
	list *AllowList
	t    *http.Transport
}

func (s *serviceTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return s.current().RoundTrip(req)
}

func (s *serviceTransport) current() *http.Transport {
	cur := s.g.AllowList()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.list != cur || s.t == nil {
		if s.t != nil {
			s.t.CloseIdleConnections()
		}
		o := s.opts
		o.Rules, o.Service, o.Tenant, o.OnBlocked = cur.Rules(s.service, ""), s.service, "", s.g.refused
		s.t, s.list = NewTransport(s.g.others, o), cur
	}
	return s.t
}

// CloseIdleConnections closes the current transport's idle connections.
func (s *serviceTransport) CloseIdleConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.t != nil {
		s.t.CloseIdleConnections()
	}
}

// EndpointRules are the rules of a service whose one destination the operator configured (the
// OTLP collector when no signed allow-list says otherwise): host and port, whatever class host
// resolves to, and nothing else.
func EndpointRules(host string, port uint16) *Rules {
	ports := []PortRange{{From: port, To: port}}
	host = normalHost(host)
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		return &Rules{Class: D3, Action: ActionNone, Allow: []Destination{{Prefix: netip.PrefixFrom(ip, ip.BitLen()), Ports: ports}}}
	}
	r := &Rules{Class: D3, Action: ActionNone}
	for _, c := range []Class{D1, D2, D3} {
		r.Allow = append(r.Allow, Destination{Host: host, Class: c, Ports: ports})
	}
	return r
}

// EndpointHostPort splits an endpoint URL or host:port into its host and port (default 443 for
// https, 4318 otherwise, the OTLP/HTTP port).
func EndpointHostPort(endpoint string) (string, uint16, error) {
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" {
		p := uint16(4318)
		if u.Scheme == "https" && u.Port() == "" {
			p = 443
		}
		if u.Port() != "" {
			n, err := strconv.ParseUint(u.Port(), 10, 16)
			if err != nil {
				return "", 0, fmt.Errorf("port of %q: %w", endpoint, err)
			}
			p = uint16(n)
		}
		return u.Hostname(), p, nil
	}
	h, ps, err := net.SplitHostPort(endpoint)
	if err != nil {
		return "", 0, fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port of %q: %w", endpoint, err)
	}
	return h, uint16(n), nil
}

// ConfigList is the allow-list the configuration describes: one Rules per service.
func ConfigList(services map[string]*Rules) *AllowList {
	return &AllowList{Services: services, Tenants: map[string]map[string]*Rules{}, Source: "configuration"}
}
