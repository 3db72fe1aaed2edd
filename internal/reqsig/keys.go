package reqsig

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/pagecursor"
	"github.com/nops-kernel/nops/internal/principal"
)

// Sealer encrypts HMAC secrets at rest; *sealbox.Box implements it. aad is the key ID, so a
// sealed secret copied onto another key's row does not open there.
type Sealer interface {
	Seal(plaintext, aad []byte) ([]byte, error)
	Open(sealed, aad []byte) ([]byte, error)
}

// Cache limits of Lookup.
const (
	// MaxCacheTTL is the longest a looked-up key may be served from memory: a revocation or
	// rotation made by another replica takes effect here at most this late.
	MaxCacheTTL = 5 * time.Second
	// DefaultCacheSize bounds the cached keys when KeysOptions.CacheSize is 0.
	DefaultCacheSize = 10000
)

// KeysOptions are the optional settings of Keys; the zero value works (no cache).
type KeysOptions struct {
	Now          func() time.Time // nil: time.Now
	Logger       *slog.Logger     // nil: discard
	DefaultGrace time.Duration    // grace of a rotation asking for 0; 0: DefaultGrace
	// CacheTTL > 0 keeps looked-up keys in memory that long (at most MaxCacheTTL). Rotations and
	// revocations through this Keys (and Invalidate) drop the entry at once; those made by
	// another replica are seen after at most CacheTTL.
	CacheTTL  time.Duration
	CacheSize int // entries at most; 0: DefaultCacheSize
}

// Keys creates, rotates, revokes, lists and looks up request keys. Create it with NewKeys.
type Keys struct {
	store        Store
	sealer       Sealer
	now          func() time.Time
	logger       *slog.Logger
	defaultGrace time.Duration

	cacheTTL  time.Duration
	cacheSize int
	mu        sync.Mutex // guards cache
	cache     map[string]cached
	// epoch grows with every invalidation. A lookup caches what it read only if no invalidation
	// happened since it began, so a read that raced a rotation never outlives it in the cache.
	epoch atomic.Uint64
}

type cached struct {
	m     Material
	until time.Time
}

