package routing

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/etag"
	"github.com/nops-kernel/nops/internal/registry"
)

// Limits of a route's fields.
const (
	MaxTargets         = 64
	MaxWeight          = 10000
	MaxPriority        = 15     // fallback tiers 1..15 after the primary tier 0
	MaxTimeoutMs       = 600000 // ten minutes
	MaxHedgeExtra      = 2      // further attempts a hedge may send
	MaxStickyHeaderLen = 128
)

// Target is one entry of a route: an agent, or the agents of a version, with a weight and a tier.
// Exactly one of AgentID and Version is set. The JSON form is what the stores keep.
type Target struct {
	AgentID string `json:"agent_id,omitempty"`
	// Version is an exact semantic version, canonical ("1.2.3", without "v" or build metadata),
	// or a prefix at a dot boundary ("1", "1.2") matching 1.x.y / 1.2.y.
	Version string `json:"version,omitempty"`
	// Weight is the target's share of its tier, 0..MaxWeight; 0 drains it (it receives nothing).
	Weight int `json:"weight"`
	// Priority is the tier: 0 primary, 1, 2, … fallbacks tried in order only when no agent of a
	// better tier is available.
	Priority int `json:"priority"`
}

// Hedge turns on hedged requests for a capability: when an attempt has had no response after
// DelayMs, up to MaxExtra (1..MaxHedgeExtra) more attempts go to other agents and the first
// response wins. Only calls that may be sent twice (retryable, or with an Idempotency-Key) should
// be hedged; the invoke path decides.
type Hedge struct {
	DelayMs  int `json:"delay_ms"`
	MaxExtra int `json:"max_extra"`
}

// Spec is what a client puts for a route: everything but its key and bookkeeping.
type Spec struct {
	Targets []Target
	// StickyHeader names the request header whose value is the sticky key: calls with the same
	// value go to the same agent while it stays available. "" turns sticky routing off. Stored
	// in canonical form ("X-Session-Id").
	StickyHeader string
	TimeoutMs    int  // per-call timeout, 0 for the kernel's default
	Retryable    bool // calls may be retried without an Idempotency-Key: the agent declared them idempotent
	Hedge        *Hedge
}

// Route is the routing table of one capability in one tenant.
type Route struct {
	TenantID     string
	Capability   string
	Targets      []Target // 1..MaxTargets, as validated by Spec.Normalize
	StickyHeader string
	TimeoutMs    int
	Retryable    bool
	Hedge        *Hedge
	Revision     int64     // 1 at creation, +1 on every change; guards writes (compare-and-set)
	CreatedAt    time.Time // UTC, microsecond precision
	UpdatedAt    time.Time
}

// Spec returns the client-owned part of r (sharing nothing with r).
func (r Route) Spec() Spec {
	s := Spec{Targets: slices.Clone(r.Targets), StickyHeader: r.StickyHeader, TimeoutMs: r.TimeoutMs, Retryable: r.Retryable}
	if r.Hedge != nil {
		h := *r.Hedge
		s.Hedge = &h
	}
	return s
}

// Timeout returns the per-call timeout, 0 when the kernel's default applies.
func (r Route) Timeout() time.Duration { return time.Duration(r.TimeoutMs) * time.Millisecond }

// with returns r carrying spec's fields.
func (r Route) with(spec Spec) Route {
	s := spec.clone()
	r.Targets, r.StickyHeader, r.TimeoutMs, r.Retryable, r.Hedge = s.Targets, s.StickyHeader, s.TimeoutMs, s.Retryable, s.Hedge
	return r
}

func (s Spec) clone() Spec {
	s.Targets = slices.Clone(s.Targets)
	if s.Hedge != nil {
		h := *s.Hedge
		s.Hedge = &h
	}
	return s
}

// equal reports whether two normalized specs are the same.
func (s Spec) equal(o Spec) bool {
	sameHedge := (s.Hedge == nil) == (o.Hedge == nil) && (s.Hedge == nil || *s.Hedge == *o.Hedge)
	return slices.Equal(s.Targets, o.Targets) && s.StickyHeader == o.StickyHeader && s.TimeoutMs == o.TimeoutMs &&
		s.Retryable == o.Retryable && sameHedge
}

