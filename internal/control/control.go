// Package control holds the kernel's audited use cases. Each mutation runs in ONE store
// transaction that changes a domain (tenant, registry, apikey), enqueues its CloudEvent in the
// outbox and appends its audit record, so the three commit or vanish together. Denials and
// authentication failures are audited here too. The HTTP API calls control, never a domain
// service's mutating method directly. Imported by internal/httpapi and internal/kernel.
//
// Concurrency: a Control is safe for concurrent use. The audit append is the last write of each
// transaction because it locks the audit tree head of its tenant (see internal/audit), which
// serialises the audited writes of one tenant; keeping it last keeps that lock short.
package control

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/chaos"
	"github.com/nops-kernel/nops/internal/events"
	"github.com/nops-kernel/nops/internal/flags"
	"github.com/nops-kernel/nops/internal/perimeter"
	"github.com/nops-kernel/nops/internal/policy"
	"github.com/nops-kernel/nops/internal/principal"
	"github.com/nops-kernel/nops/internal/ratelimit"
	"github.com/nops-kernel/nops/internal/registry"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/routing"
	"github.com/nops-kernel/nops/internal/tenant"
)

// Store is what control needs of the storage adapter beyond the domains' own stores.
type Store interface {
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
	audit.Appender
	events.OutboxWriter
}

// Options are Control's optional settings.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// Appended is told the new size of an audit tree after each commit (the checkpointer).
	Appended func(tree string, size int64)
	// Enqueued is called after a transaction that added events to the outbox committed (the
	// outbox relay's Notify, so events leave without waiting for its next poll). It must not block.
	Enqueued func()
	// HeartbeatBatch > 0 turns on group commit of heartbeats: up to that many queued heartbeats
	// share one transaction (one fsync), and each caller returns once the commit covering its
	// heartbeat is durable. RunHeartbeats must then be running.
	HeartbeatBatch int
	// OnStatusChange is told every agent status change after its transaction committed (the
	// nops_agent_status_changes_total metric). It must not block. Default: nothing.
	OnStatusChange func(tenantID, agentID string, to registry.Status)
}

// Control runs the audited use cases.
type Control struct {
	store   Store
	Tenants *tenant.Service
	Agents  *registry.Service
	Keys    *apikey.Service
	// The perimeter's managed state; the kernel sets these after New (nil: the feature is off).
	RateLimits  *ratelimit.Overrides // rate-limit overrides of the admin API
	RequestKeys *reqsig.Keys         // request-signing keys (RFC 9421)
	Policies    *policy.Service      // ABAC policies
	Perimeter   *perimeter.Service   // per-tenant perimeter settings
	Routes      *routing.Service     // routing tables of the invoke path
	SigningKeys SigningKeys          // token signing keys, rotated with an overlap (rotation.go)
	CA          CARotator            // the built-in identity CA, whose root rotates (rotation.go)
	Chaos       *chaos.Chaos         // this replica's fault injection (chaos.go); nil: off
	opts        Options
	beats       chan heartbeatReq // nil: every heartbeat commits alone

	// Feature flags (flags.go); the kernel sets them after New (nil: the feature is off).
	Flags *flags.Service
	// FlagsChanged is called after a committed flag change, before the write returns, so this
	// replica evaluates its own change at once (the others follow on the event). Nil: nothing.
	FlagsChanged func(ctx context.Context)
}

// New returns a Control over the domain services, which must use the same store.
func New(store Store, tenants *tenant.Service, agents *registry.Service, keys *apikey.Service, opts Options) *Control {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Appended == nil {
		opts.Appended = func(string, int64) {}
	}
	if opts.Enqueued == nil {
		opts.Enqueued = func() {}
	}
	if opts.OnStatusChange == nil {
		opts.OnStatusChange = func(string, string, registry.Status) {}
	}
	c := &Control{store: store, Tenants: tenants, Agents: agents, Keys: keys, opts: opts}
	if opts.HeartbeatBatch > 0 {
		c.beats = make(chan heartbeatReq, opts.HeartbeatBatch)
	}
	return c
}

// Request is what the audit trail records of the request behind an action.
type Request struct {
	IP        string
	RequestID string
	Digest    string // audit.DigestRequest of the body, "" when there was none
}

type requestKey struct{}

// WithRequest returns ctx carrying r, for the audit records of the actions it leads to.
func WithRequest(ctx context.Context, r Request) context.Context {
	return context.WithValue(ctx, requestKey{}, r)
}

func requestFrom(ctx context.Context) Request {
	r, _ := ctx.Value(requestKey{}).(Request)
	return r
}

// SystemActor names the kernel itself in audit records of actions no request caused (the status
// sweeper).
const SystemActor = "system"

