package sealbox

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nops-kernel/nops/internal/keyfile"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	// fileMode is the mode of a generated key file; a file granting anything to group or others
	// is refused on load.
	fileMode = 0o600
	// maxFile bounds what is read from a key file.
	maxFile = 64 << 10
)

// keyFile is the JSON document of a key file; see the package documentation.
type keyFile struct {
	Current string    `json:"current"`
	Keys    []fileKey `json:"keys"`
}

type fileKey struct {
	Version   string    `json:"version"`
	Key       []byte    `json:"key"` // standard base64 in JSON
	CreatedAt time.Time `json:"created_at"`
}

// LoadOrCreateFile opens the Box of the key file at path, generating the file with one random
// KEK "k1" when there is none. The directory must exist. See the package documentation for the
// format and the permission rule.
func LoadOrCreateFile(path string) (*Box, error) {
	b, err := loadFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	secret, err := generate()
	if err != nil {
		return nil, err
	}
	kf := keyFile{Current: "k1", Keys: []fileKey{{Version: "k1", Key: secret, CreatedAt: nowSecond()}}}
	if err := writeFile(path, kf, false); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, err
	}
	// Whether this call or a concurrent one created the file, everyone reads the one that won.
	return loadFile(path)
}

// RotateFile adds a generated KEK to the file at path and makes it current in one step (AddFile
// then PromoteFile); the older ones stay for opening. Its version is "k<n+1>", n being the
// largest number among versions "k<n>" already there. The file is replaced atomically. With
// several replicas use the staged AddFile, PromoteFile and RetireFile instead (docs/operations.md,
// "Rotating keys"): a replica that has not reloaded the file yet cannot open what the new KEK
// sealed.
func RotateFile(path string) (*Box, error) {
	err := updateFile(path, func(kf *keyFile) error {
		secret, err := generate()
		if err != nil {
			return err
		}
		version := nextVersion(kf)
		kf.Keys = append(kf.Keys, fileKey{Version: version, Key: secret, CreatedAt: nowSecond()})
		kf.Current = version
		return nil
	})
	if err != nil {
		return nil, err
	}
	return loadFile(path)
}

// nextVersion returns "k<n+1>", n being the largest number among versions "k<n>" of kf.
func nextVersion(kf *keyFile) string {
	n := 0
	for _, k := range kf.Keys {
		if num, ok := strings.CutPrefix(k.Version, "k"); ok {
			if v, err := strconv.Atoi(num); err == nil && v > n {
				n = v
			}
		}
	}
	return "k" + strconv.Itoa(n+1)
}

func loadFile(path string) (*Box, error) {
	_, kf, err := readFile(path)
	if err != nil {
		return nil, err
	}
	b, err := kf.box()
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return b, nil
}

// readFile checks the permissions of the opened file (not of the path, which could be swapped
// between a check and the open) and decodes it strictly.
// It returns the file's bytes with the decoded document.
func readFile(path string) ([]byte, keyFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, keyFile{}, fmt.Errorf("open key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, keyFile{}, fmt.Errorf("stat key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, keyFile{}, fmt.Errorf("key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, keyFile{}, fmt.Errorf("key file %s has mode %04o: it must grant nothing to group or others (chmod 600)", path, perm)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, keyFile{}, fmt.Errorf("read key file %s: %w", path, err)
	}
	if len(raw) > maxFile {
		return nil, keyFile{}, fmt.Errorf("key file %s is larger than %d bytes", path, maxFile)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var kf keyFile
	if err := dec.Decode(&kf); err != nil {
		// json errors name offsets and types, never the content, so no key leaks here.
		return nil, keyFile{}, fmt.Errorf("decode key file %s: %w", path, err)
	}
	if dec.More() {
		return nil, keyFile{}, fmt.Errorf("decode key file %s: data after the JSON document", path)
	}
	return raw, kf, nil
}

func (kf keyFile) box() (*Box, error) {
	if len(kf.Keys) == 0 {
		return nil, errors.New("no key")
	}
	var (
		current *Key
		older   []Key
	)
	for _, e := range kf.Keys {
		k := Key{Version: e.Version, Secret: e.Key}
		if e.Version == kf.Current && current == nil {
			current = &k
			continue
		}
		older = append(older, k)
	}
	if current == nil {
		return nil, fmt.Errorf("current key %q is not among the keys", kf.Current)
	}
	return New(*current, older...)
}

// writeFile writes kf durably and atomically (internal/keyfile): with replace over path, without
// only when path does not exist yet (fs.ErrExist otherwise). Losing the file loses every value
// sealed under it.
func writeFile(path string, kf keyFile, replace bool) error {
	raw, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return fmt.Errorf("encode key file: %w", err)
	}
	if err := keyfile.Write(path, append(raw, '\n'), fileMode, replace); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	return nil
}

func generate() ([]byte, error) {
	k := make([]byte, KeyLen)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate kek: %w", err)
	}
	return k, nil
}

func nowSecond() time.Time { return time.Now().UTC().Truncate(time.Second) }
