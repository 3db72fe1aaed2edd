package apikey

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/nops-kernel/nops/internal/errs"
)

const (
	// Prefix starts every raw key, so a credential is recognisable as a NOPS API key (by people and
	// by secret scanners) before anything else is looked at.
	Prefix = "nops_"
	// idPrefix starts every key ID.
	idPrefix = "ak"
	// IDLen is the length of a key ID: "ak" and a 26-character ULID.
	IDLen = len(idPrefix) + ulid.EncodedSize
	// SecretLen is the length of the secret part: 43 base62 characters, ≈ 256.03 bits.
	SecretLen = 43
	// RawLen is the exact length of a raw key.
	RawLen = len(Prefix) + IDLen + 1 + SecretLen

	base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	// crockford is the lower-case ULID alphabet (no i, l, o, u).
	crockford = "0123456789abcdefghjkmnpqrstvwxyz"

	// invalidKey is the one message of every verification failure.
	invalidKey = "invalid or expired api key"
)

// errInvalid returns the uniform verification error; cause is for logs and must never contain
// the secret.
func errInvalid(cause error) error {
	return errs.Wrap(errs.Unauthenticated, cause, invalidKey)
}

// Parse splits a raw key into its key ID and secret. Anything but exactly
// "nops_<keyid>_<secret>" with the documented lengths and alphabets is refused with the uniform
// verification error, whose cause never quotes the input.
func Parse(raw string) (id, secret string, err error) {
	if len(raw) != RawLen {
		return "", "", errInvalid(fmt.Errorf("malformed api key: %d bytes, want %d", len(raw), RawLen))
	}
	if !strings.HasPrefix(raw, Prefix) {
		return "", "", errInvalid(errors.New("malformed api key: missing prefix"))
	}
	id = raw[len(Prefix) : len(Prefix)+IDLen]
	if !ValidID(id) {
		return "", "", errInvalid(errors.New("malformed api key: bad key id"))
	}
	if raw[len(Prefix)+IDLen] != '_' {
		return "", "", errInvalid(errors.New("malformed api key: missing separator"))
	}
	secret = raw[len(Prefix)+IDLen+1:]
	for i := 0; i < len(secret); i++ {
		if !isBase62(secret[i]) {
			return "", "", errInvalid(errors.New("malformed api key: bad secret alphabet"))
		}
	}
	return id, secret, nil
}

// ValidID reports whether id is a well-formed key ID: "ak" and a lower-case ULID whose first
// character is at most '7' (a larger one would overflow the 128-bit ULID).
func ValidID(id string) bool {
	if len(id) != IDLen || !strings.HasPrefix(id, idPrefix) {
		return false
	}
	u := id[len(idPrefix):]
	if u[0] > '7' {
		return false
	}
	for i := 0; i < len(u); i++ {
		if strings.IndexByte(crockford, u[i]) < 0 {
			return false
		}
	}
	return true
}

func isBase62(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

// format returns the raw key of id and secret.
func format(id, secret string) string { return Prefix + id + "_" + secret }

// newID returns a fresh key ID whose time part is now.
func newID(now time.Time) (string, error) {
	u, err := ulid.New(ulid.Timestamp(now), ulid.DefaultEntropy())
	if err != nil {
		return "", fmt.Errorf("generate key id: %w", err)
	}
	return idPrefix + strings.ToLower(u.String()), nil
}

// newSecret returns SecretLen characters drawn uniformly from base62. Bytes ≥ 248 (= 4·62) are
// dropped so that b%62 favours no character.
func newSecret() (string, error) {
	out := make([]byte, 0, SecretLen)
	buf := make([]byte, 64)
	for len(out) < SecretLen {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("generate key secret: %w", err)
		}
		for _, b := range buf {
			if b >= 248 {
				continue
			}
			out = append(out, base62[b%62])
			if len(out) == SecretLen {
				break
			}
		}
	}
	return string(out), nil
}
