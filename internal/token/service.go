package token

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oklog/ulid/v2"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/principal"
)

const (
	// TokenType is the typ header of issued tokens (RFC 9068 §2.1); Verify requires it, so a JWT of
	// another kind signed by the same key is never taken for an access token.
	TokenType = "at+jwt"
	// MaxTokenBytes is the longest token Verify looks at; longer input is refused unparsed.
	MaxTokenBytes = 8 << 10
	// MaxLeeway is the largest clock skew Config.Leeway may tolerate.
	MaxLeeway = 60 * time.Second
	// reloadInterval is the shortest time between two loads of the key store caused by an unknown
	// kid, so garbage kids cannot turn every request into a database query.
	reloadInterval = 10 * time.Second
	// invalidToken is the one message every verification failure carries.
	invalidToken = "invalid or expired token"
)

// Config configures a Service. Issuer, Audience and TTL are required.
type Config struct {
	Issuer    string // iss of issued tokens, required on verified ones
	Audience  string // aud of issued tokens, required on verified ones
	Algorithm string // EdDSA (the default when empty), ES256, RS256 or HS256
	// HS256Secret, with Algorithm HS256, is the shared secret (≥ 32 bytes). It is used as given and
	// never stored; when empty a random secret is generated and stored like the other keys.
	HS256Secret []byte
	TTL         time.Duration    // lifetime of issued tokens
	Leeway      time.Duration    // clock skew tolerated on exp, nbf and iat; 0..60s
	Now         func() time.Time // the clock; nil means time.Now
	// PublishDelay is how long a key made by Rotate is published in the JWKS before it signs, so
	// that every replica (reloading every ReloadInterval) and every verifier caching the JWKS holds
	// it before the first token it signs; at least ReloadInterval. 0: DefaultPublishDelay.
	PublishDelay time.Duration
	// ReloadInterval is how often Run reloads the keys from the store. 0: DefaultReloadInterval.
	ReloadInterval time.Duration
	// Sealer seals the material of every key before it is stored and opens it on load
	// (required): the kernel's key-encryption key (signing.kek_file), as for the CA's keys.
	Sealer Sealer
}

// Defaults of Config's zero durations.
const (
	DefaultPublishDelay   = time.Minute
	DefaultReloadInterval = 10 * time.Second
)

// Claims are what an issued token asserts about its subject.
type Claims struct {
	Subject string   // user or agent ID
	Tenant  string   // "" for principals above tenants
	Roles   []string // RBAC roles
	Scopes  []string // granted scopes; each a RFC 6749 scope-token (no spaces)
}

// Service issues and verifies access tokens. Create it with New.
type Service struct {
	store  KeyStore
	sealer Sealer
	cfg    Config
	logger *slog.Logger
	secret *key // the HS256 secret from Config, or nil

	keys atomic.Pointer[keySet]

	// reloadMu serialises reloads so an older snapshot never replaces a newer one. It guards
	// skipped, the IDs of damaged stored keys already reported, so each is logged once.
	reloadMu sync.Mutex
	skipped  map[string]bool
	// rateMu guards lastReload; it is never held during I/O, so Verify never waits on the store
	// for a reload another request started.
	rateMu     sync.Mutex
	lastReload time.Time
}

// accessClaims is the JWT payload.
type accessClaims struct {
	jwt.RegisteredClaims
	Tenant string   `json:"tenant,omitempty"`
	Roles  []string `json:"roles"`
	Scope  string   `json:"scope"`
}

// Validate adds to the library's checks the claims the kernel cannot do without: every token names
// its subject and has an ID for audit.
func (c accessClaims) Validate() error {
	if c.Subject == "" {
		return errors.New("sub missing")
	}
	if c.ID == "" {
		return errors.New("jti missing")
	}
	return nil
}

