package apikey

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func newPepperFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pepper.json")
	if _, err := LoadOrCreatePepper(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func pepperStates(t *testing.T, path string) string {
	t.Helper()
	info, err := ReadPepperFileInfo(path)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, e := range info.Peppers {
		parts = append(parts, e.Version+"="+string(e.State))
	}
	return strings.Join(parts, " ")
}

// The staged rotation of a pepper file: add (pending: verifies, hashes nothing), promote (hashes
// new keys; the old one verifies), retire (gone); each step leaves a valid 0600 file.
func TestStagedPepperRotation(t *testing.T) {
	path := newPepperFile(t)
	v, err := AddPepper(path)
	if err != nil || v != "v2" {
		t.Fatalf("AddPepper = %q, %v", v, err)
	}
	if got := pepperStates(t, path); got != "v1=current v2=pending" {
		t.Fatalf("after add: %s", got)
	}
	ring, err := LoadOrCreatePepperRing(path)
	if err != nil {
		t.Fatal(err)
	}
	if ring.Peppers.Current().Version != "v1" || !slices.Equal(ring.Pending, []string{"v2"}) {
		t.Fatalf("after add the ring is %s pending %v", ring.Peppers, ring.Pending)
	}
	if _, err := AddPepper(path); !errors.Is(err, ErrPepperPending) {
		t.Fatalf("a second add while v2 is pending: %v", err)
	}
	prev, err := PromotePepper(path, "v2")
	if err != nil || prev != "v1" {
		t.Fatalf("PromotePepper = %q, %v", prev, err)
	}
	if got := pepperStates(t, path); got != "v1=older v2=current" {
		t.Fatalf("after promote: %s", got)
	}
	if _, err := PromotePepper(path, "v9"); err == nil {
		t.Fatal("promoted a pepper that is not in the file")
	}
	if err := RetirePepper(path, "v2"); err == nil || !strings.Contains(err.Error(), "current") {
		t.Fatalf("retiring the current pepper: %v", err)
	}
	if err := RetirePepper(path, "v1"); err != nil {
		t.Fatal(err)
	}
	ring, err = LoadOrCreatePepperRing(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ring.Peppers.Versions(), []string{"v2"}) || len(ring.Pending) != 0 {
		t.Fatalf("after retire: %s pending %v", ring.Peppers, ring.Pending)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after the rotation: %v, %v", fi.Mode(), err)
	}
	assertNoTempFiles(t, filepath.Dir(path))
	if v, err := AddPepper(path); err != nil || v != "v3" {
		t.Fatalf("AddPepper after retire = %q, %v", v, err)
	}
}

// Concurrent rotations of one file follow one another under the directory lock: none is lost.
func TestConcurrentPepperFileUpdates(t *testing.T) {
	path := newPepperFile(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, errs[i] = RotatePepperFile(path) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
	}
	ps, err := LoadOrCreatePepper(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps.Versions()) != n+1 {
		t.Fatalf("versions %v after %d concurrent rotations", ps.Versions(), n)
	}
}

// A PepperFile hands a changed file to the service; a broken file keeps the peppers in use (and
// is reported until a good file comes); an unchanged file is not applied again.
func TestPepperFileReload(t *testing.T) {
	path := newPepperFile(t)
	var applied []PepperRing
	var outcomes []error
	var mu sync.Mutex
	pf, ring, err := OpenPepperFile(path, func(r PepperRing) error {
		mu.Lock()
		defer mu.Unlock()
		applied = append(applied, r)
		return nil
	}, PepperReloadOptions{OnReload: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		outcomes = append(outcomes, err)
	}})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	svc := h.service(t, ring.Peppers, Options{CacheTTL: -1})
	if changed, err := pf.Reload(); changed || err != nil {
		t.Fatalf("reload of an unchanged file: %v, %v", changed, err)
	}
	if _, err := AddPepper(path); err != nil {
		t.Fatal(err)
	}
	if changed, err := pf.Reload(); !changed || err != nil {
		t.Fatalf("reload after add: %v, %v", changed, err)
	}
	mu.Lock()
	last := applied[len(applied)-1]
	mu.Unlock()
	if last.Peppers.Current().Version != "v1" || !slices.Equal(last.Pending, []string{"v2"}) {
		t.Fatalf("applied %s pending %v", last.Peppers, last.Pending)
	}
	if err := svc.SetPeppers(last.Peppers, last.Pending...); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	broken := []struct {
		name  string
		write func(t *testing.T)
	}{
		{"not json", func(t *testing.T) { writeFileMode(t, path, []byte(`{"current":`), 0o600) }},
		{"no current pepper", func(t *testing.T) {
			writeFileMode(t, path, bytes.Replace(good, []byte(`"current": "v1"`), []byte(`"current": "v5"`), 1), 0o600)
		}},
		{"world readable", func(t *testing.T) { writeFileMode(t, path, good, 0o604) }},
		{"missing", func(t *testing.T) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	mu.Lock()
	appliedBefore := len(applied)
	mu.Unlock()
	for _, tt := range broken {
		t.Run(tt.name, func(t *testing.T) {
			tt.write(t)
			if changed, err := pf.Reload(); changed || err == nil {
				t.Fatalf("reload of a broken file: %v, %v", changed, err)
			}
			if pf.LastError() == nil {
				t.Fatal("LastError is nil after a failed reload")
			}
		})
	}
	mu.Lock()
	if len(applied) != appliedBefore {
		t.Fatalf("a broken file was applied")
	}
	mu.Unlock()
	ps, pending := svc.Peppers()
	if ps.Current().Version != "v1" || !slices.Equal(pending, []string{"v2"}) {
		t.Fatalf("the service's peppers changed: %s %v", ps, pending)
	}
	writeFileMode(t, path, good, 0o600)
	if _, err := pf.Reload(); err != nil || pf.LastError() != nil {
		t.Fatalf("reload of the repaired file: %v (last %v)", err, pf.LastError())
	}
	mu.Lock()
	defer mu.Unlock()
	failures := 0
	for _, err := range outcomes {
		if err != nil {
			failures++
		}
	}
	if failures != len(broken) || outcomes[len(outcomes)-1] != nil {
		t.Fatalf("OnReload saw %v", outcomes)
	}
}

// An apply that refuses the set counts as a failed reload, and Run reloads by itself.
func TestPepperFileRunAndRefusedApply(t *testing.T) {
	path := newPepperFile(t)
	refuse := errors.New("refused")
	var mu sync.Mutex
	var current string
	pf, _, err := OpenPepperFile(path, func(r PepperRing) error {
		if r.Peppers.Current().Version == "v3" {
			return refuse
		}
		mu.Lock()
		current = r.Peppers.Current().Version
		mu.Unlock()
		return nil
	}, PepperReloadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- pf.Run(ctx, 10*time.Millisecond) }()
	if _, err := RotatePepperFile(path); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		c := current
		mu.Unlock()
		if c == "v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not apply the rotated file")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := RotatePepperFile(path); err != nil {
		t.Fatal(err)
	}
	if _, err := pf.Reload(); !errors.Is(err, refuse) || pf.LastError() == nil {
		t.Fatalf("reload with a refusing apply: %v", err)
	}
}

func writeFileMode(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