// NewKeys returns a Keys over store, sealing HMAC secrets with sealer.
func NewKeys(store Store, sealer Sealer, opts KeysOptions) (*Keys, error) {
	switch {
	case store == nil:
		return nil, errors.New("new request keys: nil store")
	case sealer == nil:
		return nil, errors.New("new request keys: nil sealer")
	case opts.CacheTTL < 0 || opts.CacheTTL > MaxCacheTTL:
		return nil, fmt.Errorf("new request keys: cache ttl %s outside 0..%s", opts.CacheTTL, MaxCacheTTL)
	case opts.CacheSize < 0:
		return nil, fmt.Errorf("new request keys: negative cache size %d", opts.CacheSize)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DefaultGrace == 0 {
		opts.DefaultGrace = DefaultGrace
	}
	if opts.DefaultGrace < 0 || opts.DefaultGrace > MaxGrace {
		return nil, fmt.Errorf("new request keys: default grace %s outside 0..%s", opts.DefaultGrace, MaxGrace)
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	return &Keys{
		store: store, sealer: sealer, now: opts.Now, logger: opts.Logger, defaultGrace: opts.DefaultGrace,
		cacheTTL: opts.CacheTTL, cacheSize: opts.CacheSize, cache: map[string]cached{},
	}, nil
}

// clock is the time in UTC at the microsecond, the precision both SQL stores keep.
func (s *Keys) clock() time.Time { return s.now().UTC().Truncate(time.Microsecond) }

func caller(ctx context.Context) (principal.Principal, error) {
	p, ok := principal.FromContext(ctx)
	if !ok || p.Subject == "" {
		return principal.Principal{}, errs.New(errs.Unauthenticated, "authentication required")
	}
	return p, nil
}

func errKeyNotFound(cause error) error {
	return errs.Wrap(errs.NotFound, cause, "request key not found")
}

// EncodeSecret is how an HMAC secret is shown to its client: standard base64 (44 characters for
// SecretLen bytes). The HMAC key is the decoded bytes, not the text.
func EncodeSecret(secret []byte) string { return base64.StdEncoding.EncodeToString(secret) }

// DecodeSecret reverses EncodeSecret, for clients (the Go SDK, the CLI).
func DecodeSecret(text string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(text)
	if err != nil || len(b) < SecretLen {
		return nil, fmt.Errorf("request key secret: want the standard base64 of at least %d bytes", SecretLen)
	}
	return b, nil
}

func newSecret() ([]byte, error) {
	b := make([]byte, SecretLen)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generate request key secret: %w", err)
	}
	return b, nil
}

// Create makes a key as in asks. For hmac-sha256 it returns the generated secret
// (EncodeSecret), which exists only in this return value: it is stored sealed, never logged, and
// cannot be shown again. For ed25519 the secret is "": the client holds the private key.
func (s *Keys) Create(ctx context.Context, in CreateInput) (Key, string, error) {
	p, err := caller(ctx)
	if err != nil {
		return Key{}, "", err
	}
	now := s.clock()
	if in, err = in.validate(p, now); err != nil {
		return Key{}, "", err
	}
	id, err := NewID(now)
	if err != nil {
		return Key{}, "", err
	}
	k := Key{
		ID: id, TenantID: in.TenantID, AgentID: in.AgentID, Name: in.Name, Alg: in.Alg, CreatedBy: p.Subject,
		Generation: 1, CreatedAt: now, ExpiresAt: in.ExpiresAt,
	}
	var text string
	switch in.Alg {
	case AlgEd25519:
		k.PublicKey = bytes.Clone(in.PublicKey)
	case AlgHMACSHA256:
		secret, err := newSecret()
		if err != nil {
			return Key{}, "", err
		}
		if k.SealedSecret, err = s.sealer.Seal(secret, []byte(id)); err != nil {
			return Key{}, "", fmt.Errorf("create request key %s: seal secret: %w", id, err)
		}
		text = EncodeSecret(secret)
	}
	if err := s.store.CreateRequestKey(ctx, k); err != nil {
		return Key{}, "", fmt.Errorf("create request key %s: %w", id, err)
	}
	s.logger.InfoContext(ctx, "request key created", "key", k, "by", p.Subject)
	return k, text, nil
}

// Get returns the key with id if the caller may see it; any other is errs.NotFound.
func (s *Keys) Get(ctx context.Context, id string) (Key, error) {
	p, err := caller(ctx)
	if err != nil {
		return Key{}, err
	}
	return s.get(ctx, p, id)
}

func (s *Keys) get(ctx context.Context, p principal.Principal, id string) (Key, error) {
	if !ValidID(id) {
		return Key{}, errKeyNotFound(errors.New("malformed key id"))
	}
	k, err := s.store.RequestKey(ctx, id)
	switch {
	case errs.Is(err, errs.NotFound):
		return Key{}, errKeyNotFound(err)
	case err != nil:
		return Key{}, fmt.Errorf("get request key %s: %w", id, err)
	case p.Tenant != "" && k.TenantID != p.Tenant:
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
func (s *Keys) List(ctx context.Context, in ListInput) (Page, error) {
	p, err := caller(ctx)
	if err != nil {
		return Page{}, err
	}
	tenantID, err := resolveTenant(p, in.TenantID, "query.tenant")
	if err != nil {
		return Page{}, err
	}
	if in.Cursor != "" && !ValidID(in.Cursor) {
		return Page{}, errs.Field("query.cursor", "not a cursor returned by this API")
	}
	limit, err := pagecursor.Limit(in.Limit, DefaultListLimit, MaxListLimit)
	if err != nil {
		return Page{}, err
	}
	keys, err := s.store.ListRequestKeys(ctx, tenantID, in.Cursor, limit+1)
	if err != nil {
		return Page{}, fmt.Errorf("list request keys of %s: %w", tenantID, err)
	}
	var page Page
	if len(keys) > limit {
		keys = keys[:limit]
		page.NextCursor = keys[limit-1].ID
	}
	page.Keys = keys
	return page, nil
}

// Rotate replaces the key's material and returns the key with, for hmac-sha256, its new secret
// (once, as Create). The replaced material keeps verifying until the grace period ends; material
// rotated out earlier stops at once, as only one previous is kept. A revoked or expired key
// cannot be rotated (errs.Conflict), nor one a concurrent rotation changed (errs.Conflict).
func (s *Keys) Rotate(ctx context.Context, id string, in RotateInput) (Key, string, error) {
	grace := in.Grace
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
		return Key{}, "", errs.New(errs.Conflict, "request key is revoked")
	case k.Expired(now):
		return Key{}, "", errs.New(errs.Conflict, "request key has expired")
	}
	r := Rotation{Generation: k.Generation + 1, PrevValidUntil: now.Add(grace)}
	var text string
	switch k.Alg {
	case AlgEd25519:
		if err := validPublicKey(in.PublicKey, "body.public_key"); err != nil {
			return Key{}, "", err
		}
		if bytes.Equal(in.PublicKey, k.PublicKey) {
			return Key{}, "", errs.Field("body.public_key", "must differ from the current public key")
		}
		r.PublicKey, r.PrevPublicKey = bytes.Clone(in.PublicKey), k.PublicKey
	case AlgHMACSHA256:
		if len(in.PublicKey) != 0 {
			return Key{}, "", errs.Field("body.public_key", "must be absent for hmac-sha256: the kernel generates the secret")
		}
		secret, err := newSecret()
		if err != nil {
			return Key{}, "", err
		}
		if r.SealedSecret, err = s.sealer.Seal(secret, []byte(k.ID)); err != nil {
			return Key{}, "", fmt.Errorf("rotate request key %s: seal secret: %w", k.ID, err)
		}
		r.PrevSealedSecret = k.SealedSecret
		text = EncodeSecret(secret)
	default:
		return Key{}, "", fmt.Errorf("rotate request key %s: stored algorithm %q", k.ID, k.Alg)
	}
	if err := s.store.RotateRequestKey(ctx, k.ID, r); err != nil {
		return Key{}, "", fmt.Errorf("rotate request key %s: %w", k.ID, err)
	}
	s.Invalidate(k.ID)
	k.Generation = r.Generation
	k.PublicKey, k.SealedSecret = r.PublicKey, r.SealedSecret
	k.PrevPublicKey, k.PrevSealedSecret, k.PrevValidUntil = r.PrevPublicKey, r.PrevSealedSecret, r.PrevValidUntil
	s.logger.InfoContext(ctx, "request key rotated", "key", k, "by", p.Subject, "previous_valid_until", r.PrevValidUntil)
	return k, text, nil
}

// Revoke revokes the key at once, current and previous material alike, and returns it.
// Revoking a revoked key is an errs.Conflict.
func (s *Keys) Revoke(ctx context.Context, id string) (Key, error) {
	p, err := caller(ctx)
	if err != nil {
		return Key{}, err
	}
	k, err := s.get(ctx, p, id)
	if err != nil {
		return Key{}, err
	}
	if !k.RevokedAt.IsZero() {
		return Key{}, errs.New(errs.Conflict, "request key is already revoked")
	}
	now := s.clock()
	if err := s.store.RevokeRequestKey(ctx, k.ID, now); err != nil {
		return Key{}, fmt.Errorf("revoke request key %s: %w", k.ID, err)
	}
	s.Invalidate(k.ID)
	k.RevokedAt = now
	s.logger.InfoContext(ctx, "request key revoked", "key", k, "by", p.Subject)
	return k, nil
}

// Material is a key with its HMAC secrets opened, for verification only. String, Format and
// LogValue never show the secrets.
type Material struct {
	Key        Key
	Secret     []byte // hmac-sha256: the current secret
	PrevSecret []byte // hmac-sha256: the previous secret, if any (whether still in grace or not)
}

// String identifies the key only.
func (m Material) String() string { return "request key material " + m.Key.ID }

// Format makes every fmt verb print String.
func (m Material) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(m.String())) }