// New validates cfg, loads every stored key and makes sure an active signing key exists for
// cfg.Algorithm: an HS256 secret from cfg, or the oldest stored key of that algorithm, generated
// and stored first when there is none. Keys stored in clear (before sealing existed) are sealed
// in place first. A stored key that is not retired and does not open with cfg.Sealer (sealed
// under another key-encryption key) is an error naming it: the kernel does not start. A nil
// logger discards logs.
func New(ctx context.Context, store KeyStore, cfg Config, logger *slog.Logger) (*Service, error) {
	if store == nil {
		return nil, errors.New("new token service: nil key store")
	}
	if cfg.Sealer == nil {
		return nil, errors.New("new token service: nil sealer: signing keys are sealed at rest with the key-encryption key")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Algorithm == "" {
		cfg.Algorithm = AlgEdDSA
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = DefaultReloadInterval
	}
	if cfg.PublishDelay == 0 {
		cfg.PublishDelay = max(DefaultPublishDelay, cfg.ReloadInterval)
	}
	if err := validateConfig(cfg); err != nil {
		return nil, err
	}
	s := &Service{store: store, sealer: cfg.Sealer, cfg: cfg, logger: logger}
	s.cfg.Sealer = nil // held once, in s.sealer
	if len(cfg.HS256Secret) > 0 {
		s.secret = secretKey(cfg.HS256Secret)
		s.secret.parser = s.newParser(s.secret)
		s.cfg.HS256Secret = nil // the key holds its own copy; do not keep a second one around
	}

	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if err := s.reloadLocked(ctx, true); err != nil && !errors.Is(err, errNoActiveKey) {
		return nil, fmt.Errorf("new token service: %w", err)
	}
	if s.keys.Load() != nil {
		return s, nil
	}

	sk, err := generateKey(cfg.Algorithm, cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("new token service: %w", err)
	}
	if sk, err = s.seal(sk); err != nil {
		return nil, fmt.Errorf("new token service: %w", err)
	}
	if err := store.CreateSigningKey(ctx, sk); err != nil {
		return nil, fmt.Errorf("new token service: store %s key %s: %w", sk.Algorithm, sk.ID, err)
	}
	s.logger.InfoContext(ctx, "generated signing key", "kid", sk.ID, "alg", sk.Algorithm)
	// Reload rather than use sk directly: a replica that started at the same time may have stored
	// an older key, and every replica must sign with the same one.
	if err := s.reloadLocked(ctx, true); err != nil {
		return nil, fmt.Errorf("new token service: %w", err)
	}
	return s, nil
}

func validateConfig(cfg Config) error {
	switch {
	case strings.TrimSpace(cfg.Issuer) == "":
		return errs.Field("issuer", "must not be empty")
	case strings.TrimSpace(cfg.Audience) == "":
		return errs.Field("audience", "must not be empty")
	case methodFor(cfg.Algorithm) == nil:
		return errs.Field("algorithm", fmt.Sprintf("must be one of %s, %s, %s, %s; got %q", AlgEdDSA, AlgES256, AlgRS256, AlgHS256, cfg.Algorithm))
	case cfg.TTL <= 0:
		return errs.Field("ttl", fmt.Sprintf("must be positive, got %s", cfg.TTL))
	case cfg.Leeway < 0 || cfg.Leeway > MaxLeeway:
		return errs.Field("leeway", fmt.Sprintf("must be between 0s and %s, got %s", MaxLeeway, cfg.Leeway))
	case len(cfg.HS256Secret) > 0 && cfg.Algorithm != AlgHS256:
		return errs.Field("hs256_secret", fmt.Sprintf("set but the algorithm is %s", cfg.Algorithm))
	case len(cfg.HS256Secret) > 0 && len(cfg.HS256Secret) < minHS256Secret:
		return errs.Field("hs256_secret", fmt.Sprintf("must be at least %d bytes", minHS256Secret))
	case cfg.ReloadInterval < 0:
		return errs.Field("reload_interval", fmt.Sprintf("must be positive, got %s", cfg.ReloadInterval))
	case cfg.PublishDelay < cfg.ReloadInterval:
		return errs.Field("publish_delay", fmt.Sprintf("must be at least the reload interval %s, so every replica holds a key before it signs; got %s",
			cfg.ReloadInterval, cfg.PublishDelay))
	}
	return nil
}

// newParser returns the parser for tokens of k: only k's algorithm is accepted, and exp, iss, aud,
// nbf and iat are checked by the library with the configured leeway.
func (s *Service) newParser(k *key) *jwt.Parser {
	return jwt.NewParser(
		jwt.WithValidMethods([]string{k.alg}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(s.cfg.Issuer),
		jwt.WithAudience(s.cfg.Audience),
		jwt.WithLeeway(s.cfg.Leeway),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(s.cfg.Now),
		// Strict base64 refuses non-zero padding bits, so one signature has one spelling.
		jwt.WithStrictDecoding(),
	)
}

var errNoActiveKey = errors.New("no active signing key")

// errUnopened marks a stored key whose sealed material does not open.
var errUnopened = errors.New("cannot open the private key of a signing key")

// Reload reads every key from the store and replaces the in-memory set, so keys stored by other
// replicas verify and appear in JWKS, and keys other replicas rotated start and stop signing at
// the times the store gives. The signing key is chosen at each Issue (see signerAt), which heals
// replicas that raced at first start. When the store fails, or holds no key of the configured
// algorithm that can sign now, the current keys are kept and an error returned.
func (s *Service) Reload(ctx context.Context) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if err := s.reloadLocked(ctx, false); err != nil {
		return fmt.Errorf("reload signing keys: %w", err)
	}
	return nil
}

// reloadLocked loads the keys. At start (New) it first seals in place the rows stored in clear,
// and a key that does not open is an error; later a key that does not open is skipped and logged
// like a damaged one, and the keys already open stay in use.
func (s *Service) reloadLocked(ctx context.Context, start bool) error {
	s.rateMu.Lock()
	s.lastReload = s.cfg.Now()
	s.rateMu.Unlock()

	stored, err := s.store.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("load signing keys: %w", err)
	}
	var prev map[string]*key
	if old := s.keys.Load(); old != nil {
		prev = old.byID
	}

	now := s.cfg.Now()
	set := &keySet{byID: make(map[string]*key, len(stored)+1), retired: map[string]bool{}}
	for _, sk := range stored {
		if start && len(sk.Sealed) == 0 && len(sk.Private) > 0 {
			if err := s.sealInPlace(ctx, sk); err != nil {
				return err
			}
		}
		if s.secret != nil && sk.ID == s.secret.id {
			s.reportSkipped(ctx, sk, errors.New("id of the configured hs256 secret"))
			continue
		}
		if !sk.RetiresAt.IsZero() && !now.Before(sk.RetiresAt) {
			set.retired[sk.ID] = true
			continue
		}
		// Key material never changes once stored, so a key already parsed is reused (RSA parsing
		// is costly) with the times the store gives now: a rotation sets the retirement.
		if k, ok := prev[sk.ID]; ok && k.alg == sk.Algorithm {
			nk := *k
			nk.activatesAt, nk.retiresAt = sk.activation(), sk.RetiresAt
			set.byID[sk.ID] = &nk
			continue
		}
		material, err := s.material(sk)
		if err != nil {
			if start && errors.Is(err, errUnopened) {
				return err
			}
			s.reportSkipped(ctx, sk, err)
			continue
		}
		sk.Private, sk.Sealed = material, nil
		k, err := parseStored(sk)
		clear(material) // parseStored keeps copies, never the slice itself
		if err != nil {
			// One damaged row must not stop the kernel; every replica skips it alike.
			s.reportSkipped(ctx, sk, err)
			continue
		}
		k.parser = s.newParser(k)
		set.byID[k.id] = k
	}

	set.ordered = slices.SortedFunc(maps.Values(set.byID), olderKey)
	if s.secret != nil {
		set.byID[s.secret.id] = s.secret
		set.signers = []*key{s.secret}
	} else {
		for _, k := range set.ordered {
			if k.alg == s.cfg.Algorithm {
				set.signers = append(set.signers, k)
			}
		}
	}
	active := signerAt(set.signers, now)
	if active == nil {
		return fmt.Errorf("%w: no %s key in the store can sign now", errNoActiveKey, s.cfg.Algorithm)
	}
	if set.jwks, set.jwksUntil, err = buildJWKS(set.ordered, now); err != nil {
		return err
	}
	if old := s.keys.Swap(set); old != nil {
		if was := signerAt(old.signers, now); was != nil && was.id != active.id {
			s.logger.InfoContext(ctx, "active signing key changed", "from", was.id, "to", active.id)
		}
	}
	return nil
}

