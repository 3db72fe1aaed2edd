package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/nops-kernel/nops/internal/errs"
)

// Defaults of Config's zero fields.
const (
	DefaultSVIDTTL         = time.Hour
	DefaultIntermediateTTL = 30 * 24 * time.Hour
	DefaultRootTTL         = 10 * 365 * 24 * time.Hour
	DefaultRefreshInterval = time.Minute
	// DefaultRootRotationDelay is how long a rotated root is in the bundle before SVIDs chain to
	// it: two bundle refresh hints, so a client that missed one fetch still has it.
	DefaultRootRotationDelay = 2 * BundleRefreshHint
)

const (
	// Backdate is how far before the moment of issue a certificate's NotBefore is set, so that a
	// peer whose clock is a little behind accepts it at once.
	Backdate = 30 * time.Second
	// BundleRefreshHint is the spiffe_refresh_hint of the published bundle: how often consumers
	// should fetch it again. A new root must be in the bundle at least this long before anything
	// it signs is presented.
	BundleRefreshHint = 5 * time.Minute
	// maxAttempts bounds LoadOrCreate's and Refresh's retries after losing a race to another
	// replica; each loss means the CA changed, so a retry finds it done.
	maxAttempts = 5
)

// Config configures the CA. Every field but TrustDomain has a working zero value.
type Config struct {
	TrustDomain     string        // "nops.local"; see ParseTrustDomain
	SVIDTTL         time.Duration // default and longest lifetime of an issued SVID; 0: DefaultSVIDTTL
	IntermediateTTL time.Duration // lifetime of an intermediate; 0: DefaultIntermediateTTL
	RootTTL         time.Duration // lifetime of a root; 0: DefaultRootTTL
	RefreshInterval time.Duration // how often Run reloads the CA and rotates it; 0: DefaultRefreshInterval
	// RootRotationDelay is how long after Rotate the new root's intermediate starts issuing: the
	// new root is in the bundle at once, so replicas (RefreshInterval) and clients (the bundle's
	// refresh hint) hold it before any SVID chains to it. At least RefreshInterval, less than half
	// IntermediateTTL. 0: DefaultRootRotationDelay (RefreshInterval when that is longer).
	RootRotationDelay time.Duration
	Now               func() time.Time
	Logger            *slog.Logger
	Meter             metric.Meter // nil: no metrics
	// OnChange, when set, is told every change Refresh makes to the authorities on its own (the
	// CA's creation, an intermediate's renewal, the removal of retired roots), inside the change's
	// transaction: an error rolls the change back. Rotate's caller records the rotation itself.
	OnChange func(ctx context.Context, c Change) error
}

func (c Config) withDefaults() Config {
	if c.SVIDTTL <= 0 {
		c.SVIDTTL = DefaultSVIDTTL
	}
	if c.IntermediateTTL <= 0 {
		c.IntermediateTTL = DefaultIntermediateTTL
	}
	if c.RootTTL <= 0 {
		c.RootTTL = DefaultRootTTL
	}
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = DefaultRefreshInterval
	}
	if c.RootRotationDelay <= 0 {
		c.RootRotationDelay = max(DefaultRootRotationDelay, c.RefreshInterval)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.IntermediateTTL < 2*c.SVIDTTL:
		return fmt.Errorf("intermediate ttl %s must be at least twice the svid ttl %s", c.IntermediateTTL, c.SVIDTTL)
	case c.RootTTL < 2*c.IntermediateTTL:
		return fmt.Errorf("root ttl %s must be at least twice the intermediate ttl %s", c.RootTTL, c.IntermediateTTL)
	case c.RootRotationDelay < c.RefreshInterval:
		return fmt.Errorf("root rotation delay %s must be at least the refresh interval %s, so every replica holds a new root before it issues",
			c.RootRotationDelay, c.RefreshInterval)
	case c.RootRotationDelay >= c.IntermediateTTL/2:
		// The intermediate signing at a rotation (renewed at half-life, so with at least half its
		// lifetime left) must outlive the delay: nothing renews it meanwhile.
		return fmt.Errorf("root rotation delay %s must be less than half the intermediate ttl %s", c.RootRotationDelay, c.IntermediateTTL)
	}
	return nil
}