// ETag returns the strong entity tag of r's current revision, quoted as HTTP wants it. It derives
// from the key, the creation time and the revision, so it is opaque, the same on every replica,
// and a route deleted and created again (revision 1 again) does not get its predecessor's tag.
func (r Route) ETag() string {
	return etag.New("route", r.TenantID, r.Capability, strconv.FormatInt(r.CreatedAt.UnixMicro(), 10), strconv.FormatInt(r.Revision, 10))
}

// ErrRevisionConflict is wrapped by every error that means "the route changed since the caller
// read it": a precondition that failed (inside an errs.PreconditionFailed) or a compare-and-set
// write that lost, a create included (stores return it inside an errs.Conflict).
var ErrRevisionConflict = errors.New("route revision changed")

// Preconditions are a write's conditional request headers (RFC 9110 §13.1); empty fields set no
// condition.
type Preconditions struct {
	IfMatch     string // "*" (the route must exist) or a list of entity tags, one of which must be current
	IfNoneMatch string // "*" (the route must not exist) or a list of tags none of which may be current
}

// Check evaluates p against the current route, nil when there is none. A failed condition is an
// errs.PreconditionFailed wrapping ErrRevisionConflict; an overlong value an errs.Field naming the
// header. Weak tags never match (If-Match compares strongly; this kernel issues strong tags only).
func (p Preconditions) Check(cur *Route) error {
	if err := checkCondition("header.If-Match", p.IfMatch, cur, true); err != nil {
		return err
	}
	return checkCondition("header.If-None-Match", p.IfNoneMatch, cur, false)
}

func checkCondition(field, header string, cur *Route, mustMatch bool) error {
	if etag.Empty(header) {
		return nil
	}
	current := ""
	if cur != nil {
		current = cur.ETag()
	}
	matched, err := etag.Match(field, header, current)
	if err != nil {
		return err
	}
	if matched == mustMatch {
		return nil
	}
	if cur == nil {
		return errs.Wrap(errs.PreconditionFailed, ErrRevisionConflict, "the route does not exist (it may have been deleted); get it again and retry")
	}
	if mustMatch {
		return errs.Wrap(errs.PreconditionFailed, ErrRevisionConflict, "the route was changed since it was read; get it again and retry")
	}
	return errs.Wrap(errs.PreconditionFailed, ErrRevisionConflict, "the route already exists")
}

// fieldErrors collects the offending fields of one input.
type fieldErrors []errs.FieldError

func (f *fieldErrors) add(name, reason string) {
	*f = append(*f, errs.FieldError{Name: name, Reason: reason})
}

func (f fieldErrors) err() error {
	if len(f) == 0 {
		return nil
	}
	return &errs.Error{Code: errs.Invalid, Message: "invalid route", Fields: f}
}

// Normalize validates s and returns it in canonical form: versions without "v" or build
// metadata, the sticky header canonical, nothing shared with s. The error is one errs.Invalid
// naming every offending field under "body." ("body.targets[1].weight").
func (s Spec) Normalize() (Spec, error) {
	var fe fieldErrors
	out := s.clone()
	switch {
	case len(s.Targets) == 0:
		fe.add("body.targets", "required: at least one target")
	case len(s.Targets) > MaxTargets:
		fe.add("body.targets", fmt.Sprintf("must hold at most %d targets", MaxTargets))
	default:
		seen := make(map[string]int, len(s.Targets))
		for i := range out.Targets {
			at := fmt.Sprintf("body.targets[%d]", i)
			key, ok := normalizeTarget(&fe, at, &out.Targets[i])
			if !ok {
				continue
			}
			if first, dup := seen[key]; dup {
				fe.add(at, fmt.Sprintf("duplicate of body.targets[%d]", first))
				continue
			}
			seen[key] = i
		}
	}
	if s.StickyHeader != "" {
		if reason := stickyHeaderProblem(s.StickyHeader); reason != "" {
			fe.add("body.sticky_header", reason)
		} else {
			out.StickyHeader = http.CanonicalHeaderKey(s.StickyHeader)
		}
	}
	if s.TimeoutMs < 0 || s.TimeoutMs > MaxTimeoutMs {
		fe.add("body.timeout_ms", fmt.Sprintf("must be between 1 and %d milliseconds, or 0 for the kernel's default", MaxTimeoutMs))
	}
	if h := s.Hedge; h != nil {
		switch {
		case h.DelayMs < 1 || h.DelayMs > MaxTimeoutMs:
			fe.add("body.hedge.delay_ms", fmt.Sprintf("must be between 1 and %d milliseconds", MaxTimeoutMs))
		case s.TimeoutMs > 0 && h.DelayMs >= s.TimeoutMs:
			fe.add("body.hedge.delay_ms", "must be less than body.timeout_ms, or the hedge would never be sent")
		}
		if h.MaxExtra < 1 || h.MaxExtra > MaxHedgeExtra {
			fe.add("body.hedge.max_extra", fmt.Sprintf("must be between 1 and %d", MaxHedgeExtra))
		}
	}
	if err := fe.err(); err != nil {
		return Spec{}, err
	}
	return out, nil
}

