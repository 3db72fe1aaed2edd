package registry

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/egress"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/tenant"
)

// Page sizes and budgets.
const (
	DefaultLimit       = 50   // agents per List page when Filter.Limit is 0
	MaxLimit           = 500  // largest Filter.Limit
	DefaultMaxRoutable = 1000 // Config.MaxRoutable when 0
	// MaxListScan bounds how many stored agents one List call reads while filtering by label
	// selector or status in memory. When it is spent the page is returned short (possibly
	// empty) with a NextCursor to resume from, so a selective filter over a large tenant costs
	// bounded work per request.
	MaxListScan = 5000
)

// filteredBatch is how many agents List reads per store call when it filters in memory.
const filteredBatch = 200

// deleteAttempts bounds how often an unconditional Delete re-reads an agent that changed between
// its read and its compare-and-set delete.
const deleteAttempts = 3

// Config configures a Service. The zero value works.
type Config struct {
	TTL         TTLs             // status decay; zero means DefaultTTLs()
	Now         func() time.Time // the clock; nil means time.Now
	MaxRoutable int              // most candidates Routable considers; 0 means DefaultMaxRoutable
	// Egress checks endpoints at Register and Update for the agent's tenant: an IP literal the
	// policy refuses (metadata, link-local, multicast, loopback or private when not opened, an
	// address or port the tenant's allow-list rules refuse) or a host name those rules can never
	// let through is a 400 naming body.endpoint. Other host names are judged when dialled. The
	// kernel passes its egress gate; nil means egress.AddressOnly(egress.Policy{}).
	Egress EndpointValidator
}

// EndpointValidator judges an agent endpoint of a tenant (egress.Gate, egress.AddressOnly).
type EndpointValidator interface {
	ValidateEndpoint(tenantID, raw string) (*url.URL, error)
}

// Service applies the registry rules over a Store. Create it with NewService.
type Service struct {
	store       Store
	ttl         TTLs
	now         func() time.Time
	maxRoutable int
	egress      EndpointValidator
}

// Change is the outcome of Update: the agent before and after. Changed is false when the input
// equalled the stored registration; then nothing was written and After equals Before.
type Change struct {
	Before  Agent
	After   Agent
	Changed bool
}

// Filter selects agents for List. Its zero value lists every agent, DefaultLimit at a time.
type Filter struct {
	Capability string        // "" for any; else agents offering exactly this capability
	Selector   LabelSelector // from ParseSelector
	Status     []Status      // empty for any; else agents whose status, derived now, is listed
	Limit      int           // 0 means DefaultLimit; at most MaxLimit
	Cursor     string        // "" for the first page; else a Page.NextCursor
}

// Page is one page of List. NextCursor is empty when no further agent matches; a page may hold
// fewer than Limit agents (even none) while NextCursor is set, when MaxListScan was reached.
type Page struct {
	Agents     []Agent
	NextCursor string
}

