package apikey

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"golang.org/x/crypto/blake2b"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/pagecursor"
	"github.com/nops-kernel/nops/internal/principal"
)

const (
	// DefaultGrace is how long a rotated-out secret keeps working when Rotate is given 0.
	DefaultGrace = 24 * time.Hour
	// MaxGrace is the longest grace period Rotate accepts.
	MaxGrace = 30 * 24 * time.Hour
	// DefaultListLimit and MaxListLimit bound a page of List.
	DefaultListLimit = 50
	MaxListLimit     = 100
)

// UsageSink is told of every successful verification; *UsageRecorder implements it. Record
// must not block on I/O: it runs on the request path.
type UsageSink interface {
	Record(id string, at time.Time)
}

// Options are Service's optional settings; the zero value works.
type Options struct {
	Usage        UsageSink     // nil: last use is not recorded
	DefaultGrace time.Duration // grace of Rotate(…, 0); 0: DefaultGrace
	// CacheTTL is how long Verify serves a key it verified from memory, without reading the
	// store or computing digests again, when the same raw key comes back: 0 means
	// DefaultCacheTTL, a negative value turns the cache off, at most MaxCacheTTL. Revoke and
	// Rotate through this Service take effect at once; a revocation or rotation made by another
	// replica, or in the database, within CacheTTL. Expiry and the end of a rotation's grace are
	// checked against the clock on every hit.
	CacheTTL  time.Duration
	CacheSize int // keys cached at most; 0: DefaultCacheSize
	// Redigest is told of keys that verified under an older pepper, with a digest made under
	// the current one (redigest.go); nil: keys keep the digest they have.
	Redigest RedigestSink
}

// Service creates, verifies, rotates and revokes API keys. Create it with NewService.
type Service struct {
	store        Store
	peppers      *pepperHolder // replaced whole by SetPeppers
	redigest     RedigestSink
	now          func() time.Time
	logger       *slog.Logger
	usage        UsageSink
	defaultGrace time.Duration
	// dummy is compared against when there is no real digest, so every well-formed key costs the
	// same two digests.
	dummy []byte
	// digest is Pepper.digest; tests wrap it to count the digests each path computes.
	digest func(p Pepper, id, secret string) []byte
	cache  *verifiedCache // nil: off
}

