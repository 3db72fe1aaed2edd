package sealbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/sealbox"
)

func newKeyFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kek.json")
	if _, err := sealbox.LoadOrCreateFile(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func states(t *testing.T, path string) string {
	t.Helper()
	info, err := sealbox.ReadFileInfo(path)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, k := range info.Keys {
		parts = append(parts, k.Version+"="+string(k.State))
	}
	return strings.Join(parts, " ")
}

// The staged rotation: add (pending, opens but does not seal), promote (seals; the old key stays
// for opening), retire (gone); the file keeps its mode and stays a valid key file at every step.
func TestStagedFileRotation(t *testing.T) {
	path := newKeyFile(t)
	before, err := sealbox.LoadOrCreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sealedK1, err := before.Seal([]byte("s1"), []byte("rk_1"))
	if err != nil {
		t.Fatal(err)
	}

	v, err := sealbox.AddFile(path)
	if err != nil || v != "k2" {
		t.Fatalf("AddFile = %q, %v; want k2", v, err)
	}
	if got := states(t, path); got != "k1=current k2=pending" {
		t.Fatalf("after add: %s", got)
	}
	added, err := sealbox.LoadOrCreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if added.Current() != "k1" || !slices.Equal(added.Versions(), []string{"k1", "k2"}) {
		t.Fatalf("after add the box is %s, want current k1 of k1,k2", added)
	}
	if _, err := sealbox.AddFile(path); !errors.Is(err, sealbox.ErrPending) {
		t.Fatalf("a second add while k2 is pending: %v, want ErrPending", err)
	}

	prev, err := sealbox.PromoteFile(path, "k2")
	if err != nil || prev != "k1" {
		t.Fatalf("PromoteFile = %q, %v", prev, err)
	}
	if got := states(t, path); got != "k1=older k2=current" {
		t.Fatalf("after promote: %s", got)
	}
	promoted, err := sealbox.LoadOrCreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sealedK2, err := promoted.Seal([]byte("s2"), []byte("rk_2"))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := sealbox.Version(sealedK2); v != "k2" {
		t.Fatalf("a seal after promote names %s", v)
	}
	// The replica still on the added file opens what the promoted one sealed.
	if got, err := added.Open(sealedK2, []byte("rk_2")); err != nil || string(got) != "s2" {
		t.Fatalf("a replica that only added k2 cannot open its seals: %q, %v", got, err)
	}
	if _, err := sealbox.PromoteFile(path, "k2"); err != nil {
		t.Fatalf("promoting the current key again: %v", err)
	}
	if _, err := sealbox.PromoteFile(path, "k9"); err == nil {
		t.Fatal("promoted a key that is not in the file")
	}

	if err := sealbox.RetireFile(path, "k2"); err == nil || !strings.Contains(err.Error(), "current") {
		t.Fatalf("retiring the current key: %v", err)
	}
	if err := sealbox.RetireFile(path, "k1"); err != nil {
		t.Fatal(err)
	}
	retired, err := sealbox.LoadOrCreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(retired.Versions(), []string{"k2"}) {
		t.Fatalf("after retire: %s", retired)
	}
	if _, err := retired.Open(sealedK1, []byte("rk_1")); !errors.Is(err, sealbox.ErrOpen) {
		t.Fatalf("a value of the retired key still opens: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after the rotation: %v, %v", fi.Mode(), err)
	}
	// The next key number is not reused.
	if v, err := sealbox.AddFile(path); err != nil || v != "k3" {
		t.Fatalf("AddFile after retire = %q, %v", v, err)
	}
	// Retiring a pending key abandons the rotation.
	if err := sealbox.RetireFile(path, "k3"); err != nil {
		t.Fatal(err)
	}
	if got := states(t, path); got != "k2=current" {
		t.Fatalf("after abandoning k3: %s", got)
	}
}

// Promoting an older key back moves it to the end: the key it replaces becomes older.
func TestPromoteBackMakesTheOtherOlder(t *testing.T) {
	path := newKeyFile(t)
	if _, err := sealbox.AddFile(path); err != nil {
		t.Fatal(err)
	}
	if _, err := sealbox.PromoteFile(path, "k2"); err != nil {
		t.Fatal(err)
	}
	if _, err := sealbox.PromoteFile(path, "k1"); err != nil {
		t.Fatal(err)
	}
	if got := states(t, path); got != "k2=older k1=current" {
		t.Fatalf("after promoting k1 back: %s", got)
	}
}

// Concurrent rotations of one file follow one another under the directory lock: none is lost.
func TestConcurrentFileUpdatesAreSerialised(t *testing.T) {
	path := newKeyFile(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, errs[i] = sealbox.RotateFile(path) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
	}
	b, err := sealbox.LoadOrCreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Versions()) != n+1 {
		t.Fatalf("versions %v after %d concurrent rotations, want %d", b.Versions(), n, n+1)
	}
}