// CA is the built-in certificate authority of one trust domain: it signs X.509-SVIDs with its
// current intermediate and publishes its roots as the trust bundle.
type CA struct {
	td     spiffeid.TrustDomain
	cfg    Config
	st     Store
	sealer Sealer
	cur    atomic.Pointer[snapshot]
	mu     sync.Mutex // serialises refreshes of this process; readers use cur
	issued metric.Int64Counter
}

// signer is an authority whose private key is open.
type signer struct {
	id          string
	cert        *x509.Certificate
	key         crypto.Signer
	activatesAt time.Time
}

// snapshot is the CA as loaded at one sequence. It is immutable once published in CA.cur.
type snapshot struct {
	seq   int64
	roots []*x509.Certificate // unexpired and not retired when loaded, in the order they were added
	// issuers are the intermediate signing when loaded, then those staged by a root rotation, by
	// activation; issuerAt picks the one signing at a given time.
	issuers   []signer
	bundle    *x509bundle.Bundle
	jwks      []byte
	etag      string
	rootsPEM  []byte
	loadedAt  time.Time
	rootsByID map[string]*x509.Certificate
	// nextChange is the first moment after loadedAt the snapshot goes stale without a change of
	// the sequence (a root retires, a staged intermediate activates); zero: none.
	nextChange time.Time
}

// issuerAt returns the intermediate signing at now: the one activated last; zero when none is.
func (s *snapshot) issuerAt(now time.Time) signer {
	for i := len(s.issuers) - 1; i >= 0; i-- {
		if !now.Before(s.issuers[i].activatesAt) {
			return s.issuers[i]
		}
	}
	return signer{}
}

// pending reports whether an intermediate staged by a root rotation has not activated at now.
func (s *snapshot) pending(now time.Time) bool {
	return len(s.issuers) > 0 && now.Before(s.issuers[len(s.issuers)-1].activatesAt)
}

// LoadOrCreate loads the CA of cfg.TrustDomain from st, opening its keys with sealer, or creates
// it — a root and an intermediate, ECDSA P-256 — when there is none. Creation is one
// compare-and-set transaction, so replicas starting together agree on one CA: the losers reload
// the winner's. An intermediate past half its lifetime is replaced the same way. A key that does
// not open (the key-encryption key is not the one it was sealed with) is an error naming the
// authority.
func LoadOrCreate(ctx context.Context, st Store, sealer Sealer, cfg Config) (*CA, error) {
	td, err := ParseTrustDomain(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("identity ca: %w", err)
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("identity ca: %w", err)
	}
	ca := &CA{td: td, cfg: cfg, st: st, sealer: sealer}
	if cfg.Meter != nil {
		if ca.issued, err = cfg.Meter.Int64Counter("nops_identity_svids_issued_total",
			metric.WithDescription("X.509-SVIDs the built-in CA issued, by kind (agent, kernel)."), metric.WithUnit("{svid}")); err != nil {
			return nil, fmt.Errorf("identity ca: svid counter: %w", err)
		}
	}
	if err := ca.Refresh(ctx); err != nil {
		return nil, err
	}
	return ca, nil
}

// TrustDomain returns the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// SVIDTTL returns the default and longest lifetime of an issued SVID.
func (ca *CA) SVIDTTL() time.Duration { return ca.cfg.SVIDTTL }

// Bundle returns the current trust bundle: every unexpired root (during a rotation, old and
// new). It implements x509bundle.Source through GetX509BundleForTrustDomain.
func (ca *CA) Bundle() *x509bundle.Bundle { return ca.cur.Load().bundle.Clone() }

// GetX509BundleForTrustDomain implements x509bundle.Source: the current bundle for the CA's trust
// domain, an error for any other.
func (ca *CA) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != ca.td {
		return nil, fmt.Errorf("identity ca: no bundle for trust domain %q", td)
	}
	return ca.cur.Load().bundle, nil
}