// seal returns sk ready to be stored: its material sealed under the current key-encryption key,
// bound to its ID, and Private cleared.
func (s *Service) seal(sk SigningKey) (SigningKey, error) {
	sealed, err := s.sealer.Seal(sk.Private, SealAAD(sk.ID))
	if err != nil {
		return SigningKey{}, fmt.Errorf("seal signing key %s: %w", sk.ID, err)
	}
	clear(sk.Private)
	sk.Private, sk.Sealed = nil, sealed
	return sk, nil
}

// material returns the key material of a stored key: opened when sealed, as stored when the row
// is still in clear (written by an older kernel since this one started).
func (s *Service) material(sk SigningKey) ([]byte, error) {
	if len(sk.Sealed) == 0 {
		if len(sk.Private) == 0 {
			return nil, fmt.Errorf("signing key %s: no key material stored", sk.ID)
		}
		return slices.Clone(sk.Private), nil
	}
	m, err := s.sealer.Open(sk.Sealed, SealAAD(sk.ID))
	if err != nil {
		return nil, fmt.Errorf("%w: signing key %s was sealed under another key-encryption key "+
			"(every replica needs the same signing.kek_file) or for another row: %w", errUnopened, sk.ID, err)
	}
	return m, nil
}

// sealInPlace seals a key stored in clear (before sealing existed) in its row, unless another
// replica did it meanwhile: the store writes only while the row still holds this clear value.
func (s *Service) sealInPlace(ctx context.Context, sk SigningKey) error {
	sealed, err := s.sealer.Seal(sk.Private, SealAAD(sk.ID))
	if err != nil {
		return fmt.Errorf("seal signing key %s stored in clear: %w", sk.ID, err)
	}
	done, err := s.store.SealSigningKey(ctx, sk.ID, sk.Private, sealed)
	if err != nil {
		return fmt.Errorf("seal signing key %s stored in clear: %w", sk.ID, err)
	}
	if done {
		s.logger.InfoContext(ctx, "sealed a signing key stored in clear", "kid", sk.ID, "alg", sk.Algorithm)
	}
	return nil
}

