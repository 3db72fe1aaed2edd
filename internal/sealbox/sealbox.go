package sealbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
)

const (
	// KeyLen is the length of a KEK: AES-256.
	KeyLen = 32
	// MaxVersionLen bounds a KEK version, which every sealed value carries.
	MaxVersionLen = 32

	format   = 0x01
	nonceLen = 12 // GCM's standard nonce
	tagLen   = 16
)

// ErrOpen is the one error Open returns for a value it cannot open: malformed, sealed under a KEK
// the Box does not hold, tampered with, or given other associated data. The cause is not told
// apart on purpose: it would only help someone probing sealed values.
var ErrOpen = errors.New("sealbox: cannot open the sealed value")

// Key is one KEK. Secret is never printed: String, Format and LogValue show the version only.
type Key struct {
	Version string
	Secret  []byte // KeyLen bytes
}

// String shows the version only.
func (k Key) String() string { return "kek " + k.Version }

// Format makes every fmt verb print String, so even %x never shows the secret.
func (k Key) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// LogValue logs the version only.
func (k Key) LogValue() slog.Value { return slog.GroupValue(slog.String("version", k.Version)) }

func (k Key) validate() error {
	if !validVersion(k.Version) {
		return fmt.Errorf("kek version %q: want 1..%d characters of [A-Za-z0-9._-]", k.Version, MaxVersionLen)
	}
	if len(k.Secret) != KeyLen {
		return fmt.Errorf("kek %s: %d bytes, want %d", k.Version, len(k.Secret), KeyLen)
	}
	return nil
}

func validVersion(v string) bool {
	if len(v) == 0 || len(v) > MaxVersionLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Box seals with its current KEK and opens values sealed with any of its KEKs.
type Box struct {
	current string
	aeads   map[string]cipher.AEAD
}

// New returns a Box sealing with current and opening with current and older. Versions must be
// distinct.
func New(current Key, older ...Key) (*Box, error) {
	b := &Box{current: current.Version, aeads: make(map[string]cipher.AEAD, 1+len(older))}
	for _, k := range append([]Key{current}, older...) {
		if err := k.validate(); err != nil {
			return nil, fmt.Errorf("new sealbox: %w", err)
		}
		if _, dup := b.aeads[k.Version]; dup {
			return nil, fmt.Errorf("new sealbox: kek version %s given twice", k.Version)
		}
		block, err := aes.NewCipher(k.Secret)
		if err != nil {
			return nil, fmt.Errorf("new sealbox: kek %s: %w", k.Version, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("new sealbox: kek %s: %w", k.Version, err)
		}
		b.aeads[k.Version] = aead
	}
	return b, nil
}

// Current returns the version of the KEK new seals use.
func (b *Box) Current() string { return b.current }

// Versions returns the versions of every KEK the Box holds, sorted.
func (b *Box) Versions() []string { return slices.Sorted(maps.Keys(b.aeads)) }

// String shows the versions only.
func (b *Box) String() string {
	return fmt.Sprintf("sealbox current=%s versions=%v", b.current, b.Versions())
}

// Seal encrypts plaintext under the current KEK, bound to aad (for example the ID of the row the
// value is stored in).
func (b *Box) Seal(plaintext, aad []byte) ([]byte, error) {
	head := header(b.current)
	out := make([]byte, len(head), len(head)+nonceLen+len(plaintext)+tagLen)
	copy(out, head)
	nonce := out[len(head) : len(head)+nonceLen]
	out = out[:len(head)+nonceLen]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: draw nonce: %w", err)
	}
	return b.aeads[b.current].Seal(out, nonce, plaintext, additional(head, aad)), nil
}

// Open decrypts a value Seal returned for the same aad. Any failure is ErrOpen.
func (b *Box) Open(sealed, aad []byte) ([]byte, error) {
	if len(sealed) < 2 || sealed[0] != format {
		return nil, ErrOpen
	}
	n := int(sealed[1])
	if n == 0 || n > MaxVersionLen || len(sealed) < 2+n+nonceLen+tagLen {
		return nil, ErrOpen
	}
	aead, ok := b.aeads[string(sealed[2:2+n])]
	if !ok {
		return nil, ErrOpen
	}
	head := sealed[:2+n]
	nonce := sealed[2+n : 2+n+nonceLen]
	plain, err := aead.Open(nil, nonce, sealed[2+n+nonceLen:], additional(head, aad))
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// Version returns the version of the KEK a sealed value names, and whether it is well formed
// enough to name one. A caller re-seals values whose version is not Current after a rotation.
func Version(sealed []byte) (string, bool) {
	if len(sealed) < 2 || sealed[0] != format {
		return "", false
	}
	n := int(sealed[1])
	if n == 0 || n > MaxVersionLen || len(sealed) < 2+n {
		return "", false
	}
	return string(sealed[2 : 2+n]), true
}

func header(version string) []byte {
	return append([]byte{format, byte(len(version))}, version...)
}

// additional is the GCM additional data: the header, then the caller's data.
func additional(head, aad []byte) []byte {
	out := make([]byte, 0, len(head)+len(aad))
	return append(append(out, head...), aad...)
}