// NewService returns a Service over store.
func NewService(store Store, cfg Config) (*Service, error) {
	if store == nil {
		return nil, errors.New("new registry service: nil store")
	}
	if cfg.TTL == (TTLs{}) {
		cfg.TTL = DefaultTTLs()
	}
	if err := cfg.TTL.Validate(); err != nil {
		return nil, fmt.Errorf("new registry service: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxRoutable < 0 {
		return nil, fmt.Errorf("new registry service: negative MaxRoutable %d", cfg.MaxRoutable)
	}
	if cfg.MaxRoutable == 0 {
		cfg.MaxRoutable = DefaultMaxRoutable
	}
	if cfg.Egress == nil {
		cfg.Egress = egress.AddressOnly(egress.Policy{})
	}
	return &Service{store: store, ttl: cfg.TTL, now: cfg.Now, maxRoutable: cfg.MaxRoutable, egress: cfg.Egress}, nil
}

// TTLs returns the TTLs the Service derives status with.
func (s *Service) TTLs() TTLs { return s.ttl }

// clock returns now in UTC truncated to microseconds: PostgreSQL keeps no more, and a time that
// does not round-trip would break cursors and compare-and-set.
func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// derived returns a with the status derived at now.
func (s *Service) derived(a Agent, now time.Time) Agent {
	a.Status = DeriveStatus(now, a.HeartbeatAt, s.ttl)
	return a
}

// Register validates in and stores a new agent in the tenant. Registration counts as the first
// heartbeat. A name taken in the tenant is an errs.Conflict.
func (s *Service) Register(ctx context.Context, tenantID string, in AgentInput) (Agent, error) {
	if err := checkTenant(tenantID); err != nil {
		return Agent{}, err
	}
	norm, err := s.normalize(tenantID, in)
	if err != nil {
		return Agent{}, err
	}
	now := s.clock()
	a := Agent{
		ID:           newID(),
		TenantID:     tenantID,
		Name:         norm.Name,
		Version:      norm.Version,
		Capabilities: norm.Capabilities,
		Endpoint:     norm.Endpoint,
		Labels:       norm.Labels,
		Metadata:     norm.Metadata,
		Criticality:  norm.Criticality,
		Status:       StatusHealthy,
		HeartbeatAt:  now,
		CreatedAt:    now,
		UpdatedAt:    now,
		Revision:     1,
	}
	if err := s.store.CreateAgent(ctx, a); err != nil {
		if errs.Is(err, errs.Conflict) {
			return Agent{}, errs.Wrap(errs.Conflict, err, "an agent named %q already exists in this tenant", a.Name)
		}
		return Agent{}, fmt.Errorf("register agent %s: %w", a.Name, err)
	}
	return a, nil
}

// normalize validates in (Normalize) and checks its endpoint against tenantID's egress rules.
func (s *Service) normalize(tenantID string, in AgentInput) (AgentInput, error) {
	norm, err := in.Normalize()
	if err != nil {
		return AgentInput{}, err
	}
	if _, err := s.egress.ValidateEndpoint(tenantID, norm.Endpoint); err != nil {
		return AgentInput{}, errs.Field("body.endpoint", err.Error())
	}
	return norm, nil
}

// Get returns the tenant's agent with id, or an errs.NotFound.
func (s *Service) Get(ctx context.Context, tenantID, id string) (Agent, error) {
	a, err := s.read(ctx, tenantID, id)
	if err != nil {
		return Agent{}, err
	}
	return s.derived(a, s.clock()), nil
}

// read returns the stored agent, re-checking the tenant.
func (s *Service) read(ctx context.Context, tenantID, id string) (Agent, error) {
	if err := checkTenant(tenantID); err != nil {
		return Agent{}, err
	}
	if !ValidID(id) {
		return Agent{}, notFound()
	}
	a, err := s.store.AgentByID(ctx, tenantID, id)
	if err != nil {
		return Agent{}, fmt.Errorf("get agent %s: %w", id, err)
	}
	if a.TenantID != tenantID {
		return Agent{}, notFound()
	}
	return a, nil
}

// List returns one page of the tenant's agents matching f, in registration order. Bad filter
// fields are one errs.Invalid naming each ("query.limit", "query.capability", "query.status",
// "query.cursor").
func (s *Service) List(ctx context.Context, tenantID string, f Filter) (Page, error) {
	if err := checkTenant(tenantID); err != nil {
		return Page{}, err
	}
	limit, after, err := f.validate()
	if err != nil {
		return Page{}, err
	}
	now := s.clock()
	// Reading one more than asked tells whether another page follows; with in-memory filters,
	// larger batches save round trips.
	batch := limit + 1
	if len(f.Selector) > 0 || len(f.Status) > 0 {
		batch = max(batch, filteredBatch)
	}
	var page Page
	scanned := 0
	for {
		as, err := s.store.ListAgents(ctx, tenantID, ListQuery{Capability: f.Capability, After: after, Limit: batch})
		if err != nil {
			return Page{}, fmt.Errorf("list agents: %w", err)
		}
		for _, a := range as {
			c := CursorOf(a)
			after = &c
			if a.TenantID != tenantID {
				continue
			}
			a = s.derived(a, now)
			if !f.matches(a) {
				continue
			}
			if len(page.Agents) == limit {
				page.NextCursor = EncodeCursor(CursorOf(page.Agents[limit-1]))
				return page, nil
			}
			page.Agents = append(page.Agents, a)
		}
		if len(as) < batch {
			return page, nil
		}
		if scanned += len(as); scanned >= MaxListScan {
			page.NextCursor = EncodeCursor(*after)
			return page, nil
		}
	}
}

func (f Filter) validate() (int, *Cursor, error) {
	var fe fieldErrors
	limit := f.Limit
	switch {
	case limit < 0 || limit > MaxLimit:
		fe.add("query.limit", fmt.Sprintf("must be between 1 and %d", MaxLimit))
	case limit == 0:
		limit = DefaultLimit
	}
	if f.Capability != "" && !ValidCapabilityName(f.Capability) {
		fe.add("query.capability", "must be a capability name")
	}
	for _, st := range f.Status {
		if !st.Valid() {
			fe.add("query.status", "must be healthy, stale or zombie")
			break
		}
	}
	var after *Cursor
	if f.Cursor != "" {
		c, err := DecodeCursor(f.Cursor)
		if e := errs.As(err); e != nil {
			fe = append(fe, e.Fields...)
		} else {
			after = &c
		}
	}
	return limit, after, fe.err()
}

func (f Filter) matches(a Agent) bool {
	if f.Capability != "" && !a.HasCapability(f.Capability) {
		return false
	}
	if len(f.Status) > 0 && !slices.Contains(f.Status, a.Status) {
		return false
	}
	return f.Selector.Matches(a.Labels)
}

// Update replaces the registration of the tenant's agent with in. ifMatch is the request's
// If-Match value and is required (see CheckIfMatch). An unchanged registration writes nothing
// and reports Changed == false. A name taken in the tenant is an errs.Conflict; a stale ifMatch,
// or a change that lands between the check and the write, an errs.Conflict wrapping
// ErrPreconditionFailed.
func (s *Service) Update(ctx context.Context, tenantID, id, ifMatch string, in AgentInput) (Change, error) {
	if err := checkTenant(tenantID); err != nil {
		return Change{}, err
	}
	if !ValidID(id) {
		return Change{}, notFound()
	}
	if strings.Trim(ifMatch, " \t") == "" {
		return Change{}, preconditionRequired()
	}
	norm, err := s.normalize(tenantID, in)
	if err != nil {
		return Change{}, err
	}
	cur, err := s.read(ctx, tenantID, id)
	if err != nil {
		return Change{}, err
	}
	if err := CheckIfMatch(ifMatch, cur); err != nil {
		return Change{}, err
	}
	now := s.clock()
	before := s.derived(cur, now)
	if sameRegistration(cur.Input(), norm) {
		return Change{Before: before, After: before}, nil
	}
	after := cur
	after.Name = norm.Name
	after.Version = norm.Version
	after.Capabilities = norm.Capabilities
	after.Endpoint = norm.Endpoint
	after.Labels = norm.Labels
	after.Metadata = norm.Metadata
	after.Criticality = norm.Criticality
	after.UpdatedAt = now
	after.Revision = cur.Revision + 1
	if err := s.store.UpdateAgent(ctx, after, cur.Revision); err != nil {
		switch {
		case errors.Is(err, ErrPreconditionFailed):
			return Change{}, errs.Wrap(errs.PreconditionFailed, err, "the agent was changed since it was read; get it again and retry")
		case errs.Is(err, errs.Conflict):
			return Change{}, errs.Wrap(errs.Conflict, err, "an agent named %q already exists in this tenant", after.Name)
		}
		return Change{}, fmt.Errorf("update agent %s: %w", id, err)
	}
	return Change{Before: before, After: s.derived(after, now), Changed: true}, nil
}

// sameRegistration compares two registrations as JSON, which ignores what JSON does not carry:
// map order, number spelling, white space inside schemas.
func sameRegistration(a, b AgentInput) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// Delete deletes the tenant's agent and returns it as it was. ifMatch is optional; when given it
// must match (see CheckIfMatch). Without it, a change landing between the read and the delete is
// retried, so the returned agent is exactly what was deleted.
func (s *Service) Delete(ctx context.Context, tenantID, id, ifMatch string) (Agent, error) {
	var lastErr error
	for range deleteAttempts {
		cur, err := s.read(ctx, tenantID, id)
		if err != nil {
			return Agent{}, err
		}
		if ifMatch != "" {
			if err := CheckIfMatch(ifMatch, cur); err != nil {
				return Agent{}, err
			}
		}
		err = s.store.DeleteAgent(ctx, tenantID, id, cur.Revision)
		if err == nil {
			return s.derived(cur, s.clock()), nil
		}
		if !errors.Is(err, ErrPreconditionFailed) {
			return Agent{}, fmt.Errorf("delete agent %s: %w", id, err)
		}
		if ifMatch != "" {
			return Agent{}, errs.Wrap(errs.PreconditionFailed, err, "the agent was changed since it was read; get it again and retry")
		}
		// Without If-Match the caller set no precondition: losing every retry is a conflict.
		lastErr = errs.Wrap(errs.Conflict, err, "the agent kept changing while it was being deleted; retry")
	}
	return Agent{}, lastErr
}

// Heartbeat records a heartbeat of the tenant's agent with the load it reported, and returns
// what the agent.heartbeat and, when the stored status changed, agent.status_changed events need.
func (s *Service) Heartbeat(ctx context.Context, tenantID, id string, in HeartbeatInput) (HeartbeatResult, error) {
	if err := checkTenant(tenantID); err != nil {
		return HeartbeatResult{}, err
	}
	if !ValidID(id) {
		return HeartbeatResult{}, notFound()
	}
	if err := in.Validate(); err != nil {
		return HeartbeatResult{}, err
	}
	at := s.clock()
	load := in.Load()
	prev, err := s.store.Heartbeat(ctx, tenantID, id, at, load)
	if err != nil {
		return HeartbeatResult{}, fmt.Errorf("heartbeat of agent %s: %w", id, err)
	}
	return HeartbeatResult{
		TenantID: tenantID,
		AgentID:  id,
		At:       at,
		Load:     load,
		Previous: prev,
		Current:  StatusHealthy,
	}, nil
}

// Routable returns the tenant's agents that work for capability may be routed to now (see the
// package function Routable), in registration order: never a zombie, never a suspended tenant's.
func (s *Service) Routable(ctx context.Context, tenantID, capability string) ([]Agent, error) {
	if err := checkTenant(tenantID); err != nil {
		return nil, err
	}
	if !ValidCapabilityName(capability) {
		return nil, errs.Field("path.capability", "must be a capability name")
	}
	now := s.clock()
	cands, err := s.store.RoutingCandidates(ctx, tenantID, capability, now.Add(-s.ttl.Zombie), s.maxRoutable)
	if err != nil {
		return nil, fmt.Errorf("routing candidates for %s: %w", capability, err)
	}
	out := []Agent{}
	for _, c := range cands {
		a := c.Agent
		if a.TenantID != tenantID || !a.HasCapability(capability) || !Routable(a, c.TenantStatus, now, s.ttl) {
			continue
		}
		out = append(out, s.derived(a, now))
	}
	slices.SortFunc(out, func(a, b Agent) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Sweep stores the status changes heartbeat age has caused since the last sweep, for at most
// limit agents of any tenant, and returns the changes it stored (one agent.status_changed event
// each). A change that a concurrent heartbeat superseded is not stored and not returned. The
// kernel calls it periodically inside one transaction with the events.
func (s *Service) Sweep(ctx context.Context, limit int) ([]StatusChange, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("sweep agents: limit must be positive, got %d", limit)
	}
	now := s.clock()
	agents, err := s.store.SweepCandidates(ctx, now.Add(-s.ttl.Stale), now.Add(-s.ttl.Zombie), limit)
	if err != nil {
		return nil, fmt.Errorf("sweep agents: %w", err)
	}
	var applied []StatusChange
	for _, c := range Sweep(agents, now, s.ttl) {
		ok, err := s.store.SetAgentStatus(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("sweep agent %s: %w", c.AgentID, err)
		}
		if ok {
			applied = append(applied, c)
		}
	}
	return applied, nil
}

// checkTenant refuses a missing or malformed tenant: the caller must name one (the principal's,
// or the one a SUPER_ADMIN chose).
func checkTenant(id string) error {
	if !tenant.ValidID(id) {
		return errs.New(errs.Invalid, "a valid tenant is required")
	}
	return nil
}

// notFound does not echo the id: it may be any string a client put in a URL.
func notFound() error { return errs.New(errs.NotFound, "agent not found") }