// reportSkipped logs a stored key that cannot be used, once per key. The caller holds reloadMu.
func (s *Service) reportSkipped(ctx context.Context, sk SigningKey, err error) {
	if s.skipped[sk.ID] {
		return
	}
	if s.skipped == nil {
		s.skipped = make(map[string]bool)
	}
	s.skipped[sk.ID] = true
	s.logger.ErrorContext(ctx, "stored signing key skipped", "kid", sk.ID, "alg", sk.Algorithm, "error", err)
}

// reloadForUnknownKID reloads the keys unless a reload happened in the last reloadInterval. Only the
// caller that claims the slot touches the store; the others go on with the keys they have.
func (s *Service) reloadForUnknownKID(ctx context.Context) {
	s.rateMu.Lock()
	now := s.cfg.Now()
	due := s.lastReload.IsZero() || now.Sub(s.lastReload) >= reloadInterval
	if due {
		s.lastReload = now
	}
	s.rateMu.Unlock()
	if !due {
		return
	}
	if err := s.Reload(ctx); err != nil {
		s.logger.WarnContext(ctx, "reload for unknown kid failed", "error", err)
	}
}

// Issue signs a token for c with the active key and returns it with its expiry (UTC, whole
// seconds, as written in the token).
func (s *Service) Issue(ctx context.Context, c Claims) (string, time.Time, error) {
	if err := validateClaims(c); err != nil {
		return "", time.Time{}, err
	}
	now := s.cfg.Now().UTC()
	k := signerAt(s.keys.Load().signers, now)
	if k == nil {
		// Only when the successor of the superseded keys was skipped as damaged: the next reload
		// after a new rotation heals it.
		return "", time.Time{}, errs.New(errs.Unavailable, "no %s token signing key can sign now", s.cfg.Algorithm)
	}
	jti, err := ulid.New(ulid.Timestamp(now), rand.Reader)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue token: generate jti: %w", err)
	}
	iat := jwt.NewNumericDate(now)
	exp := jwt.NewNumericDate(now.Add(s.cfg.TTL))
	claims := accessClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.cfg.Issuer,
			Subject:   c.Subject,
			Audience:  jwt.ClaimStrings{s.cfg.Audience},
			ExpiresAt: exp,
			NotBefore: iat,
			IssuedAt:  iat,
			ID:        jti.String(),
		},
		Tenant: c.Tenant,
		Roles:  append([]string{}, c.Roles...), // [] rather than null when there are none
		Scope:  strings.Join(c.Scopes, " "),
	}
	t := jwt.NewWithClaims(k.method, claims)
	t.Header["kid"] = k.id
	t.Header["typ"] = TokenType
	raw, err := t.SignedString(k.sign)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue token: sign with %s: %w", k.id, err)
	}
	if len(raw) > MaxTokenBytes {
		// Verify would refuse it: better to say so now than to hand out a token that never works.
		return "", time.Time{}, errs.Field("claims", fmt.Sprintf("token of %d bytes exceeds %d", len(raw), MaxTokenBytes))
	}
	return raw, exp.UTC(), nil
}

func validateClaims(c Claims) error {
	if c.Subject == "" {
		return errs.Field("subject", "must not be empty")
	}
	for _, r := range c.Roles {
		if r == "" {
			return errs.Field("roles", "must not contain an empty role")
		}
	}
	for _, sc := range c.Scopes {
		if !validScope(sc) {
			return errs.Field("scopes", fmt.Sprintf("%q is not a scope token", sc))
		}
	}
	return nil
}