// normalizeTarget validates *t in place (canonical version) and returns the key duplicates are
// found by; ok is false when it was refused.
func normalizeTarget(fe *fieldErrors, at string, t *Target) (key string, ok bool) {
	n := len(*fe)
	switch {
	case t.AgentID != "" && t.Version != "":
		fe.add(at, "must name exactly one of agent_id and version, not both")
	case t.AgentID == "" && t.Version == "":
		fe.add(at, "must name exactly one of agent_id and version")
	case t.AgentID != "":
		if !registry.ValidID(t.AgentID) {
			fe.add(at+".agent_id", "must be an agent ID (agt_…)")
		}
		key = "agent\x00" + t.AgentID
	default:
		v, err := CanonicalTargetVersion(t.Version)
		if err != nil {
			fe.add(at+".version", err.Error())
		}
		t.Version = v
		key = "version\x00" + v
	}
	if t.Weight < 0 || t.Weight > MaxWeight {
		fe.add(at+".weight", fmt.Sprintf("must be between 0 (drained) and %d", MaxWeight))
	}
	if t.Priority < 0 || t.Priority > MaxPriority {
		fe.add(at+".priority", fmt.Sprintf("must be between 0 (primary) and %d", MaxPriority))
	}
	return key, len(*fe) == n
}

// CanonicalTargetVersion validates the version of a target and returns its canonical form: an
// exact semantic version as registry.CanonicalVersion gives it, or a version prefix at a dot
// boundary ("1", "1.2", with an optional "v") without the "v".
func CanonicalTargetVersion(v string) (string, error) {
	if len(v) > registry.MaxVersionLen {
		return "", fmt.Errorf("must be at most %d characters", registry.MaxVersionLen)
	}
	if p := strings.TrimPrefix(v, "v"); isVersionPrefix(p) {
		return p, nil
	}
	c, err := registry.CanonicalVersion(v)
	if err != nil {
		return "", errors.New("must be a semantic version (1.2.3) or a prefix of one at a dot boundary (1 or 1.2)")
	}
	return c, nil
}

// isVersionPrefix reports whether s is MAJOR or MAJOR.MINOR: numeric identifiers without leading
// zeros, as semantic versions have.
func isVersionPrefix(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) > 2 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 1 && p[0] == '0' {
			return false
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
		}
	}
	return true
}

// credentialHeaders may not be sticky headers: a credential would become a routing key, and the
// invoke path would read, hash and perhaps log a secret for it.
var credentialHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "Signature", "Signature-Input"}

// stickyHeaderProblem checks a sticky header name; "" when it is acceptable.
func stickyHeaderProblem(name string) string {
	switch {
	case len(name) > MaxStickyHeaderLen:
		return fmt.Sprintf("must be at most %d characters", MaxStickyHeaderLen)
	case !isToken(name):
		return "must be a header name (letters, digits and !#$%&'*+-.^_`|~)"
	}
	canon := http.CanonicalHeaderKey(name)
	if slices.Contains(credentialHeaders, canon) {
		return "must not be a credential header (" + strings.Join(credentialHeaders, ", ") + ")"
	}
	if canon == "Host" {
		return "must not be Host, which is not a request header field once received"
	}
	return ""
}

// isToken reports whether s is an RFC 9110 token: one or more tchar.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
