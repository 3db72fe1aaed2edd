package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// maxKeyFileSize bounds what LoadOrCreateSigner reads; a note signer key is about 90 bytes.
const maxKeyFileSize = 4 << 10

// Signer signs checkpoints with an Ed25519 note key. It implements note.Signer and also carries
// the matching verifier, so that SignCheckpoint can authenticate the previous checkpoint before
// extending it.
type Signer struct {
	signer      note.Signer
	verifier    note.Verifier
	verifierKey string
}

var _ note.Signer = (*Signer)(nil)

// ValidKeyName reports whether name may name a checkpoint key: 1 to 128 of ASCII letters, digits
// and '.', '_', '-', ':', '/', not starting or ending with '/'. The key name is the prefix of
// every checkpoint origin ("<name>/<tree>"), typically the kernel's host name.
func ValidKeyName(name string) bool {
	if name == "" || len(name) > 128 || name[0] == '/' || name[len(name)-1] == '/' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '-' || c == ':' || c == '/') {
			return false
		}
	}
	return true
}

// NewSigner returns the Signer of an encoded note signer key ("PRIVATE+KEY+<name>+<hash>+<key>",
// as made by note.GenerateKey). Only Ed25519 keys exist in that format.
func NewSigner(skey string) (*Signer, error) {
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("parse checkpoint signer key: %w", err)
	}
	if !ValidKeyName(s.Name()) {
		return nil, fmt.Errorf("checkpoint signer key name %q is not a valid key name", s.Name())
	}
	// note.Signer does not expose its public key: derive it from the seed. NewSigner has already
	// checked the layout and that the key hash matches the derived public key. The key data is
	// everything after the fourth '+': base64 has '+' in its alphabet.
	parts := strings.SplitN(skey, "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize {
		return nil, errors.New("parse checkpoint signer key: malformed key data")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return nil, fmt.Errorf("checkpoint verifier key: %w", err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("checkpoint verifier key: %w", err)
	}
	if v.KeyHash() != s.KeyHash() {
		return nil, errors.New("checkpoint verifier key does not match the signer key")
	}
	return &Signer{signer: s, verifier: v, verifierKey: vkey}, nil
}

// Name returns the key name, the prefix of every checkpoint origin.
func (s *Signer) Name() string { return s.signer.Name() }

// KeyHash returns the note key hash.
func (s *Signer) KeyHash() uint32 { return s.signer.KeyHash() }

// Sign signs msg.
func (s *Signer) Sign(msg []byte) ([]byte, error) { return s.signer.Sign(msg) }

// Verifier returns the verifier of the key.
func (s *Signer) Verifier() note.Verifier { return s.verifier }

// VerifierKey returns the encoded verifier key ("<name>+<hash>+<key>"): what is published, and
// what auditors pass to Verify, CheckInclusion and CheckConsistency.
func (s *Signer) VerifierKey() string { return s.verifierKey }

// LoadOrCreateSigner loads the checkpoint signer key from the file at path, creating it with a
// new Ed25519 key named name when the file does not exist. The key lives in a file, never in the
// database, so that someone who can rewrite the database cannot sign a rewritten log. A new file
// is created 0600, its directory 0700 if absent; an existing file readable or writable by group
// or others, or in a directory writable by group or others, is refused, as is a key whose name is
// not name (the name is in every origin: changing it would orphan the signed history). It returns
// the signer and the verifier key to publish.
//
// Two processes creating the same file at once end up with one key: the file is written under a
// temporary name (os.CreateTemp makes it 0600) and linked into place, and the loser loads the winner's key.
func LoadOrCreateSigner(path, name string) (*Signer, string, error) {
	if !ValidKeyName(name) {
		return nil, "", fmt.Errorf("checkpoint key name %q: must be 1 to 128 of A-Z a-z 0-9 . _ - : /, not starting or ending with /", name)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("create checkpoint key directory %s: %w", dir, err)
	}
	if err := checkPerm(dir, 0o022); err != nil {
		return nil, "", err
	}
	s, err := loadSigner(path, name)
	if err == nil {
		return s, s.VerifierKey(), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, "", err
	}
	skey, _, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return nil, "", fmt.Errorf("generate checkpoint key: %w", err)
	}
	if err := createExclusive(dir, path, []byte(skey+"\n")); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, "", err
	}
	// Load what is in place now: ours, or the key of a process that linked first.
	s, err = loadSigner(path, name)
	if err != nil {
		return nil, "", err
	}
	return s, s.VerifierKey(), nil
}

// checkPerm refuses path when its permission bits include any of forbidden.
func checkPerm(path string, forbidden fs.FileMode) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if perm := fi.Mode().Perm(); perm&forbidden != 0 {
		return fmt.Errorf("checkpoint key path %s has permissions %04o: refuse anything wider than %04o", path, perm, 0o777&^forbidden)
	}
	return nil
}

func loadSigner(path, name string) (*Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint key %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat checkpoint key %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("checkpoint key %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("checkpoint key %s has permissions %04o: refuse anything wider than 0600", path, perm)
	}
	if fi.Size() > maxKeyFileSize {
		return nil, fmt.Errorf("checkpoint key %s is larger than %d bytes", path, maxKeyFileSize)
	}
	buf := make([]byte, fi.Size())
	if _, err := f.ReadAt(buf, 0); err != nil {
		return nil, fmt.Errorf("read checkpoint key %s: %w", path, err)
	}
	s, err := NewSigner(strings.TrimSuffix(string(buf), "\n"))
	if err != nil {
		return nil, fmt.Errorf("checkpoint key %s: %w", path, err)
	}
	if s.Name() != name {
		return nil, fmt.Errorf("checkpoint key %s is named %q, configured name is %q", path, s.Name(), name)
	}
	return s, nil
}

// createExclusive writes data to a new file at path, never replacing an existing one
// (fs.ErrExist then) and never leaving a partial file at path.
func createExclusive(dir, path string, data []byte) (err error) {
	tmp, err := os.CreateTemp(dir, ".checkpoint-key-*")
	if err != nil {
		return fmt.Errorf("create checkpoint key: %w", err)
	}
	defer func() {
		_ = os.Remove(tmp.Name())
	}()
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write checkpoint key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync checkpoint key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close checkpoint key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		return fmt.Errorf("install checkpoint key %s: %w", path, err)
	}
	// Make the new directory entry durable: losing the key loses the ability to extend the
	// signed history.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync checkpoint key directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync checkpoint key directory: %w", err)
	}
	return nil
}