// validScope reports whether s is a scope-token of RFC 6749 §3.3: printable ASCII except space,
// '"' and '\', so a space-separated scope string splits back into the same scopes.
func validScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Verify checks raw and returns the principal it names. Every failure is the same
// errs.Unauthenticated "invalid or expired token"; the wrapped cause is for logs only.
func (s *Service) Verify(ctx context.Context, raw string) (principal.Principal, error) {
	p, err := s.verify(ctx, raw)
	if err != nil {
		return principal.Principal{}, errs.Wrap(errs.Unauthenticated, err, invalidToken)
	}
	return p, nil
}

func (s *Service) verify(ctx context.Context, raw string) (principal.Principal, error) {
	if len(raw) > MaxTokenBytes {
		return principal.Principal{}, fmt.Errorf("token of %d bytes exceeds %d", len(raw), MaxTokenBytes)
	}
	// base64 decoding skips \r and \n even in strict mode; refusing anything outside the compact
	// serialisation's alphabet keeps one token to one spelling.
	if i := strings.IndexFunc(raw, func(r rune) bool { return !isCompactChar(r) }); i >= 0 {
		return principal.Principal{}, fmt.Errorf("byte %d is outside the base64url alphabet", i)
	}
	kid, err := headerKID(raw)
	if err != nil {
		return principal.Principal{}, err
	}
	set := s.keys.Load()
	if set.retired[kid] {
		return principal.Principal{}, fmt.Errorf("kid %q is retired", kid)
	}
	k := set.byID[kid]
	if k == nil {
		s.reloadForUnknownKID(ctx)
		if k = s.keys.Load().byID[kid]; k == nil {
			return principal.Principal{}, fmt.Errorf("unknown kid %q", kid)
		}
	}
	// A key retired since the last reload is refused at once; the reload drops it later.
	if !k.retiresAt.IsZero() && !s.cfg.Now().Before(k.retiresAt) {
		return principal.Principal{}, fmt.Errorf("kid %q is retired", kid)
	}

	var c accessClaims
	_, err = k.parser.ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		// WithValidMethods compares the resolved method's name; comparing the header itself too
		// keeps the pin exact even if some package registered an alias for a method.
		if t.Header["alg"] != k.alg {
			return nil, fmt.Errorf("alg %v is not the key's %s", t.Header["alg"], k.alg)
		}
		if typ, _ := t.Header["typ"].(string); !strings.EqualFold(typ, TokenType) && !strings.EqualFold(typ, "application/"+TokenType) {
			return nil, fmt.Errorf("typ %q is not %s", typ, TokenType)
		}
		return k.verify, nil
	})
	if err != nil {
		return principal.Principal{}, fmt.Errorf("token with kid %s: %w", kid, err)
	}
	p := principal.Principal{
		Subject: c.Subject,
		Tenant:  c.Tenant,
		TokenID: c.ID,
		// WithExpirationRequired guarantees exp is present.
		ExpiresAt: c.ExpiresAt.UTC(),
	}
	if len(c.Roles) > 0 {
		p.Roles = c.Roles
	}
	for sc := range strings.SplitSeq(c.Scope, " ") {
		if sc != "" {
			p.Scopes = append(p.Scopes, sc)
		}
	}
	return p, nil
}

// headerKID decodes only the protected header and returns its kid, refusing a malformed header, a
// missing or ill-formed kid and any crit header: RFC 7515 §4.1.11 requires rejecting a token whose
// critical extensions are not understood, and we understand none. jku, x5u, jwk and x5c are never
// looked at.
func headerKID(raw string) (string, error) {
	seg, _, ok := strings.Cut(raw, ".")
	if !ok {
		return "", errors.New("malformed token: no header segment")
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return "", fmt.Errorf("malformed header: %w", err)
	}
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil {
		return "", fmt.Errorf("malformed header: %w", err)
	}
	if _, ok := h["crit"]; ok {
		return "", errors.New("crit header present")
	}
	kid, ok := h["kid"].(string)
	if !ok {
		return "", errors.New("kid missing or not a string")
	}
	if !validKID(kid) {
		return "", errors.New("kid is not a valid identifier")
	}
	return kid, nil
}

// isCompactChar reports whether r may appear in a JWS compact serialisation.
func isCompactChar(r rune) bool {
	return r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
}
