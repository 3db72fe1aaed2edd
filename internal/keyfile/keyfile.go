// Package keyfile writes files holding secrets (key-encryption keys, peppers, signing keys)
// durably and atomically: a reader sees the old content or the new, never a part, and the new
// file survives a power loss once Write returns. Any package that keeps a secret in a file may
// import it; it imports nothing of the project.
package keyfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