// BundleJWKS returns the trust bundle in the SPIFFE bundle format (a JWK Set whose keys have use
// "x509-svid", with spiffe_sequence and spiffe_refresh_hint), and an entity tag that changes when
// it does. Every replica renders the same bytes for the same CA.
func (ca *CA) BundleJWKS() (body []byte, etag string) {
	s := ca.cur.Load()
	return s.jwks, s.etag
}

// BundlePEM returns the roots of the trust bundle as PEM certificates.
func (ca *CA) BundlePEM() []byte { return ca.cur.Load().rootsPEM }

// Sequence returns the CA's sequence: it grows by one with every change of its authorities.
func (ca *CA) Sequence() int64 { return ca.cur.Load().seq }

// IssuerNotAfter returns the expiry of the intermediate signing now: no SVID outlives it.
func (ca *CA) IssuerNotAfter() time.Time {
	if iss := ca.cur.Load().issuerAt(ca.cfg.Now()); iss.cert != nil {
		return iss.cert.NotAfter
	}
	return time.Time{}
}

// IssuerID returns the ID of the intermediate signing now ("" when none is): it changes when an
// intermediate is renewed and when a rotated root's intermediate activates.
func (ca *CA) IssuerID() string { return ca.cur.Load().issuerAt(ca.cfg.Now()).id }

// Run refreshes the CA every RefreshInterval until ctx ends, so that this replica sees the
// authorities other replicas added and replaces an intermediate past half its lifetime. A failed
// refresh is logged and the current snapshot keeps serving. It returns nil when ctx ends.
func (ca *CA) Run(ctx context.Context) error {
	t := time.NewTicker(ca.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := ca.Refresh(ctx); err != nil && ctx.Err() == nil {
				ca.cfg.Logger.WarnContext(ctx, "refresh identity ca", "trust_domain", ca.td.Name(), "error", err)
			}
		}
	}
}

// Refresh reloads the CA from the store and changes what is due: it creates the CA itself, a
// root when every root has expired, an intermediate when there is none valid or the current one is
// past half its lifetime (unless a rotated root's intermediate is about to take over), and removes
// the roots whose retirement has passed with their intermediates. Each change is one
// compare-and-set transaction, told to Config.OnChange; losing a race to another replica reloads
// its result.
func (ca *CA) Refresh(ctx context.Context) error {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	for range maxAttempts {
		seq, auths, err := ca.st.CAAuthorities(ctx, ca.td.Name())
		if err != nil {
			return fmt.Errorf("identity ca: load authorities of %s: %w", ca.td.Name(), err)
		}
		now := ca.cfg.Now()
		prev := ca.cur.Load()
		var snap *snapshot
		if prev != nil && prev.seq == seq && stillValid(prev, now) && !ca.needsIntermediate(prev, now) {
			snap = prev
		} else if seq > 0 {
			if snap, err = ca.load(seq, auths, now); err != nil {
				return err
			}
		}
		ch, err := ca.plan(snap, auths, now)
		if err != nil {
			return err
		}
		if ch == nil {
			if snap != prev {
				ca.cur.Store(snap)
			}
			return nil
		}
		err = ca.st.InTx(ctx, func(ctx context.Context) error {
			if ch.Kind == ChangeRetire {
				if err := ca.st.RemoveCAAuthorities(ctx, ca.td.Name(), seq, ch.Removed, now.UTC()); err != nil {
					return err
				}
			} else if err := ca.st.AddCAAuthorities(ctx, ca.td.Name(), seq, ch.added); err != nil {
				return err
			}
			ch.Sequence = seq + 1
			if ca.cfg.OnChange != nil {
				return ca.cfg.OnChange(ctx, ch.Change)
			}
			return nil
		})
		switch {
		case errs.Is(err, errs.Conflict):
			continue // another replica changed the CA first: load its result
		case err != nil:
			return fmt.Errorf("identity ca: change the authorities of %s (%s): %w", ca.td.Name(), ch.Kind, err)
		}
		ca.logChange(ctx, ch.Change)
	}
	return fmt.Errorf("identity ca: the authorities of %s kept changing under %d attempts", ca.td.Name(), maxAttempts)
}