// outcome is what a mutation tells mutate: what to audit and which event to publish.
type outcome struct {
	tenant   string // whose tree records it; "" for the global tree
	action   string
	resource string
	reason   string
	event    events.Payload // nil: no event
}

// mutate runs fn and the bookkeeping of its outcome in one transaction.
func (c *Control) mutate(ctx context.Context, fn func(ctx context.Context) (outcome, error)) error {
	var (
		appended audit.Record
		enqueued bool
	)
	err := c.store.InTx(ctx, func(ctx context.Context) error {
		o, err := fn(ctx)
		if err != nil {
			return err
		}
		enqueued = o.event != nil
		if o.event != nil {
			if err := c.enqueue(ctx, o.event); err != nil {
				return err
			}
		}
		if o.reason == "" {
			o.reason = "allowed"
		}
		appended, err = audit.Append(ctx, c.store, c.record(ctx, o.tenant, o.action, o.resource, true, o.reason))
		if err != nil {
			return fmt.Errorf("audit %s: %w", o.action, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.opts.Appended(appended.Tree, appended.Seq+1)
	if enqueued {
		c.opts.Enqueued()
	}
	return nil
}

func (c *Control) enqueue(ctx context.Context, p events.Payload) error {
	ev, err := events.New(p.EventType(), p.EventTenant(), p.EventSubject(), p, c.opts.Now(), traceparent(ctx))
	if err != nil {
		return fmt.Errorf("build event %s: %w", p.EventType(), err)
	}
	rec, err := ev.Outbox()
	if err != nil {
		return fmt.Errorf("outbox record for %s: %w", p.EventType(), err)
	}
	if err := c.store.AddToOutbox(ctx, rec); err != nil {
		return fmt.Errorf("enqueue %s: %w", p.EventType(), err)
	}
	return nil
}

func (c *Control) record(ctx context.Context, tenantID, action, resource string, allowed bool, reason string) audit.Record {
	req := requestFrom(ctx)
	// The actor is the authenticated principal; empty for a request that has none (a refused
	// credential), and SystemActor for the kernel's own work, which has no request.
	actor := SystemActor
	if p, ok := principal.FromContext(ctx); ok {
		actor = p.Subject
	} else if req.RequestID != "" {
		actor = ""
	}
	return audit.Record{
		Tree:          audit.TreeFor(tenantID),
		Time:          c.opts.Now().UTC(),
		Actor:         audit.Actor{Principal: actor, IP: req.IP, RequestID: req.RequestID},
		Action:        action,
		Resource:      resource,
		Decision:      audit.Decision{Allowed: allowed, Reason: reason},
		RequestDigest: req.Digest,
	}
}

// Deny records a refused request: an authentication failure (principal unknown, tenant "") or
// an authorization denial. It is its own transaction, since nothing else changes.
func (c *Control) Deny(ctx context.Context, tenantID, action, resource, reason string) error {
	var appended audit.Record
	err := c.store.InTx(ctx, func(ctx context.Context) error {
		var err error
		appended, err = audit.Append(ctx, c.store, c.record(ctx, tenantID, action, resource, false, reason))
		return err
	})
	if err != nil {
		return fmt.Errorf("audit denial of %s: %w", action, err)
	}
	c.opts.Appended(appended.Tree, appended.Seq+1)
	return nil
}

// Allow records an allowed action of the kernel's own that changes nothing in the store (a new
// egress allow-list loaded); its own transaction.
func (c *Control) Allow(ctx context.Context, tenantID, action, resource, reason string) error {
	var appended audit.Record
	err := c.store.InTx(ctx, func(ctx context.Context) error {
		var err error
		appended, err = audit.Append(ctx, c.store, c.record(ctx, tenantID, action, resource, true, reason))
		return err
	})
	if err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	c.opts.Appended(appended.Tree, appended.Seq+1)
	return nil
}

// traceparent renders the span in ctx as a W3C traceparent for the event's distributed-tracing
// extension, "" without a valid span.
func traceparent(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}

// appendOnly appends an allowed record inside the caller's transaction.
func (c *Control) appendOnly(ctx context.Context, tenantID, action, resource, reason string) error {
	if _, err := audit.Append(ctx, c.store, c.record(ctx, tenantID, action, resource, true, reason)); err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	return nil
}

// notifyTree tells the checkpointer a tree grew, reading its size after the commit.
func (c *Control) notifyTree(ctx context.Context, tenantID string) {
	tree := audit.TreeFor(tenantID)
	size, err := c.store.TreeSize(ctx, tree)
	if err != nil {
		c.opts.Logger.WarnContext(ctx, "read audit tree size", "tree", tree, "error", err)
		return
	}
	c.opts.Appended(tree, size)
}
