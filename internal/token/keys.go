package token

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oklog/ulid/v2"
)

// The signing algorithms, as spelled in the JWT alg header and in SigningKey.Algorithm.
const (
	AlgEdDSA = "EdDSA"
	AlgES256 = "ES256"
	AlgRS256 = "RS256"
	AlgHS256 = "HS256"
)

const (
	// rsaBits is the size of generated RSA keys and the smallest size accepted from the store.
	rsaBits = 2048
	// minHS256Secret is the shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key at least
	// as long as the hash output.
	minHS256Secret = 32
	// maxKIDLen bounds kid before any lookup.
	maxKIDLen = 64
)

// key is one parsed signing key with what verification needs, built once per reload.
type key struct {
	id        string
	alg       string
	createdAt time.Time
	// activatesAt is when the key starts signing (CreatedAt for keys stored without one);
	// retiresAt, zero while the key is current, is when it stops verifying and leaves the JWKS.
	activatesAt time.Time
	retiresAt   time.Time
	method      jwt.SigningMethod
	sign        any // ed25519.PrivateKey, *ecdsa.PrivateKey, *rsa.PrivateKey or []byte
	verify      any // the public key, or the secret for HS256
	parser      *jwt.Parser
	jwk         *jwk // nil for symmetric keys, which are never published
}

// keySet is an immutable snapshot of every usable key; a reload replaces it whole.
type keySet struct {
	byID map[string]*key // every key not retired when loaded, and the configured HS256 secret
	// retired holds the IDs of keys already retired when loaded: refused without a reload.
	retired map[string]bool
	// signers are the keys of the configured algorithm that sign now or will (signerAt picks
	// one); just the configured secret when there is one.
	signers []*key
	jwks    []byte
	// jwksUntil is the earliest retirement among the keys in jwks (zero: none retires): from then
	// on JWKS filters the document again until the next reload.
	jwksUntil time.Time
	ordered   []*key // byID's keys, oldest first
}

// signerAt returns the key that signs at now: the oldest current key (not superseded) already
// active; else, while the successor of the superseded keys waits for its activation, the one of
// them activated last and not yet retired; nil when there is neither.
//
// Why this is safe: a rotation moves the new key's activation past every key it supersedes
// (KeyStore.RotateSigningKey), and retires them at that activation + token TTL + leeway. A
// superseded key therefore signs only until its successor activates, and every token it signed
// has expired (leeway included) by the time it retires. Replicas racing at first start each store
// a current key; the oldest wins, so they converge on one at their next reload.
func signerAt(keys []*key, now time.Time) *key {
	var current, superseded *key
	for _, k := range keys {
		if now.Before(k.activatesAt) {
			continue
		}
		if k.retiresAt.IsZero() {
			if current == nil || olderKey(k, current) < 0 {
				current = k
			}
			continue
		}
		if now.Before(k.retiresAt) && (superseded == nil || k.activatesAt.After(superseded.activatesAt) ||
			k.activatesAt.Equal(superseded.activatesAt) && olderKey(k, superseded) > 0) {
			superseded = k
		}
	}
	if current != nil {
		return current
	}
	return superseded
}