// A FileKeyring follows its file: a change is applied on Reload, a broken file keeps the keys in
// use (and says why until a good file comes), and an unchanged file is not applied again.
func TestFileKeyringReload(t *testing.T) {
	path := newKeyFile(t)
	var outcomes []error
	var mu sync.Mutex
	ring, err := sealbox.OpenFileKeyring(path, sealbox.ReloadOptions{OnReload: func(err error) {
		mu.Lock()
		outcomes = append(outcomes, err)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := ring.Reload(); changed || err != nil {
		t.Fatalf("reload of an unchanged file: %v, %v", changed, err)
	}
	sealedK1, err := ring.Seal([]byte("x"), []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sealbox.AddFile(path); err != nil {
		t.Fatal(err)
	}
	if changed, err := ring.Reload(); !changed || err != nil {
		t.Fatalf("reload after add: %v, %v", changed, err)
	}
	if !slices.Equal(ring.Versions(), []string{"k1", "k2"}) || ring.Current() != "k1" {
		t.Fatalf("after add the keyring is %s", ring.Box())
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	broken := []struct {
		name  string
		write func(t *testing.T)
	}{
		{"not json", func(t *testing.T) { writeMode(t, path, []byte("{"), 0o600) }},
		{"no current key", func(t *testing.T) {
			writeMode(t, path, bytes.Replace(good, []byte(`"current": "k1"`), []byte(`"current": "k7"`), 1), 0o600)
		}},
		{"group readable", func(t *testing.T) { writeMode(t, path, good, 0o640) }},
		{"missing", func(t *testing.T) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range broken {
		t.Run(tt.name, func(t *testing.T) {
			tt.write(t)
			if changed, err := ring.Reload(); changed || err == nil {
				t.Fatalf("reload of a broken file: %v, %v", changed, err)
			}
			if ring.LastError() == nil {
				t.Fatal("LastError is nil after a failed reload")
			}
			if !slices.Equal(ring.Versions(), []string{"k1", "k2"}) || ring.Current() != "k1" {
				t.Fatalf("a broken file changed the keys in use: %s", ring.Box())
			}
			if got, err := ring.Open(sealedK1, []byte("a")); err != nil || string(got) != "x" {
				t.Fatalf("open after a broken reload: %q, %v", got, err)
			}
		})
	}
	// The good file back clears the error (same content as before: applied again, since the
	// broken one came between).
	writeMode(t, path, good, 0o600)
	if _, err := ring.Reload(); err != nil || ring.LastError() != nil {
		t.Fatalf("reload of the repaired file: %v (last %v)", err, ring.LastError())
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
		t.Fatalf("OnReload saw %v, want %d failures then success", outcomes, len(broken))
	}
}

// Run reloads on its own until the context ends.
func TestFileKeyringRun(t *testing.T) {
	path := newKeyFile(t)
	ring, err := sealbox.OpenFileKeyring(path, sealbox.ReloadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ring.Run(ctx, 10*time.Millisecond) }()
	if _, err := sealbox.AddFile(path); err != nil {
		t.Fatal(err)
	}
	if _, err := sealbox.PromoteFile(path, "k2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ring.Current() == "k2" })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func writeMode(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	tmp := path + ".tmp"
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

// memStore is an in-memory sealbox.Store.
type memStore struct {
	mu     sync.Mutex
	values map[sealbox.Ref][]byte
	// beforeReplace, when set, runs before each replacement (a concurrent rotation).
	beforeReplace func(r sealbox.Ref)
}

func (m *memStore) SealedValues(_ context.Context, after sealbox.Ref, limit int) ([]sealbox.Sealed, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []sealbox.Sealed
	for r, v := range m.values {
		if r.Compare(after) > 0 {
			out = append(out, sealbox.Sealed{Ref: r, Value: bytes.Clone(v)})
		}
	}
	slices.SortFunc(out, func(a, b sealbox.Sealed) int { return a.Compare(b.Ref) })
	return out[:min(limit, len(out))], nil
}

func (m *memStore) ReplaceSealed(_ context.Context, s sealbox.Sealed, value []byte) (bool, error) {
	if m.beforeReplace != nil {
		m.beforeReplace(s.Ref)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.values[s.Ref]; !ok || !bytes.Equal(cur, s.Value) {
		return false, nil
	}
	m.values[s.Ref] = value
	return true, nil
}

func (m *memStore) SealedUse(context.Context) ([]sealbox.Use, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	counts := map[[2]string]int64{}
	for r, v := range m.values {
		version, _ := sealbox.Version(v)
		counts[[2]string{r.Kind, version}]++
	}
	var out []sealbox.Use
	for k, n := range counts {
		out = append(out, sealbox.Use{Kind: k[0], Version: k[1], Count: n})
	}
	return out, nil
}

func aadOf(r sealbox.Ref) ([]byte, error) {
	if r.Kind == "unknown" {
		return nil, fmt.Errorf("unknown kind %s", r.Kind)
	}
	return []byte(r.Kind + ":" + r.ID), nil
}

// Rewrap re-seals what older keys sealed under the current one, keeps every plaintext, is
// idempotent, leaves a value changed meanwhile to whoever changed it, and counts what does not
// open without stopping.
func TestRewrap(t *testing.T) {
	old := mustBox(t, key("k1", 1))
	both := mustBox(t, key("k2", 2), key("k1", 1))
	st := &memStore{values: map[sealbox.Ref][]byte{}}
	plain := map[sealbox.Ref]string{}
	for i := range 25 {
		for _, kind := range []string{sealbox.KindRequestKey, sealbox.KindCAKey} {
			r := sealbox.Ref{Kind: kind, ID: fmt.Sprintf("id%02d", i), Slot: sealbox.SlotCurrent}
			box := old
			if i%5 == 0 {
				box = both // already under k2
			}
			aad, _ := aadOf(r)
			v, err := box.Seal([]byte("secret-"+r.String()), aad)
			if err != nil {
				t.Fatal(err)
			}
			st.values[r], plain[r] = v, "secret-"+r.String()
		}
	}
	// One value sealed for other associated data (a row swapped in the database): never opens.
	swapped := sealbox.Ref{Kind: sealbox.KindRequestKey, ID: "id99", Slot: sealbox.SlotPrevious}
	st.values[swapped] = st.values[sealbox.Ref{Kind: sealbox.KindRequestKey, ID: "id01", Slot: sealbox.SlotCurrent}]
	// One replaced by a rotation between the read and the write.
	raced := sealbox.Ref{Kind: sealbox.KindCAKey, ID: "id03", Slot: sealbox.SlotCurrent}
	st.beforeReplace = func(r sealbox.Ref) {
		if r == raced {
			st.mu.Lock()
			st.values[r] = []byte("rotated")
			st.mu.Unlock()
		}
	}
	var progress []int64
	res, err := sealbox.Rewrap(t.Context(), st, both, sealbox.RewrapOptions{AAD: aadOf, Batch: 7,
		Progress: func(scanned, total int64) {
			if total != 51 {
				t.Errorf("progress total %d, want 51", total)
			}
			progress = append(progress, scanned)
		}})
	if err != nil {
		t.Fatal(err)
	}
	want := sealbox.RewrapResult{Scanned: 51, Current: 10, Rewrapped: 39, Changed: 1, Failed: 1, FailedRefs: []sealbox.Ref{swapped}}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Fatalf("result (-want +got):\n%s", diff)
	}
	if len(progress) != 8 || progress[len(progress)-1] != 51 {
		t.Fatalf("progress %v", progress)
	}
	for r, v := range st.values {
		if r == swapped || r == raced {
			continue
		}
		if version, _ := sealbox.Version(v); version != "k2" {
			t.Errorf("%s is still under %s", r, version)
		}
		aad, _ := aadOf(r)
		if got, err := both.Open(v, aad); err != nil || string(got) != plain[r] {
			t.Errorf("%s opens as %q, %v", r, got, err)
		}
	}
	if string(st.values[raced]) != "rotated" {
		t.Fatal("rewrap overwrote a value changed meanwhile")
	}
	// Again: nothing left to do but the value that never opens.
	st.beforeReplace = nil
	res, err = sealbox.Rewrap(t.Context(), st, both, sealbox.RewrapOptions{AAD: aadOf})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rewrapped != 0 || res.Failed != 2 || res.Current != 49 {
		// "rotated" is malformed: it fails too.
		t.Fatalf("second rewrap: %+v", res)
	}
}

func TestRewrapStopsOnStoreError(t *testing.T) {
	st := &memStore{values: map[sealbox.Ref][]byte{}}
	old := mustBox(t, key("k1", 1))
	r := sealbox.Ref{Kind: sealbox.KindRequestKey, ID: "a", Slot: sealbox.SlotCurrent}
	aad, _ := aadOf(r)
	v, err := old.Seal([]byte("s"), aad)
	if err != nil {
		t.Fatal(err)
	}
	st.values[r] = v
	boom := errors.New("boom")
	_, err = sealbox.Rewrap(t.Context(), st, mustBox(t, key("k2", 2), key("k1", 1)), sealbox.RewrapOptions{
		AAD:  aadOf,
		InTx: func(context.Context, func(context.Context) error) error { return boom },
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Rewrap = %v, want the transaction's error", err)
	}
	if _, err := sealbox.Rewrap(t.Context(), st, old, sealbox.RewrapOptions{}); err == nil {
		t.Fatal("Rewrap without an AAD function")
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Retiring a key is refused while a stored value names it, saying how many of which kind; after
// a rewrap nothing names it and the refusal is gone.
func TestCheckRetire(t *testing.T) {
	st := &memStore{values: map[sealbox.Ref][]byte{}}
	old := mustBox(t, key("k1", 1))
	both := mustBox(t, key("k2", 2), key("k1", 1))
	for i, kind := range []string{sealbox.KindRequestKey, sealbox.KindRequestKey, sealbox.KindCAKey} {
		r := sealbox.Ref{Kind: kind, ID: fmt.Sprint(i), Slot: sealbox.SlotCurrent}
		aad, _ := aadOf(r)
		v, err := old.Seal([]byte("s"), aad)
		if err != nil {
			t.Fatal(err)
		}
		st.values[r] = v
	}
	err := sealbox.CheckRetire(t.Context(), st, "k1")
	if !errors.Is(err, sealbox.ErrInUse) || !strings.Contains(err.Error(), "2 request_key") || !strings.Contains(err.Error(), "1 ca_key") {
		t.Fatalf("CheckRetire before the rewrap: %v", err)
	}
	if err := sealbox.CheckRetire(t.Context(), st, "k2"); err != nil {
		t.Fatalf("k2 seals nothing yet: %v", err)
	}
	if _, err := sealbox.Rewrap(t.Context(), st, both, sealbox.RewrapOptions{AAD: aadOf}); err != nil {
		t.Fatal(err)
	}
	if err := sealbox.CheckRetire(t.Context(), st, "k1"); err != nil {
		t.Fatalf("CheckRetire after the rewrap: %v", err)
	}
	if err := sealbox.CheckRetire(t.Context(), st, "k2"); !errors.Is(err, sealbox.ErrInUse) {
		t.Fatalf("k2 seals everything now: %v", err)
	}
}
