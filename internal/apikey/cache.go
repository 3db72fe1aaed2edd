package apikey

import (
	"crypto/sha256"
	"crypto/subtle"
	"sync"
	"time"
)

// Limits of the verified-key cache (Options.CacheTTL).
const (
	// DefaultCacheTTL is how long a verified key is served from memory when Options.CacheTTL is 0.
	DefaultCacheTTL = time.Second
	// MaxCacheTTL bounds Options.CacheTTL: a revocation, rotation or expiry-changing write made by
	// another replica (or straight in the database) takes effect here at most this late.
	MaxCacheTTL = 2 * time.Second
	// DefaultCacheSize bounds the cached keys when Options.CacheSize is 0.
	DefaultCacheSize = 10000
)

// verifiedCache remembers, per key ID, the last raw key that verified and the key row it
// verified against, for at most ttl. It stores a SHA-256 of the raw key, never the key: a hit
// needs the very raw key that verified, so a wrong secret always takes the full path (store read
// and the two keyed digests).
//
// Revoke and Rotate of this process call forget: the entry is dropped and the ID is kept out of
// the cache for ttl, so a read that raced the change (or ran before its transaction committed)
// is never served. Changes made elsewhere are seen when the entry expires.
//
// Concurrency: mu guards every field and is never held across I/O.
type verifiedCache struct {
	ttl  time.Duration
	size int

	mu      sync.Mutex
	entries map[string]verifiedEntry
	bypass  map[string]time.Time // key ID → until when it is not cached
	epoch   uint64               // grows with every forget
}

type verifiedEntry struct {
	digest  [sha256.Size]byte // of the raw key that verified
	key     Key
	current bool // the raw key matched the current secret (else the previous one)
	until   time.Time
}

func newVerifiedCache(ttl time.Duration, size int) *verifiedCache {
	if ttl <= 0 {
		return nil
	}
	return &verifiedCache{ttl: ttl, size: size, entries: map[string]verifiedEntry{}, bypass: map[string]time.Time{}}
}

// get returns the cached verification of raw for id, if one is live at now, and the epoch to
// hand to put after a miss.
func (c *verifiedCache) get(id, raw string, now time.Time) (verifiedEntry, bool, uint64) {
	sum := sha256.Sum256([]byte(raw))
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok || !now.Before(e.until) || subtle.ConstantTimeCompare(e.digest[:], sum[:]) != 1 {
		return verifiedEntry{}, false, c.epoch
	}
	return e, true, c.epoch
}

// put caches a verification that began at epoch, unless a forget happened since, the ID is
// kept out, or the cache is full of live entries.
func (c *verifiedCache) put(raw string, k Key, current bool, now time.Time, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch {
		return
	}
	if until, ok := c.bypass[k.ID]; ok {
		if now.Before(until) {
			return
		}
		delete(c.bypass, k.ID)
	}
	if _, ok := c.entries[k.ID]; !ok && len(c.entries) >= c.size {
		for id, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, id)
			}
		}
		for id, until := range c.bypass {
			if !now.Before(until) {
				delete(c.bypass, id)
			}
		}
		if len(c.entries) >= c.size {
			return
		}
	}
	c.entries[k.ID] = verifiedEntry{digest: sha256.Sum256([]byte(raw)), key: k, current: current, until: now.Add(c.ttl)}
}

// forget drops id and keeps it out of the cache for ttl from now.
func (c *verifiedCache) forget(id string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	delete(c.entries, id)
	if len(c.bypass) >= c.size {
		for b, until := range c.bypass {
			if !now.Before(until) {
				delete(c.bypass, b)
			}
		}
	}
	c.bypass[id] = now.Add(c.ttl)
}
