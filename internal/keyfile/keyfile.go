// Package keyfile writes files holding secrets (key-encryption keys, peppers, signing keys)
// durably and atomically: a reader sees the old content or the new, never a part, and the new
// file survives a power loss once Write returns. It also holds what the versioned key files
// (peppers, key-encryption keys) share: the states of their keys in a rotation, the reordering
// of their lists, and the lock that serialises their updates. Any package that keeps a secret in a file may
// import it; it imports nothing of the project.
package keyfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// Write writes data to a temporary file with mode in path's directory, syncs it, then moves it
// to path: with replace by renaming over path, without by linking, which fails with an error
// wrapping fs.ErrExist when path exists (two processes creating the same file: one wins). The
// directory is synced too, so the new entry is durable.
func Write(path string, data []byte, mode fs.FileMode, replace bool) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // created with mode 0600
	if err != nil {
		return fmt.Errorf("create a file in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name()) // after a link or rename this only drops the temporary name
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if replace {
		err = os.Rename(tmp.Name(), path)
	} else {
		err = os.Link(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("install %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// State is where a key of a versioned key file (the API-key pepper file, the key-encryption key
// file) stands in a rotation. The keys of such a file are listed in the order they were
// introduced: adding appends, promoting moves the promoted key to the end. A key after the
// current one is pending (added: readers know it, nothing uses it yet); a key before it is older
// (still read, replaced as it is met).
type State string

// The states of a key.
const (
	StateCurrent State = "current"
	StatePending State = "pending"
	StateOlder   State = "older"
)

// States returns the state of each version of a file, in file order, given its current one.
func States(versions []string, current string) []State {
	out := make([]State, len(versions))
	state := StateOlder
	for i, v := range versions {
		out[i] = state
		if v == current {
			out[i], state = StateCurrent, StatePending
		}
	}
	return out
}

// Promote moves the entry whose version is version to the end of list (where the current key
// stands); false when no entry has that version.
func Promote[E any](list []E, version string, versionOf func(E) string) ([]E, bool) {
	i := slices.IndexFunc(list, func(e E) bool { return versionOf(e) == version })
	if i < 0 {
		return list, false
	}
	e := list[i]
	return append(slices.Delete(list, i, i+1), e), true
}

// Remove deletes the entry whose version is version from list; false when no entry has it.
func Remove[E any](list []E, version string, versionOf func(E) string) ([]E, bool) {
	i := slices.IndexFunc(list, func(e E) bool { return versionOf(e) == version })
	if i < 0 {
		return list, false
	}
	return slices.Delete(list, i, i+1), true
}

// LockDir takes an exclusive advisory lock (flock) on dir and returns its release: commands
// updating a key file in dir follow one another rather than lose an update. Locking the
// directory rather than the file survives the rename that replaces the file, and leaves no lock
// file behind.
func LockDir(dir string) (func(), error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", dir, err)
	}
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		d.Close()
		return nil, fmt.Errorf("lock directory %s: %w", dir, err)
	}
	return func() {
		_ = syscall.Flock(int(d.Fd()), syscall.LOCK_UN)
		d.Close()
	}, nil
}