// stillValid reports whether the snapshot is still what loading it again would give at now: its
// roots and issuer are unexpired and no retirement or activation it knows of has come.
func stillValid(s *snapshot, now time.Time) bool {
	for _, r := range s.roots {
		if !now.Before(r.NotAfter) {
			return false
		}
	}
	if !s.nextChange.IsZero() && !now.Before(s.nextChange) {
		return false
	}
	iss := s.issuerAt(now)
	return iss.cert != nil && now.Before(iss.cert.NotAfter)
}

// needsIntermediate reports whether the snapshot needs a new intermediate at now: none signs, or
// the one signing is past half its lifetime and no rotated root's intermediate waits to take over.
func (ca *CA) needsIntermediate(s *snapshot, now time.Time) bool {
	cur := s.issuerAt(now).cert
	if cur == nil || !now.Before(cur.NotAfter) {
		return true
	}
	half := cur.NotBefore.Add(cur.NotAfter.Sub(cur.NotBefore) / 2)
	return !now.Before(half) && !s.pending(now)
}

// load builds the snapshot of the stored authorities at now: the unexpired roots not retired, the
// intermediate under one of them activated last (the newest, without rotations) and those staged to
// activate later, with their keys opened. snap.issuers is empty when no intermediate is usable.
func (ca *CA) load(seq int64, auths []Authority, now time.Time) (*snapshot, error) {
	s := &snapshot{seq: seq, loadedAt: now, rootsByID: map[string]*x509.Certificate{}}
	soon := func(t time.Time) {
		if now.Before(t) && (s.nextChange.IsZero() || t.Before(s.nextChange)) {
			s.nextChange = t
		}
	}
	var (
		current *Authority
		staged  []*Authority
		inters  []*Authority
	)
	certs := map[string]*x509.Certificate{}
	for i := range auths {
		a := &auths[i]
		cert, err := x509.ParseCertificate(a.CertDER)
		if err != nil {
			return nil, fmt.Errorf("identity ca: parse the certificate of authority %s: %w", a.ID, err)
		}
		certs[a.ID] = cert
		if !now.Before(cert.NotAfter) {
			continue
		}
		switch a.Kind {
		case KindRoot:
			if !a.RetiresAt.IsZero() && !now.Before(a.RetiresAt) {
				continue
			}
			s.roots = append(s.roots, cert)
			s.rootsByID[a.ID] = cert
			soon(a.RetiresAt)
		case KindIntermediate:
			inters = append(inters, a)
		}
	}
	for _, a := range inters {
		if _, ok := s.rootsByID[a.ParentID]; !ok {
			continue
		}
		if at := a.activation(); now.Before(at) {
			staged = append(staged, a)
			soon(at)
		} else if current == nil || !at.Before(current.activation()) {
			current = a // later in the order of addition wins a tie
		}
	}
	slices.SortStableFunc(staged, func(a, b *Authority) int { return a.activation().Compare(b.activation()) })
	for _, a := range append([]*Authority{current}, staged...) {
		if a == nil {
			continue
		}
		key, err := ca.openKey(*a)
		if err != nil {
			return nil, err
		}
		s.issuers = append(s.issuers, signer{id: a.ID, cert: certs[a.ID], key: key, activatesAt: a.activation()})
	}
	if len(s.roots) == 0 {
		return s, nil
	}
	s.bundle = x509bundle.FromX509Authorities(ca.td, s.roots)
	sb := spiffebundle.FromX509Authorities(ca.td, s.roots)
	sb.SetSequenceNumber(uint64(seq))
	sb.SetRefreshHint(BundleRefreshHint)
	jwks, err := sb.Marshal()
	if err != nil {
		return nil, fmt.Errorf("identity ca: marshal the bundle: %w", err)
	}
	sum := sha256.Sum256(jwks)
	s.jwks, s.etag = jwks, `"`+hex.EncodeToString(sum[:16])+`"`
	for _, r := range s.roots {
		s.rootsPEM = append(s.rootsPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	return s, nil
}

// plannedChange is a change plan proposes, with the authorities to store.
type plannedChange struct {
	Change
	added []Authority
}

// plan returns the change the CA loaded as snap (nil: none stored yet) needs at now, nil for none:
// a root and an intermediate for a new CA or one whose roots all expired; the removal of the
// roots whose retirement has passed; an intermediate under the newest root not retiring when
// needsIntermediate says so. One change at a time: Refresh plans again after each.
func (ca *CA) plan(snap *snapshot, auths []Authority, now time.Time) (*plannedChange, error) {
	if snap == nil || len(snap.roots) == 0 {
		kind := ChangeCreate
		if snap != nil {
			kind = ChangeRecover
			ca.cfg.Logger.Warn("identity ca: every root has expired; creating a new one (SVIDs of the old ones are no longer trusted)",
				"trust_domain", ca.td.Name())
		}
		root, rootKey, err := ca.newRoot(now)
		if err != nil {
			return nil, err
		}
		inter, err := ca.newIntermediate(now, root, rootKey)
		if err != nil {
			return nil, err
		}
		return ca.adding(kind, root, inter), nil
	}
	if removed := retired(auths, now); len(removed) > 0 {
		return &plannedChange{Change: Change{Kind: ChangeRetire, TrustDomain: ca.td.Name(), Removed: removed}}, nil
	}
	if !ca.needsIntermediate(snap, now) {
		return nil, nil
	}
	// The newest unexpired root that is not retiring signs the new intermediate.
	var root *Authority
	for i := len(auths) - 1; i >= 0; i-- {
		if _, ok := snap.rootsByID[auths[i].ID]; ok && auths[i].Kind == KindRoot && auths[i].RetiresAt.IsZero() {
			root = &auths[i]
			break
		}
	}
	if root == nil {
		return nil, errors.New("identity ca: no unexpired root that is not retiring among the authorities")
	}
	rootCert := snap.rootsByID[root.ID]
	// An intermediate cut short by its root's expiry would be replaced on every refresh: keep the
	// current one unless the new one outlives it.
	if cur := snap.issuerAt(now).cert; cur != nil && now.Before(cur.NotAfter) &&
		!minTime(now.Add(ca.cfg.IntermediateTTL), rootCert.NotAfter).After(cur.NotAfter) {
		return nil, nil
	}
	rootKey, err := ca.openKey(*root)
	if err != nil {
		return nil, err
	}
	inter, err := ca.newIntermediate(now, Authority{ID: root.ID, CertDER: rootCert.Raw}, rootKey)
	if err != nil {
		return nil, err
	}
	return ca.adding(ChangeRenew, inter), nil
}

// retired returns the IDs of the roots whose retirement has passed at now and of the intermediates
// under them: no SVID chaining to them can still be valid.
func retired(auths []Authority, now time.Time) []string {
	gone := map[string]bool{}
	var ids []string
	for _, a := range auths {
		if a.Kind == KindRoot && !a.RetiresAt.IsZero() && !now.Before(a.RetiresAt) {
			gone[a.ID] = true
			ids = append(ids, a.ID)
		}
	}
	for _, a := range auths {
		if a.Kind == KindIntermediate && gone[a.ParentID] {
			ids = append(ids, a.ID)
		}
	}
	return ids
}

// adding returns the change that stores auths.
func (ca *CA) adding(kind ChangeKind, auths ...Authority) *plannedChange {
	c := &plannedChange{Change: Change{Kind: kind, TrustDomain: ca.td.Name()}, added: auths}
	for _, a := range auths {
		c.Added = append(c.Added, infoOf(a))
	}
	return c
}

// logChange logs a committed change of the authorities.
func (ca *CA) logChange(ctx context.Context, c Change) {
	attrs := []any{"trust_domain", ca.td.Name(), "change", string(c.Kind), "sequence", c.Sequence}
	for _, a := range c.Added {
		attrs = append(attrs, string(a.Kind), a.ID)
	}
	if len(c.Removed) > 0 {
		attrs = append(attrs, "removed", c.Removed)
	}
	ca.cfg.Logger.InfoContext(ctx, "identity ca authorities changed", attrs...)
}

// openKey opens an authority's sealed private key.
func (ca *CA) openKey(a Authority) (crypto.Signer, error) {
	der, err := ca.sealer.Open(a.SealedKey, SealAAD(a.ID))
	if err != nil {
		return nil, fmt.Errorf("identity ca: open the private key of authority %s: it was sealed under another key-encryption key "+
			"(every replica needs the same signing.kek_file): %w", a.ID, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	clear(der)
	if err != nil {
		return nil, fmt.Errorf("identity ca: parse the private key of authority %s: %w", a.ID, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("identity ca: the private key of authority %s is a %T, not a signer", a.ID, k)
	}
	return signer, nil
}

// newRoot creates a self-signed root.
func (ca *CA) newRoot(now time.Time) (Authority, crypto.Signer, error) {
	id := newAuthorityID()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Authority{}, nil, fmt.Errorf("identity ca: generate a root key: %w", err)
	}
	tmpl, err := ca.authorityTemplate(id, now, now.Add(ca.cfg.RootTTL), "root")
	if err != nil {
		return Authority{}, nil, err
	}
	tmpl.MaxPathLen = 1
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return Authority{}, nil, fmt.Errorf("identity ca: create the root certificate: %w", err)
	}
	a, err := ca.sealed(id, KindRoot, "", der, key, now, tmpl.NotAfter)
	return a, key, err
}

// newIntermediate creates an intermediate signed by parent, living IntermediateTTL or until the
// parent expires, whichever is sooner.
func (ca *CA) newIntermediate(now time.Time, parent Authority, parentKey crypto.Signer) (Authority, error) {
	parentCert, err := x509.ParseCertificate(parent.CertDER)
	if err != nil {
		return Authority{}, fmt.Errorf("identity ca: parse root %s: %w", parent.ID, err)
	}
	id := newAuthorityID()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Authority{}, fmt.Errorf("identity ca: generate an intermediate key: %w", err)
	}
	tmpl, err := ca.authorityTemplate(id, now, minTime(now.Add(ca.cfg.IntermediateTTL), parentCert.NotAfter), "intermediate")
	if err != nil {
		return Authority{}, err
	}
	tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), parentKey)
	if err != nil {
		return Authority{}, fmt.Errorf("identity ca: create an intermediate certificate: %w", err)
	}
	return ca.sealed(id, KindIntermediate, parent.ID, der, key, now, tmpl.NotAfter)
}