// NewService returns a Service. now is the clock (nil: time.Now); a nil logger discards logs.
// peppers must hold at least the current pepper.
func NewService(store Store, peppers Peppers, now func() time.Time, logger *slog.Logger, opts Options) (*Service, error) {
	if store == nil {
		return nil, errors.New("new api key service: nil store")
	}
	if len(peppers.byVersion) == 0 {
		return nil, fmt.Errorf("new api key service: %w", errNoPeppers)
	}
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.DefaultGrace == 0 {
		opts.DefaultGrace = DefaultGrace
	}
	if opts.DefaultGrace < 0 || opts.DefaultGrace > MaxGrace {
		return nil, fmt.Errorf("new api key service: default grace %s outside 0..%s", opts.DefaultGrace, MaxGrace)
	}
	if opts.CacheTTL == 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.CacheTTL > MaxCacheTTL {
		return nil, fmt.Errorf("new api key service: cache ttl %s above %s", opts.CacheTTL, MaxCacheTTL)
	}
	if opts.CacheSize < 0 {
		return nil, fmt.Errorf("new api key service: negative cache size %d", opts.CacheSize)
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	return &Service{
		store: store, peppers: newPepperHolder(peppers), redigest: opts.Redigest, now: now, logger: logger, usage: opts.Usage,
		defaultGrace: opts.DefaultGrace, dummy: make([]byte, blake2b.Size256), digest: Pepper.digest,
		cache: newVerifiedCache(opts.CacheTTL, opts.CacheSize),
	}, nil
}

// clock returns the time in UTC at the microsecond, the precision both SQL stores keep, so a Key
// returned here equals the Key read back.
func (s *Service) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

// caller returns the principal acting, which every management operation needs.
func caller(ctx context.Context) (principal.Principal, error) {
	p, ok := principal.FromContext(ctx)
	if !ok || p.Subject == "" {
		return principal.Principal{}, errs.New(errs.Unauthenticated, "authentication required")
	}
	return p, nil
}

func errKeyNotFound(cause error) error { return errs.Wrap(errs.NotFound, cause, "api key not found") }

// Create makes a key as in asks and returns it with its raw key "nops_<keyid>_<secret>". The raw
// key exists only in this return value: it is neither stored nor logged, and cannot be shown
// again.
func (s *Service) Create(ctx context.Context, in CreateInput) (Key, string, error) {
	p, err := caller(ctx)
	if err != nil {
		return Key{}, "", err
	}
	now := s.clock()
	in, err = in.validate(p, now)
	if err != nil {
		return Key{}, "", err
	}
	id, err := newID(now)
	if err != nil {
		return Key{}, "", err
	}
	secret, err := newSecret()
	if err != nil {
		return Key{}, "", err
	}
	pep := s.peppers.Current()
	k := Key{
		ID: id, TenantID: in.TenantID, AgentID: in.AgentID, Name: in.Name, Role: in.Role,
		Scopes: in.Scopes, CreatedBy: p.Subject,
		Hash: s.digest(pep, id, secret), PepperVersion: pep.Version,
		CreatedAt: now, ExpiresAt: in.ExpiresAt,
	}
	if err := s.store.CreateAPIKey(ctx, k); err != nil {
		return Key{}, "", fmt.Errorf("create api key %s: %w", id, err)
	}
	s.logger.InfoContext(ctx, "api key created", "key", k, "by", p.Subject)
	return k, format(id, secret), nil
}

// Get returns the key with id if the caller may see it; any other is errs.NotFound.
func (s *Service) Get(ctx context.Context, id string) (Key, error) {
	p, err := caller(ctx)
	if err != nil {
		return Key{}, err
	}
	return s.get(ctx, p, id)
}

func (s *Service) get(ctx context.Context, p principal.Principal, id string) (Key, error) {
	if !ValidID(id) {
		return Key{}, errKeyNotFound(errors.New("malformed key id"))
	}
	k, err := s.store.APIKey(ctx, id)
	switch {
	case errs.Is(err, errs.NotFound):
		return Key{}, errKeyNotFound(err)
	case err != nil:
		return Key{}, fmt.Errorf("get api key %s: %w", id, err)
	case p.Tenant != "" && k.TenantID != p.Tenant:
		// Another tenant's key does not exist for this caller.
		return Key{}, errKeyNotFound(fmt.Errorf("key %s belongs to another tenant", id))
	}
	return k, nil
}

// ListInput selects a page of keys. TenantID is as in CreateInput; Cursor is the NextCursor of
// the previous page ("" for the first); Limit is 1..MaxListLimit (0: DefaultListLimit).
type ListInput struct {
	TenantID string
	Cursor   string
	Limit    int
}

// Page is one page of keys in ascending ID (creation) order. NextCursor is "" on the last page.
type Page struct {
	Keys       []Key
	NextCursor string
}

// List returns a page of the keys of the caller's tenant (or of the tenant a principal above
// tenants names).
func (s *Service) List(ctx context.Context, in ListInput) (Page, error) {
	p, err := caller(ctx)
	if err != nil {
		return Page{}, err
	}
	tenant := in.TenantID
	switch {
	case p.Tenant == "" && tenant == "":
		return Page{}, errs.Field("query.tenant", "required when the caller is above tenants")
	case p.Tenant != "" && tenant != "" && tenant != p.Tenant:
		return Page{}, errs.New(errs.NotFound, "tenant not found")
	case p.Tenant != "":
		tenant = p.Tenant
	}
	if !validRef(tenant) {
		return Page{}, errs.Field("query.tenant", fmt.Sprintf("must be 1..%d characters of [A-Za-z0-9_-]", maxRefLen))
	}
	if in.Cursor != "" && !ValidID(in.Cursor) {
		return Page{}, errs.Field("query.cursor", "not a cursor returned by this API")
	}
	limit, err := pagecursor.Limit(in.Limit, DefaultListLimit, MaxListLimit)
	if err != nil {
		return Page{}, err
	}
	// One more than asked tells whether a next page exists without a second query.
	keys, err := s.store.ListAPIKeys(ctx, tenant, in.Cursor, limit+1)
	if err != nil {
		return Page{}, fmt.Errorf("list api keys of %s: %w", tenant, err)
	}
	var page Page
	if len(keys) > limit {
		keys = keys[:limit]
		page.NextCursor = keys[limit-1].ID
	}
	page.Keys = keys
	return page, nil
}

// Verify checks a raw key and returns the key it names. Every refusal is the same
// errs.Unauthenticated error (see the package documentation); a failing store is returned as is.
func (s *Service) Verify(ctx context.Context, raw string) (Key, error) {
	id, secret, err := Parse(raw)
	if err != nil {
		s.logger.InfoContext(ctx, "api key refused", "reason", "malformed")
		return Key{}, err
	}
	var epoch uint64
	if s.cache != nil {
		e, hit, ep := s.cache.get(id, raw, s.now())
		if hit {
			return s.verifiedAgain(ctx, e)
		}
		epoch = ep
	}
	k, err := s.store.APIKey(ctx, id)
	if errs.Is(err, errs.NotFound) {
		// Spend what a known key costs, so the time taken does not tell the ID is unknown.
		cur := s.peppers.Current()
		_ = s.matches(cur, id, secret, s.dummy)
		_ = s.matches(cur, id, secret, s.dummy)
		return Key{}, s.refuse(ctx, id, "unknown_id")
	}
	if err != nil {
		return Key{}, fmt.Errorf("verify api key %s: %w", id, err)
	}
	now := s.clock()
	currentOK, pepperKnown := s.matchCurrent(k, id, secret)
	previousOK := s.matchPrevious(k, id, secret)
	switch {
	case !currentOK && !previousOK && !pepperKnown:
		s.logger.ErrorContext(ctx, "api key hashed with a pepper that is not configured", "key", k)
		return Key{}, s.refuse(ctx, id, "unknown_pepper")
	case !currentOK && !previousOK:
		return Key{}, s.refuse(ctx, id, "wrong_secret")
	case k.Revoked(now):
		return Key{}, s.refuse(ctx, id, "revoked")
	case k.Expired(now):
		return Key{}, s.refuse(ctx, id, "expired")
	case !currentOK && !now.Before(k.PrevValidUntil):
		return Key{}, s.refuse(ctx, id, "rotated_out")
	case k.RotationOverdue(now):
		return Key{}, s.refuse(ctx, id, "rotation_overdue")
	}
	if s.cache != nil {
		s.cache.put(raw, cloneForCaller(k), currentOK, s.now(), epoch)
	}
	s.redigestIfOlder(k, id, secret, currentOK)
	if s.usage != nil {
		s.usage.Record(k.ID, now)
	}
	return k, nil
}

// verifiedAgain accepts a raw key that verified within the cache's TTL, unless the key has
// since passed its revocation time, its expiry or, for a previous secret, its grace period.
func (s *Service) verifiedAgain(ctx context.Context, e verifiedEntry) (Key, error) {
	k, now := e.key, s.clock()
	switch {
	case k.Revoked(now):
		return Key{}, s.refuse(ctx, k.ID, "revoked")
	case k.Expired(now):
		return Key{}, s.refuse(ctx, k.ID, "expired")
	case !e.current && !now.Before(k.PrevValidUntil):
		return Key{}, s.refuse(ctx, k.ID, "rotated_out")
	case k.RotationOverdue(now):
		return Key{}, s.refuse(ctx, k.ID, "rotation_overdue")
	}
	if s.usage != nil {
		s.usage.Record(k.ID, now)
	}
	return cloneForCaller(k), nil
}

// matchCurrent compares secret with the current digest, and reports whether its pepper is known.
func (s *Service) matchCurrent(k Key, id, secret string) (ok, pepperKnown bool) {
	pep, known := s.peppers.Get(k.PepperVersion)
	want := k.Hash
	if !known {
		pep, want = s.peppers.Current(), s.dummy
	}
	return s.matches(pep, id, secret, want) && known, known
}

// matchPrevious compares secret with the previous digest; a key with none, or whose previous
// pepper is gone, is compared with the dummy so that the cost stays the same.
func (s *Service) matchPrevious(k Key, id, secret string) bool {
	pep, known := s.peppers.Get(k.PrevPepperVersion)
	has := known && len(k.PrevHash) > 0
	want := k.PrevHash
	if !has {
		pep, want = s.peppers.Current(), s.dummy
	}
	return s.matches(pep, id, secret, want) && has
}

// matches reports, in time independent of the content of both, whether the digest of id and
// secret under p equals want.
func (s *Service) matches(p Pepper, id, secret string, want []byte) bool {
	return subtle.ConstantTimeCompare(s.digest(p, id, secret), want) == 1
}

// refuse logs why a key was refused (never the secret) and returns the uniform error.
func (s *Service) refuse(ctx context.Context, id, reason string) error {
	s.logger.InfoContext(ctx, "api key refused", "reason", reason, "key_id", id)
	return errInvalid(fmt.Errorf("api key %s: %s", id, reason))
}

// Rotate gives the key a new secret and returns the key with its new raw key. The old secret keeps
// working until grace has passed (0: the service's default grace; at most MaxGrace); a secret
// rotated out earlier stops working at once, as only one previous secret is kept. A revoked or
// expired key cannot be rotated (errs.Conflict), nor can one that a concurrent rotation changed
// since it was read (errs.Conflict).
func (s *Service) Rotate(ctx context.Context, id string, grace time.Duration) (Key, string, error) {
	if grace == 0 {
		grace = s.defaultGrace
	}
	if grace < 0 || grace > MaxGrace {
		return Key{}, "", errs.Field("body.grace_period", fmt.Sprintf("must be between 0s and %s", MaxGrace))
	}
	p, err := caller(ctx)
	if err != nil {
		return Key{}, "", err
	}
	k, err := s.get(ctx, p, id)
	if err != nil {
		return Key{}, "", err
	}
	now := s.clock()
	switch {
	case !k.RevokedAt.IsZero():
		return Key{}, "", errs.New(errs.Conflict, "api key is revoked")
	case k.Expired(now):
		return Key{}, "", errs.New(errs.Conflict, "api key has expired")
	}
	secret, err := newSecret()
	if err != nil {
		return Key{}, "", err
	}
	pep := s.peppers.Current()
	r := Rotation{
		Hash: s.digest(pep, k.ID, secret), PepperVersion: pep.Version,
		PrevHash: k.Hash, PrevPepperVersion: k.PepperVersion, PrevValidUntil: now.Add(grace),
	}
	s.forget(k.ID)
	if err := s.store.RotateAPIKey(ctx, k.ID, k.Hash, r); err != nil {
		return Key{}, "", fmt.Errorf("rotate api key %s: %w", k.ID, err)
	}
	s.forget(k.ID)
	k.Hash, k.PepperVersion = r.Hash, r.PepperVersion
	k.PrevHash, k.PrevPepperVersion, k.PrevValidUntil = r.PrevHash, r.PrevPepperVersion, r.PrevValidUntil
	k.RotateBy = time.Time{} // a rotation meets any deadline set for it
	s.logger.InfoContext(ctx, "api key rotated", "key", k, "by", p.Subject, "previous_valid_until", r.PrevValidUntil)
	return k, format(k.ID, secret), nil
}

// Revoke revokes the key at once, current and previous secret alike, and returns it. Revoking a
// revoked key is an errs.Conflict.
func (s *Service) Revoke(ctx context.Context, id string) (Key, error) {
	p, err := caller(ctx)
	if err != nil {
		return Key{}, err
	}
	k, err := s.get(ctx, p, id)
	if err != nil {
		return Key{}, err
	}
	if !k.RevokedAt.IsZero() {
		return Key{}, errs.New(errs.Conflict, "api key is already revoked")
	}
	now := s.clock()
	s.forget(k.ID)
	if err := s.store.RevokeAPIKey(ctx, k.ID, now); err != nil {
		return Key{}, fmt.Errorf("revoke api key %s: %w", k.ID, err)
	}
	s.forget(k.ID)
	k.RevokedAt = now
	s.logger.InfoContext(ctx, "api key revoked", "key", k, "by", p.Subject)
	return k, nil
}

// MaxRotationDeadline bounds the deadline RequireRotation accepts.
const MaxRotationDeadline = 90 * 24 * time.Hour

// RequireRotation sets a deadline for rotating key id, deadline from now (0s: at once): until it
// the key works as before, and responses to requests it authenticates say when it must be rotated
// (the SDKs rotate on their own); from then on its secrets are refused until someone rotates it.
// An earlier deadline already set is kept. A revoked or expired key is an errs.Conflict. It
// returns the key as stored afterwards.
func (s *Service) RequireRotation(ctx context.Context, id string, deadline time.Duration) (Key, error) {
	if deadline < 0 || deadline > MaxRotationDeadline {
		return Key{}, errs.Field("body.deadline", fmt.Sprintf("must be between 0s and %s", MaxRotationDeadline))
	}
	p, err := caller(ctx)
	if err != nil {
		return Key{}, err
	}
	k, err := s.get(ctx, p, id)
	if err != nil {
		return Key{}, err
	}
	now := s.clock()
	switch {
	case !k.RevokedAt.IsZero():
		return Key{}, errs.New(errs.Conflict, "api key %s is revoked", id)
	case k.Expired(now):
		return Key{}, errs.New(errs.Conflict, "api key %s has expired", id)
	}
	s.forget(k.ID)
	if err := s.store.RequireAPIKeyRotation(ctx, k.ID, now.Add(deadline)); err != nil {
		return Key{}, fmt.Errorf("require rotation of api key %s: %w", k.ID, err)
	}
	s.forget(k.ID)
	if k, err = s.store.APIKey(ctx, k.ID); err != nil {
		return Key{}, fmt.Errorf("require rotation of api key %s: %w", id, err)
	}
	s.logger.InfoContext(ctx, "api key rotation required", "key", k, "by", p.Subject, "rotate_by", k.RotateBy)
	return cloneForCaller(k), nil
}

// DueInput selects a page of keys that expire or must be rotated within Within of now. TenantID
// is as in ListInput, except that a principal above tenants may leave it empty for every tenant.
type DueInput struct {
	TenantID string
	Within   time.Duration
	Cursor   string
	Limit    int
}

// MaxDueWindow bounds DueInput.Within.
const MaxDueWindow = 366 * 24 * time.Hour

// ListDue returns a page of keys, not revoked, that expire or must be rotated (RotateBy) within
// in.Within of now — the overdue and expired ones included — in ascending ID order.
func (s *Service) ListDue(ctx context.Context, in DueInput) (Page, error) {
	p, err := caller(ctx)
	if err != nil {
		return Page{}, err
	}
	if in.Within < 0 || in.Within > MaxDueWindow {
		return Page{}, errs.Field("query.within", fmt.Sprintf("must be between 0s and %s", MaxDueWindow))
	}
	tenant := in.TenantID
	switch {
	case p.Tenant != "" && tenant != "" && tenant != p.Tenant:
		return Page{}, errs.New(errs.NotFound, "tenant not found")
	case p.Tenant != "":
		tenant = p.Tenant
	}
	if tenant != "" && !validRef(tenant) {
		return Page{}, errs.Field("query.tenant", fmt.Sprintf("must be 1..%d characters of [A-Za-z0-9_-]", maxRefLen))
	}
	if in.Cursor != "" && !ValidID(in.Cursor) {
		return Page{}, errs.Field("query.cursor", "not a cursor returned by this API")
	}
	limit, err := pagecursor.Limit(in.Limit, DefaultListLimit, MaxListLimit)
	if err != nil {
		return Page{}, err
	}
	keys, err := s.store.ListAPIKeysDue(ctx, tenant, s.clock().Add(in.Within), in.Cursor, limit+1)
	if err != nil {
		return Page{}, fmt.Errorf("list api keys due: %w", err)
	}
	var page Page
	if len(keys) > limit {
		keys = keys[:limit]
		page.NextCursor = keys[limit-1].ID
	}
	for i := range keys {
		keys[i] = cloneForCaller(keys[i])
	}
	page.Keys = keys
	return page, nil
}

// forget drops id from the verified-key cache and keeps it out for the cache's TTL. Rotate and
// Revoke call it before their write and again after it: the write may belong to a transaction
// that commits later (internal/control), and until then a Verify still reads the old row.
func (s *Service) forget(id string) {
	if s.cache != nil {
		s.cache.forget(id, s.now())
	}
}

// cloneForCaller copies the slices of a cached key, so that a caller changing what it got does
// not change the cache.
func cloneForCaller(k Key) Key {
	k.Scopes = slices.Clone(k.Scopes)
	k.Hash = slices.Clone(k.Hash)
	k.PrevHash = slices.Clone(k.PrevHash)
	return k
}
