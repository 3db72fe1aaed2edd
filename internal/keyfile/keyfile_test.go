package keyfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/keyfile"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret.json")
	if err := keyfile.Write(path, []byte("one"), 0o600, false); err != nil {
		t.Fatal(err)
	}
	// Without replace, an existing file is kept and the error says it exists.
	if err := keyfile.Write(path, []byte("two"), 0o600, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second create: %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "one" {
		t.Fatalf("content %q after a refused create, want one", b)
	}
	if err := keyfile.Write(path, []byte("three"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "three" {
		t.Fatalf("content %q after replace, want three", b)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only the file (no temporary left)", len(entries))
	}
}

func TestStates(t *testing.T) {
	got := keyfile.States([]string{"v1", "v2", "v3", "v4"}, "v2")
	want := []keyfile.State{keyfile.StateOlder, keyfile.StateCurrent, keyfile.StatePending, keyfile.StatePending}
	if !slices.Equal(got, want) {
		t.Fatalf("States = %v, want %v", got, want)
	}
	if got := keyfile.States([]string{"v1"}, "v9"); !slices.Equal(got, []keyfile.State{keyfile.StateOlder}) {
		t.Fatalf("no current version: %v", got)
	}
}

func TestPromoteAndRemove(t *testing.T) {
	id := func(s string) string { return s }
	l, ok := keyfile.Promote([]string{"a", "b", "c"}, "a", id)
	if !ok || !slices.Equal(l, []string{"b", "c", "a"}) {
		t.Fatalf("Promote = %v %v", l, ok)
	}
	if _, ok := keyfile.Promote(l, "z", id); ok {
		t.Fatal("Promote of a missing version")
	}
	l, ok = keyfile.Remove(l, "c", id)
	if !ok || !slices.Equal(l, []string{"b", "a"}) {
		t.Fatalf("Remove = %v %v", l, ok)
	}
	if _, ok := keyfile.Remove(l, "c", id); ok {
		t.Fatal("Remove of a missing version")
	}
}

// TestLockDirSerialises: a second lock on the directory waits for the first's release.
func TestLockDirSerialises(t *testing.T) {
	dir := t.TempDir()
	unlock, err := keyfile.LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	go func() {
		u, err := keyfile.LockDir(dir)
		if err == nil {
			u()
		}
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("a second lock was taken while the first was held")
	case <-time.After(100 * time.Millisecond):
	}
	unlock()
	<-got
	if _, err := keyfile.LockDir(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("LockDir of a missing directory")
	}
}