// authorityTemplate is the template of a CA certificate. Like every signing certificate of a
// SPIFFE trust domain it carries the trust domain's ID as its one URI SAN.
func (ca *CA) authorityTemplate(id string, now, notAfter time.Time, what string) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"NOPS Kernel"}, CommonName: "NOPS Kernel " + what + " CA " + ca.td.Name() + " " + strings.TrimPrefix(id, authorityPrefix)},
		URIs:                  []*url.URL{ca.td.ID().URL()},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil
}

// sealed returns the stored form of a new authority: its key in PKCS #8, sealed.
func (ca *CA) sealed(id string, kind Kind, parent string, der []byte, key *ecdsa.PrivateKey, now, notAfter time.Time) (Authority, error) {
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Authority{}, fmt.Errorf("identity ca: encode the %s key: %w", kind, err)
	}
	sealedKey, err := ca.sealer.Seal(pk, SealAAD(id))
	clear(pk)
	if err != nil {
		return Authority{}, fmt.Errorf("identity ca: seal the %s key: %w", kind, err)
	}
	return Authority{ID: id, Kind: kind, ParentID: parent, CertDER: der, SealedKey: sealedKey,
		NotAfter: notAfter.UTC(), CreatedAt: now.UTC()}, nil
}

// authorityPrefix is the type prefix of authority IDs.
const authorityPrefix = "ca_"

func newAuthorityID() string { return authorityPrefix + strings.ToLower(ulid.Make().String()) }

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// countIssued counts one issued SVID of kind.
func (ca *CA) countIssued(ctx context.Context, kind string) {
	if ca.issued != nil {
		ca.issued.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", kind)))
	}
}
