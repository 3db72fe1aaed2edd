package mtls

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Revocation withdraws trust from one certificate (by serial) or from the SVIDs of one SPIFFE ID.
// Exactly one of Serial and ID is set.
type Revocation struct {
	// Serial is a certificate serial number in hexadecimal (any case, an optional "0x" prefix, no
	// separators). It matches the leaf or any intermediate a client presents. The kernel's CA
	// draws 128-bit random serials, so a serial names one certificate.
	Serial string
	// ID revokes every SVID of this SPIFFE ID issued at or before RevokedAt (NotBefore ≤
	// RevokedAt). An SVID issued later is accepted: re-enrolling a workload works without an
	// un-revoke, and keeping a workload out is the issuer's job (deregister the agent, revoke its
	// API key).
	ID spiffeid.ID
	// RevokedAt is when the revocation was recorded. Required: it is also the store's cursor.
	RevokedAt time.Time
	// Expires, when set, is when the entry can no longer match a valid certificate (the revoked
	// certificate's NotAfter, or RevokedAt plus the longest SVID TTL); it is forgotten then.
	Expires time.Time
}

// RevocationStore is where revocations are recorded so that every replica sees them. The kernel
// backs it with its database.
type RevocationStore interface {
	// Revocations returns the revocations with RevokedAt at or after since; all of them for the
	// zero time. Returning one several times is harmless.
	Revocations(ctx context.Context, since time.Time) ([]Revocation, error)
}

// normalize validates r and puts its serial in canonical form (lowercase hex, no leading zeros).
func (r Revocation) normalize() (Revocation, error) {
	switch {
	case r.Serial == "" && r.ID.IsZero():
		return r, errors.New("revocation names neither a serial nor a SPIFFE ID")
	case r.Serial != "" && !r.ID.IsZero():
		return r, errors.New("revocation names both a serial and a SPIFFE ID")
	case r.RevokedAt.IsZero():
		return r, errors.New("revocation without a time")
	}
	if r.Serial != "" {
		s := strings.TrimPrefix(strings.ToLower(r.Serial), "0x")
		n, ok := new(big.Int).SetString(s, 16)
		if !ok || n.Sign() <= 0 || strings.ContainsAny(s, "+-_") {
			return r, fmt.Errorf("revocation serial %q is not a positive hexadecimal number", r.Serial)
		}
		r.Serial = n.Text(16)
	}
	return r, nil
}

func (r Revocation) describe() string {
	if r.Serial != "" {
		return "serial " + r.Serial + " revoked"
	}
	return "SPIFFE ID " + r.ID.String() + " revoked at " + r.RevokedAt.UTC().Format(time.RFC3339)
}

// revocations is the set every handshake consults.
//
// Concurrency: mu guards the maps and the cursor; handshakes take the read lock. No other lock is
// taken while mu is held.
type revocations struct {
	mu        sync.RWMutex
	serials   map[string]Revocation
	ids       map[spiffeid.ID]Revocation
	cursor    time.Time // latest RevokedAt read from the store
	isLoaded  bool      // false until the first successful read when there is a store
	refreshed time.Time // time of the last successful read from the store
}

func newRevocations(loaded bool) *revocations {
	return &revocations{serials: map[string]Revocation{}, ids: map[spiffeid.ID]Revocation{}, isLoaded: loaded}
}

func (s *revocations) loaded() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.isLoaded
}

// add merges rs (already normalised) and returns how many changed the set. Only revocations read
// from the store move the cursor: a local one is stamped by this replica's clock, which must not
// make the next read skip what others recorded.
func (s *revocations) add(rs []Revocation, fromStore bool, now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := 0
	for _, r := range rs {
		if fromStore && r.RevokedAt.After(s.cursor) {
			s.cursor = r.RevokedAt
		}
		if !r.Expires.IsZero() && now.After(r.Expires) {
			continue // read again within the overlap after it was pruned
		}
		if r.Serial != "" {
			old, ok := s.serials[r.Serial]
			if !ok {
				changed++
			}
			r.Expires = laterExpiry(old.Expires, r.Expires, ok)
			s.serials[r.Serial] = r
			continue
		}
		old, ok := s.ids[r.ID]
		if ok && !r.RevokedAt.After(old.RevokedAt) {
			// An older revocation of the ID is covered by the one held: keep the widest.
			old.Expires = laterExpiry(old.Expires, r.Expires, true)
			s.ids[r.ID] = old
			continue
		}
		if ok {
			r.Expires = laterExpiry(old.Expires, r.Expires, true)
		}
		s.ids[r.ID] = r
		changed++
	}
	return changed
}

// laterExpiry merges two expiries, zero meaning never.
func laterExpiry(a, b time.Time, haveA bool) time.Time {
	if !haveA {
		return b
	}
	if a.IsZero() || b.IsZero() {
		return time.Time{}
	}
	if a.After(b) {
		return a
	}
	return b
}

// prune forgets the entries expired at now.
func (s *revocations) prune(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, r := range s.serials {
		if !r.Expires.IsZero() && now.After(r.Expires) {
			delete(s.serials, k)
		}
	}
	for k, r := range s.ids {
		if !r.Expires.IsZero() && now.After(r.Expires) {
			delete(s.ids, k)
		}
	}
}

// match returns the revocation that applies to p, if any.
func (s *revocations) match(p *Peer) (Revocation, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if r, ok := s.ids[p.ID]; ok && !p.NotBefore.After(r.RevokedAt) {
		return r, true
	}
	if len(s.serials) == 0 {
		return Revocation{}, false
	}
	for _, c := range p.Certificates {
		if r, ok := s.serials[serialHex(c)]; ok {
			return r, true
		}
	}
	return Revocation{}, false
}

func (s *revocations) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.serials) + len(s.ids)
}

// since is the cursor to read the store from: the latest RevokedAt seen minus overlap, so that a
// revocation committed late or stamped by a replica whose clock lags is still read; the zero time
// before the first read.
func (s *revocations) since(overlap time.Duration) time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.isLoaded || s.refreshed.IsZero() || s.cursor.IsZero() {
		return time.Time{}
	}
	return s.cursor.Add(-overlap)
}

func (s *revocations) markRefreshed(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.isLoaded = true
	s.refreshed = now
}

func (s *revocations) lastRefresh() time.Time {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.refreshed
}