// validKID reports whether kid is a short identifier of letters, digits, '_' and '-'. It is
// checked before any lookup so path, SQL or control characters never reach anything.
func validKID(kid string) bool {
	if len(kid) == 0 || len(kid) > maxKIDLen {
		return false
	}
	for i := 0; i < len(kid); i++ {
		c := kid[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// methodFor returns the jwt signing method of alg, or nil for an algorithm we do not support.
func methodFor(alg string) jwt.SigningMethod {
	switch alg {
	case AlgEdDSA:
		return jwt.SigningMethodEdDSA
	case AlgES256:
		return jwt.SigningMethodES256
	case AlgRS256:
		return jwt.SigningMethodRS256
	case AlgHS256:
		return jwt.SigningMethodHS256
	}
	return nil
}

// generateKey creates a new signing key of alg, ready to be stored.
func generateKey(alg string, now time.Time) (SigningKey, error) {
	var private []byte
	switch alg {
	case AlgHS256:
		private = make([]byte, minHS256Secret)
		if _, err := rand.Read(private); err != nil {
			return SigningKey{}, fmt.Errorf("generate hs256 secret: %w", err)
		}
	default:
		var pk any
		var err error
		switch alg {
		case AlgEdDSA:
			_, pk, err = ed25519.GenerateKey(rand.Reader)
		case AlgES256:
			pk, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		case AlgRS256:
			pk, err = rsa.GenerateKey(rand.Reader, rsaBits)
		default:
			return SigningKey{}, fmt.Errorf("generate key: unsupported algorithm %q", alg)
		}
		if err != nil {
			return SigningKey{}, fmt.Errorf("generate %s key: %w", alg, err)
		}
		if private, err = x509.MarshalPKCS8PrivateKey(pk); err != nil {
			return SigningKey{}, fmt.Errorf("marshal %s key: %w", alg, err)
		}
	}
	// The timestamp is taken after the (possibly slow) generation, right before the insert, so the
	// order of CreatedAt follows the order of inserts as closely as the clocks allow.
	now = now.UTC()
	id, err := ulid.New(ulid.Timestamp(now), rand.Reader)
	if err != nil {
		return SigningKey{}, fmt.Errorf("generate key id: %w", err)
	}
	return SigningKey{ID: "key_" + strings.ToLower(id.String()), Algorithm: alg, Private: private, CreatedAt: now}, nil
}

// parseStored turns a stored key into a usable one, checking that its material matches its
// declared algorithm: a key stored as ES256 must be a P-256 ECDSA key, and so on.
func parseStored(sk SigningKey) (*key, error) {
	if !validKID(sk.ID) {
		return nil, errors.New("id is not a valid kid")
	}
	k := &key{id: sk.ID, alg: sk.Algorithm, createdAt: sk.CreatedAt, activatesAt: sk.activation(), retiresAt: sk.RetiresAt,
		method: methodFor(sk.Algorithm)}
	if k.method == nil {
		return nil, fmt.Errorf("unsupported algorithm %q", sk.Algorithm)
	}
	if sk.Algorithm == AlgHS256 {
		if len(sk.Private) < minHS256Secret {
			return nil, fmt.Errorf("hs256 secret shorter than %d bytes", minHS256Secret)
		}
		secret := slices.Clone(sk.Private)
		k.sign, k.verify = secret, secret
		return k, nil
	}
	pk, err := x509.ParsePKCS8PrivateKey(sk.Private)
	if err != nil {
		return nil, fmt.Errorf("parse pkcs8: %w", err)
	}
	switch p := pk.(type) {
	case ed25519.PrivateKey:
		if sk.Algorithm != AlgEdDSA {
			return nil, fmt.Errorf("ed25519 key stored as %s", sk.Algorithm)
		}
		k.sign, k.verify = p, p.Public()
	case *ecdsa.PrivateKey:
		if sk.Algorithm != AlgES256 || p.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ecdsa %s key stored as %s", p.Curve.Params().Name, sk.Algorithm)
		}
		k.sign, k.verify = p, &p.PublicKey
	case *rsa.PrivateKey:
		if sk.Algorithm != AlgRS256 || p.N.BitLen() < rsaBits {
			return nil, fmt.Errorf("rsa %d-bit key stored as %s", p.N.BitLen(), sk.Algorithm)
		}
		k.sign, k.verify = p, &p.PublicKey
	default:
		return nil, fmt.Errorf("unsupported key type %T", pk)
	}
	if k.jwk, err = publicJWK(k); err != nil {
		return nil, err
	}
	return k, nil
}

// secretKey builds the key of an HS256 secret given in Config. Its kid is a truncated HMAC of a
// fixed label under the secret: stable across replicas sharing the secret, and useless to anyone
// trying to learn it.
func secretKey(secret []byte) *key {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("nops-kid"))
	s := slices.Clone(secret)
	return &key{
		id:     "hs_" + hex.EncodeToString(mac.Sum(nil)[:8]),
		alg:    AlgHS256,
		method: jwt.SigningMethodHS256,
		sign:   s,
		verify: s,
	}
}

// olderKey orders keys oldest first, ties broken by ID, so every replica that sees the same keys
// picks the same active one whatever order the store returns them in.
func olderKey(a, b *key) int {
	if c := a.createdAt.Compare(b.createdAt); c != 0 {
		return c
	}
	return cmp.Compare(a.id, b.id)
}
