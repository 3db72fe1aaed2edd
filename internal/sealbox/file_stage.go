package sealbox

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nops-kernel/nops/internal/keyfile"
)

// State is where a KEK of a key file stands in a rotation (keyfile.State).
type State = keyfile.State

// The states of a KEK. The list of a key file is in the order the keys were introduced:
// AddFile appends, PromoteFile moves the promoted key to the end. A key after the current one is
// pending (added, known to the replicas that loaded the file, sealing nothing yet); a key before
// it is older (opening what it sealed until a rewrap re-seals that under the current one).
const (
	StateCurrent = keyfile.StateCurrent
	StatePending = keyfile.StatePending
	StateOlder   = keyfile.StateOlder
)

// FileInfo describes a key file without its secrets.
type FileInfo struct {
	Current string
	Keys    []FileKeyInfo // in file order
}

// FileKeyInfo describes one KEK of a key file.
type FileKeyInfo struct {
	Version   string
	CreatedAt time.Time
	State     State
}

// ErrPending is returned by AddFile while a key added earlier is still pending.
var ErrPending = errors.New("a key added earlier is not current yet")

// ReadFileInfo reads the key file at path (checking it as LoadOrCreateFile does) and describes
// its keys.
func ReadFileInfo(path string) (FileInfo, error) {
	_, kf, err := readFile(path)
	if err != nil {
		return FileInfo{}, err
	}
	if _, err := kf.box(); err != nil {
		return FileInfo{}, fmt.Errorf("key file %s: %w", path, err)
	}
	return kf.info(), nil
}

func (kf keyFile) info() FileInfo {
	info := FileInfo{Current: kf.Current}
	versions := make([]string, len(kf.Keys))
	for i, k := range kf.Keys {
		versions[i] = k.Version
	}
	for i, st := range keyfile.States(versions, kf.Current) {
		k := kf.Keys[i]
		info.Keys = append(info.Keys, FileKeyInfo{Version: k.Version, CreatedAt: k.CreatedAt, State: st})
	}
	return info
}

func keyVersion(k fileKey) string { return k.Version }

// AddFile adds a generated KEK to the key file at path without making it current: replicas that
// load the file open what it seals, and nothing is sealed with it until PromoteFile. It returns
// the new version ("k<n+1>"). While a key added earlier is still pending it adds nothing and
// returns an error wrapping ErrPending: promote or retire that one first.
func AddFile(path string) (string, error) {
	var version string
	err := updateFile(path, func(kf *keyFile) error {
		for _, k := range kf.info().Keys {
			if k.State == StatePending {
				return fmt.Errorf("key %s: %w (promote or retire it first)", k.Version, ErrPending)
			}
		}
		secret, err := generate()
		if err != nil {
			return err
		}
		version = nextVersion(kf)
		kf.Keys = append(kf.Keys, fileKey{Version: version, Key: secret, CreatedAt: nowSecond()})
		return nil
	})
	return version, err
}

// PromoteFile makes version the current KEK of the key file at path (new seals use it) and moves
// it to the end of the list, so every other key becomes older. It returns the version that was
// current. Promoting the current key changes nothing.
func PromoteFile(path, version string) (previous string, err error) {
	err = updateFile(path, func(kf *keyFile) error {
		previous = kf.Current
		var ok bool
		if kf.Keys, ok = keyfile.Promote(kf.Keys, version, keyVersion); !ok {
			return fmt.Errorf("key %q is not in the key file", version)
		}
		kf.Current = version
		return nil
	})
	return previous, err
}

// RetireFile removes version from the key file at path: whatever is still sealed with it no
// longer opens on a replica that loaded the new file. The current key cannot be retired. The
// caller checks that nothing uses version any more (internal/control, `nops secrets kek retire`).
func RetireFile(path, version string) error {
	return updateFile(path, func(kf *keyFile) error {
		if version == kf.Current {
			return fmt.Errorf("key %s is current: promote another key first", version)
		}
		var ok bool
		if kf.Keys, ok = keyfile.Remove(kf.Keys, version, keyVersion); !ok {
			return fmt.Errorf("key %q is not in the key file", version)
		}
		return nil
	})
}

// updateFile applies change to the key file at path under an exclusive lock on its directory, so
// concurrent updates by several commands follow one another rather than lose one, checks the
// result opens as a Box, and replaces the file atomically (0600, synced, renamed).
func updateFile(path string, change func(kf *keyFile) error) error {
	unlock, err := keyfile.LockDir(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer unlock()
	_, kf, err := readFile(path)
	if err != nil {
		return err
	}
	if err := change(&kf); err != nil {
		return fmt.Errorf("key file %s: %w", path, err)
	}
	if _, err := kf.box(); err != nil {
		return fmt.Errorf("key file %s: %w", path, err)
	}
	return writeFile(path, kf, true)
}

// LoadFile opens the Box of the key file at path without creating it, and describes its keys.
func LoadFile(path string) (*Box, FileInfo, error) {
	_, kf, err := readFile(path)
	if err != nil {
		return nil, FileInfo{}, err
	}
	b, err := kf.box()
	if err != nil {
		return nil, FileInfo{}, fmt.Errorf("key file %s: %w", path, err)
	}
	return b, kf.info(), nil
}
