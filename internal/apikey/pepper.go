package apikey

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"golang.org/x/crypto/blake2b"
)

const (
	// MinPepperLen is the shortest pepper accepted, in bytes: as long as the digest.
	MinPepperLen = 32
	// MaxPepperLen is the longest pepper accepted: the largest BLAKE2b key.
	MaxPepperLen = blake2b.Size
	// maxVersionLen bounds a pepper version, which is stored next to every key digest.
	maxVersionLen = 32
)

// Pepper is one server secret keying the digest of API key secrets. Version is stored with every
// digest made with it. Key is never logged: String, GoString and LogValue show the version only.
type Pepper struct {
	Version string
	Key     []byte
}

// String shows the version only, so a Pepper printed by mistake does not leak its key.
func (p Pepper) String() string { return "pepper " + p.Version }

// LogValue logs the version only.
func (p Pepper) LogValue() slog.Value {
	return slog.GroupValue(slog.String("version", p.Version))
}

// Format makes every fmt verb print String, so even %+v and %x never show the key.
func (p Pepper) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(p.String())) }

func (p Pepper) validate() error {
	if !validVersion(p.Version) {
		return fmt.Errorf("pepper version %q: want 1..%d characters of [A-Za-z0-9._-]", p.Version, maxVersionLen)
	}
	if len(p.Key) < MinPepperLen || len(p.Key) > MaxPepperLen {
		return fmt.Errorf("pepper %s: key of %d bytes, want %d..%d", p.Version, len(p.Key), MinPepperLen, MaxPepperLen)
	}
	return nil
}

func validVersion(v string) bool {
	if len(v) == 0 || len(v) > maxVersionLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !isBase62(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// digest returns the keyed BLAKE2b-256 of "<id>_<secret>" under p.
func (p Pepper) digest(id, secret string) []byte {
	h, err := blake2b.New256(p.Key)
	if err != nil {
		// validate bounds the key to what BLAKE2b accepts, and every Pepper in use went through it.
		panic(fmt.Sprintf("blake2b with pepper %s: %v", p.Version, err))
	}
	h.Write([]byte(id))
	h.Write([]byte{'_'})
	h.Write([]byte(secret))
	return h.Sum(nil)
}

// PepperFromConfig returns the pepper given in configuration: secretText is used as the key
// bytes as is, and must be 32..64 bytes of printable ASCII without spaces — for example the output
// of `openssl rand -base64 32` or `openssl rand -hex 32`. Leading or trailing whitespace is an
// error rather than trimmed, so every replica reading the same setting keys digests alike.
func PepperFromConfig(versionID, secretText string) (Pepper, error) {
	for i := 0; i < len(secretText); i++ {
		if c := secretText[i]; c <= ' ' || c > '~' {
			return Pepper{}, fmt.Errorf("pepper %s: secret must be printable ASCII without spaces", versionID)
		}
	}
	p := Pepper{Version: versionID, Key: []byte(secretText)}
	if err := p.validate(); err != nil {
		return Pepper{}, err
	}
	return p, nil
}

// Peppers is the current pepper, which hashes new and rotated secrets, and the older ones still
// accepted for verification. The zero value holds none and is refused by NewService.
type Peppers struct {
	current   string
	byVersion map[string]Pepper
}

// NewPeppers returns the set with current as the current pepper and older kept for verification.
// Versions must be distinct and every pepper valid.
func NewPeppers(current Pepper, older ...Pepper) (Peppers, error) {
	ps := Peppers{current: current.Version, byVersion: make(map[string]Pepper, 1+len(older))}
	for _, p := range append([]Pepper{current}, older...) {
		if err := p.validate(); err != nil {
			return Peppers{}, err
		}
		if _, dup := ps.byVersion[p.Version]; dup {
			return Peppers{}, fmt.Errorf("pepper version %s given twice", p.Version)
		}
		ps.byVersion[p.Version] = Pepper{Version: p.Version, Key: slices.Clone(p.Key)}
	}
	return ps, nil
}

// Current returns the pepper new digests are made with.
func (ps Peppers) Current() Pepper { return ps.byVersion[ps.current] }

// Get returns the pepper of version, if it is in the set.
func (ps Peppers) Get(version string) (Pepper, bool) {
	p, ok := ps.byVersion[version]
	return p, ok
}

// Versions returns every version in the set, sorted.
func (ps Peppers) Versions() []string { return slices.Sorted(maps.Keys(ps.byVersion)) }

// String shows the versions only.
func (ps Peppers) String() string {
	return fmt.Sprintf("peppers current=%s versions=%v", ps.current, ps.Versions())
}

// LogValue logs the versions only.
func (ps Peppers) LogValue() slog.Value {
	return slog.GroupValue(slog.String("current", ps.current), slog.Any("versions", ps.Versions()))
}

// Format makes every fmt verb print String.
func (ps Peppers) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(ps.String())) }

var errNoPeppers = errors.New("no pepper configured")