// LogValue logs what identifies the key.
func (m Material) LogValue() slog.Value { return m.Key.LogValue() }

// Lookup returns the key named by a signature's keyid, of any tenant, with its secrets opened:
// an errs.NotFound when there is none. It takes no principal: it runs before the request is
// authenticated. Results may come from the cache (KeysOptions.CacheTTL).
func (s *Keys) Lookup(ctx context.Context, keyID string) (Material, error) {
	if !ValidID(keyID) {
		return Material{}, errs.New(errs.NotFound, "request key not found")
	}
	now := s.now()
	if s.cacheTTL > 0 {
		s.mu.Lock()
		c, ok := s.cache[keyID]
		s.mu.Unlock()
		if ok && now.Before(c.until) {
			return c.m, nil
		}
	}
	epoch := s.epoch.Load()
	k, err := s.store.RequestKey(ctx, keyID)
	if err != nil {
		return Material{}, fmt.Errorf("look up request key %s: %w", keyID, err)
	}
	m := Material{Key: k}
	if k.Alg == AlgHMACSHA256 {
		if m.Secret, err = s.open(k.ID, k.SealedSecret); err != nil {
			return Material{}, err
		}
		if len(k.PrevSealedSecret) > 0 {
			if m.PrevSecret, err = s.open(k.ID, k.PrevSealedSecret); err != nil {
				return Material{}, err
			}
		}
	}
	if s.cacheTTL > 0 {
		s.put(keyID, m, now.Add(s.cacheTTL), epoch)
	}
	return m, nil
}

func (s *Keys) open(id string, sealed []byte) ([]byte, error) {
	secret, err := s.sealer.Open(sealed, []byte(id))
	if err != nil {
		// A KEK missing from the key file, or a row tampered with: the operator must act.
		return nil, errs.Wrap(errs.Internal, fmt.Errorf("open the secret of request key %s: %w", id, err),
			"request key %s cannot be read", id)
	}
	return secret, nil
}

// put caches m unless an invalidation happened since epoch was read, or the cache is full of
// live entries.
func (s *Keys) put(id string, m Material, until time.Time, epoch uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch.Load() != epoch {
		return
	}
	if len(s.cache) >= s.cacheSize {
		now := s.now()
		for k, c := range s.cache {
			if !now.Before(c.until) {
				delete(s.cache, k)
			}
		}
		if len(s.cache) >= s.cacheSize {
			return
		}
	}
	s.cache[id] = cached{m: m, until: until}
}

// Invalidate drops the cached lookup of id. Rotate and Revoke call it after their write; a
// caller running them inside a transaction calls it again after the commit (internal/control
// does), since a lookup may read the old row until then.
func (s *Keys) Invalidate(id string) {
	s.mu.Lock()
	s.epoch.Add(1)
	delete(s.cache, id)
	s.mu.Unlock()
}
