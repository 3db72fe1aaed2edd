package reqsig

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fnT0 is the instant the journal tests claim at, unless they move their clock.
var fnT0 = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// fnClock is a settable clock for the journal's rotation and replay.
type fnClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fnClock) Now() time.Time     { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fnClock) Set(t time.Time)    { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }
func newFnClock(t time.Time) *fnClock { return &fnClock{now: t} }

func openJournal(t *testing.T, dir string, d Durability, c *fnClock) *FileNonces {
	t.Helper()
	f, err := OpenFileNonces(dir, FileNoncesOptions{Durability: d, SegmentSpan: 5 * time.Minute, Now: c.Now})
	if err != nil {
		t.Fatalf("OpenFileNonces: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func mustClaim(t *testing.T, f *FileNonces, key, nonce string, until, now time.Time) bool {
	t.Helper()
	ok, err := f.ClaimNonce(t.Context(), key, nonce, until, now)
	if err != nil {
		t.Fatalf("ClaimNonce(%s, %s): %v", key, nonce, err)
	}
	return ok
}

func closeJournal(t *testing.T, f *FileNonces) {
	t.Helper()
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func segmentsOf(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if _, ok := parseSegName(e.Name()); ok {
			names = append(names, e.Name())
		}
	}
	return names
}

func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	segs := segmentsOf(t, dir)
	if len(segs) == 0 {
		t.Fatal("no segment")
	}
	return filepath.Join(dir, segs[len(segs)-1])
}

// An accepted nonce is refused by the same store and, under either durability, by the store
// reopened on the directory; another key or nonce is not.
func TestFileNoncesOnceAndAfterRestart(t *testing.T) {
	for _, d := range []Durability{DurabilityFull, DurabilityProcess} {
		t.Run(string(d), func(t *testing.T) {
			dir, c := t.TempDir(), newFnClock(fnT0)
			until := fnT0.Add(5 * time.Minute)
			f := openJournal(t, dir, d, c)
			if f.Durability() != d {
				t.Fatalf("Durability = %s", f.Durability())
			}
			if !mustClaim(t, f, "rk_a", "n1", until, fnT0) {
				t.Fatal("first claim refused")
			}
			if mustClaim(t, f, "rk_a", "n1", until, fnT0.Add(time.Second)) {
				t.Fatal("second claim accepted")
			}
			if !mustClaim(t, f, "rk_b", "n1", until, fnT0) || !mustClaim(t, f, "rk_a", "n2", until, fnT0) {
				t.Fatal("another key or nonce refused")
			}
			closeJournal(t, f)
			if _, err := f.ClaimNonce(t.Context(), "rk_a", "n3", until, fnT0); !errors.Is(err, ErrNoncesClosed) {
				t.Fatalf("claim after Close: %v, want ErrNoncesClosed", err)
			}

			g := openJournal(t, dir, d, c)
			for _, kn := range [][2]string{{"rk_a", "n1"}, {"rk_b", "n1"}, {"rk_a", "n2"}} {
				if mustClaim(t, g, kn[0], kn[1], until, fnT0.Add(time.Minute)) {
					t.Errorf("%s %s accepted again after the restart", kn[0], kn[1])
				}
			}
			if !mustClaim(t, g, "rk_a", "n3", until, fnT0) {
				t.Error("a new nonce refused after the restart")
			}
			// Dead at the reopen: forgotten, and claimable again.
			closeJournal(t, g)
			c.Set(until)
			h := openJournal(t, dir, d, c)
			if !mustClaim(t, h, "rk_a", "n1", until.Add(5*time.Minute), until) {
				t.Error("a nonce whose record died was refused after a restart")
			}
		})
	}
}

// A torn record at the end of a segment (a crash in the middle of an append) is dropped with
// nothing after it; the records before it stay claimed, the file is cut to its good prefix, and
// new claims after the reopen are kept.
func TestFileNoncesTornTail(t *testing.T) {
	dir, c := t.TempDir(), newFnClock(fnT0)
	until := fnT0.Add(5 * time.Minute)
	f := openJournal(t, dir, DurabilityFull, c)
	for _, n := range []string{"a", "b"} {
		mustClaim(t, f, "rk", n, until, fnT0)
	}
	closeJournal(t, f)
	path := lastSegment(t, dir)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	torn := appendRecord(nil, "rk", "torn", until)
	for cut := 1; cut < len(torn); cut++ {
		if err := os.WriteFile(path, append(bytes.Clone(good), torn[:cut]...), 0o600); err != nil {
			t.Fatal(err)
		}
		g := openJournal(t, dir, DurabilityFull, c)
		if st, err := os.Stat(path); err != nil || st.Size() != int64(len(good)) {
			t.Fatalf("cut %d: segment not truncated to its good prefix (%d bytes): %v %v", cut, len(good), st.Size(), err)
		}
		if mustClaim(t, g, "rk", "a", until, fnT0) || mustClaim(t, g, "rk", "b", until, fnT0) {
			t.Fatalf("cut %d: a record before the torn one was lost", cut)
		}
		if !mustClaim(t, g, "rk", "torn", until, fnT0) {
			t.Fatalf("cut %d: the torn record's nonce was taken as claimed", cut)
		}
		closeJournal(t, g)
		h := openJournal(t, dir, DurabilityFull, c)
		if mustClaim(t, h, "rk", "torn", until, fnT0) {
			t.Fatalf("cut %d: a claim made after the repair was lost", cut)
		}
		closeJournal(t, h)
		// Back to the two good records only, for the next cut.
		for _, s := range segmentsOf(t, dir) {
			if p := filepath.Join(dir, s); p != path {
				os.Remove(p)
			}
		}
	}
}

// A corrupt record in the middle of a segment (a flipped bit) ends it: the records before it are
// kept, the ones after it are ignored and cut off.
func TestFileNoncesCorruptMiddle(t *testing.T) {
	dir, c := t.TempDir(), newFnClock(fnT0)
	until := fnT0.Add(5 * time.Minute)
	f := openJournal(t, dir, DurabilityFull, c)
	for _, n := range []string{"before", "corrupt", "after"} {
		mustClaim(t, f, "rk", n, until, fnT0)
	}
	closeJournal(t, f)
	path := lastSegment(t, dir)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	first := len(segMagic) + len(appendRecord(nil, "rk", "before", until))
	i := bytes.Index(data, []byte("corrupt"))
	if i < first {
		t.Fatal("record not found")
	}
	for _, flip := range []int{i, first + 1, first + 4} { // nonce, crc, length
		bad := bytes.Clone(data)
		bad[flip] ^= 0x20
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		g := openJournal(t, dir, DurabilityFull, c)
		if mustClaim(t, g, "rk", "before", until, fnT0) {
			t.Errorf("flip at %d: the record before the corrupt one was lost", flip)
		}
		if !mustClaim(t, g, "rk", "after", until, fnT0) {
			t.Errorf("flip at %d: a record after the corrupt one was replayed", flip)
		}
		closeJournal(t, g)
		if st, err := os.Stat(path); err != nil || st.Size() != int64(first) {
			t.Errorf("flip at %d: segment of %d bytes, want %d", flip, st.Size(), first)
		}
		for _, s := range segmentsOf(t, dir) {
			if p := filepath.Join(dir, s); p != path {
				os.Remove(p)
			}
		}
	}
}

// A file named as a segment that is not one stops the open: the journal never guesses.
func TestFileNoncesForeignSegment(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, segName(1)), []byte("something else entirely"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := OpenFileNonces(dir, FileNoncesOptions{})
	if err == nil || !strings.Contains(err.Error(), "not a nonce journal segment") {
		t.Fatalf("OpenFileNonces = %v, want a refusal of the foreign file", err)
	}
}

// A new segment is started every span; PurgeNonces deletes those whose records are all dead
// and keeps those with a live one, and the current one; a reopen deletes dead ones too.
func TestFileNoncesRotation(t *testing.T) {
	dir, c := t.TempDir(), newFnClock(fnT0)
	f := openJournal(t, dir, DurabilityFull, c)
	span := 5 * time.Minute
	// Segment 1: a record living 6 minutes. Segment 2 (after a span): one living 20 minutes.
	mustClaim(t, f, "rk", "short", fnT0.Add(6*time.Minute), fnT0)
	c.Set(fnT0.Add(span))
	mustClaim(t, f, "rk", "long", fnT0.Add(20*time.Minute), fnT0.Add(span))
	c.Set(fnT0.Add(2 * span))
	mustClaim(t, f, "rk", "current", fnT0.Add(11*time.Minute), fnT0.Add(2*span))
	if got := segmentsOf(t, dir); len(got) != 3 {
		t.Fatalf("segments %v, want 3", got)
	}
	// At 12 min: "short" and "current" are dead, but "current"'s segment is the current one.
	n, err := f.PurgeNonces(t.Context(), fnT0.Add(12*time.Minute))
	if err != nil || n != 2 {
		t.Fatalf("PurgeNonces = %d, %v, want 2", n, err)
	}
	if got := segmentsOf(t, dir); len(got) != 2 || got[0] != segName(2) || got[1] != segName(3) {
		t.Fatalf("segments after the purge %v, want %s and %s", got, segName(2), segName(3))
	}
	if mustClaim(t, f, "rk", "long", fnT0.Add(20*time.Minute), fnT0.Add(12*time.Minute)) {
		t.Fatal("the purge let a live nonce be claimed again")
	}
	closeJournal(t, f)
	// Reopened at 12 min: segment 3 is dead and deleted, 2 kept, 4 is the new current one.
	c.Set(fnT0.Add(12 * time.Minute))
	g := openJournal(t, dir, DurabilityFull, c)
	if got := segmentsOf(t, dir); len(got) != 2 || got[0] != segName(2) || got[1] != segName(4) {
		t.Fatalf("segments after the reopen %v, want %s and %s", got, segName(2), segName(4))
	}
	if mustClaim(t, g, "rk", "long", fnT0.Add(20*time.Minute), fnT0.Add(12*time.Minute)) {
		t.Fatal("a live nonce of a kept segment was lost")
	}
	// Past every expiry, everything but the current segment goes.
	if _, err := g.PurgeNonces(t.Context(), fnT0.Add(21*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := segmentsOf(t, dir); len(got) != 1 || got[0] != segName(4) {
		t.Fatalf("segments %v, want only the current one", got)
	}
}

// Of concurrent claims of one nonce, exactly one is accepted; of distinct nonces, all are, and
// all are still claimed after a reopen.
func TestFileNoncesConcurrent(t *testing.T) {
	for _, d := range []Durability{DurabilityFull, DurabilityProcess} {
		t.Run(string(d), func(t *testing.T) {
			dir, c := t.TempDir(), newFnClock(fnT0)
			until := fnT0.Add(5 * time.Minute)
			f := openJournal(t, dir, d, c)
			for round := range 20 {
				var (
					wg   sync.WaitGroup
					wins atomic.Int32
				)
				for i := range 16 {
					wg.Go(func() {
						ok, err := f.ClaimNonce(context.Background(), "rk", fmt.Sprint("race-", round), until, fnT0)
						if err != nil {
							t.Errorf("ClaimNonce: %v", err)
						}
						if ok {
							wins.Add(1)
						}
						if ok, err := f.ClaimNonce(context.Background(), "rk", fmt.Sprint("own-", round, "-", i), until, fnT0); !ok || err != nil {
							t.Errorf("distinct nonce: %v %v", ok, err)
						}
					})
				}
				wg.Wait()
				if wins.Load() != 1 {
					t.Fatalf("round %d: %d of 16 concurrent claims of one nonce accepted", round, wins.Load())
				}
			}
			closeJournal(t, f)
			g := openJournal(t, dir, d, c)
			for round := range 20 {
				for i := range 16 {
					if mustClaim(t, g, "rk", fmt.Sprint("own-", round, "-", i), until, fnT0) {
						t.Fatalf("own-%d-%d lost by the reopen", round, i)
					}
				}
			}
		})
	}
}

// claimsQueued starts one claim per nonce while the store's lead is held by the test, so that
// they all wait and are written as one group once release is called.
func claimsQueued(t *testing.T, f *FileNonces, nonces []string, until time.Time) (release func() []claimResult) {
	t.Helper()
	f.mu.Lock()
	f.leading = true // the test leads: claims queue up
	f.mu.Unlock()
	results := make([]claimResult, len(nonces))
	var wg sync.WaitGroup
	for i, n := range nonces {
		wg.Go(func() {
			ok, err := f.ClaimNonce(context.Background(), "rk", n, until, fnT0)
			results[i] = claimResult{ok, err}
		})
	}
	waitFor(t, func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.pending) == len(nonces) })
	return func() []claimResult {
		f.mu.Lock()
		next := f.pending[0]
		next.lead = true
		close(next.done)
		f.mu.Unlock()
		wg.Wait()
		return results
	}
}

// A group whose write fails accepts none of its claims (a second claim of one of its nonces
// included), remembers none of them, and the next group writes to a new segment and is kept.
func TestFileNoncesFailedWriteAcceptsNone(t *testing.T) {
	for _, d := range []Durability{DurabilityFull, DurabilityProcess} {
		t.Run(string(d), func(t *testing.T) {
			dir, c := t.TempDir(), newFnClock(fnT0)
			until := fnT0.Add(5 * time.Minute)
			f := openJournal(t, dir, d, c)
			mustClaim(t, f, "rk", "before", until, fnT0)
			release := claimsQueued(t, f, []string{"x", "y", "x"}, until)
			f.cur.file.Close() // the write (and sync) fail under it
			for i, r := range release() {
				if r.ok || r.err == nil {
					t.Errorf("claim %d of the failed group: %v, %v; want an error", i, r.ok, r.err)
				}
			}
			if len(segmentsOf(t, dir)) != 1 {
				t.Fatal("the failed write created a segment")
			}
			// Not remembered: claimed afresh, in a new segment.
			if !mustClaim(t, f, "rk", "x", until, fnT0) || !mustClaim(t, f, "rk", "y", until, fnT0) {
				t.Fatal("a nonce of the failed group was taken as claimed")
			}
			if got := segmentsOf(t, dir); len(got) != 2 {
				t.Fatalf("segments %v, want the abandoned one and a new one", got)
			}
			closeJournal(t, f)
			g := openJournal(t, dir, d, c)
			for _, n := range []string{"before", "x", "y"} {
				if mustClaim(t, g, "rk", n, until, fnT0) {
					t.Errorf("%s lost by the reopen", n)
				}
			}
		})
	}
}

// A failed sync (the records reached the page cache, fsync refused) accepts none of the group
// under DurabilityFull: nothing is acknowledged before it is synced, nor remembered. Its records
// may still be found on disk after a restart: they refuse their nonces then, never accept them
// twice.
func TestFileNoncesFailedSyncAcceptsNone(t *testing.T) {
	dir, c := t.TempDir(), newFnClock(fnT0)
	until := fnT0.Add(5 * time.Minute)
	f := openJournal(t, dir, DurabilityFull, c)
	mustClaim(t, f, "rk", "before", until, fnT0)
	release := claimsQueued(t, f, []string{"p", "q"}, until)
	f.sync = func(*os.File) error { return errors.New("injected fsync failure") }
	for i, r := range release() {
		if r.ok || r.err == nil || !strings.Contains(r.err.Error(), "injected fsync failure") {
			t.Errorf("claim %d: %v, %v; want the sync's error", i, r.ok, r.err)
		}
	}
	f.sync = (*os.File).Sync
	if !mustClaim(t, f, "rk", "p", until, fnT0) {
		t.Fatal("a nonce of the failed group was taken as claimed")
	}
	if got := segmentsOf(t, dir); len(got) != 2 {
		t.Fatalf("segments %v, want the abandoned one and a new one", got)
	}
	closeJournal(t, f)
	g := openJournal(t, dir, DurabilityFull, c)
	for _, n := range []string{"before", "p", "q"} {
		if mustClaim(t, g, "rk", n, until, fnT0) {
			t.Errorf("%s accepted after the reopen", n)
		}
	}
}

// A second opener of the directory — another process, as a second kernel on the same data
// directory would be — is refused while the first holds it, and may open it once it is closed.
func TestFileNoncesSecondProcessRefused(t *testing.T) {
	if dir := os.Getenv("NOPS_TEST_NONCE_JOURNAL_DIR"); dir != "" {
		_, err := OpenFileNonces(dir, FileNoncesOptions{})
		fmt.Fprintf(os.Stdout, "open: %v\n", err)
		return
	}
	dir, c := t.TempDir(), newFnClock(fnT0)
	f := openJournal(t, dir, DurabilityFull, c)
	second := func() string {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestFileNoncesSecondProcessRefused$")
		cmd.Env = append(os.Environ(), "NOPS_TEST_NONCE_JOURNAL_DIR="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("second process: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := second(); !strings.Contains(out, "locked by another process") {
		t.Fatalf("second process opened a locked journal:\n%s", out)
	}
	if _, err := OpenFileNonces(dir, FileNoncesOptions{}); err == nil || !strings.Contains(err.Error(), "one kernel per data directory") {
		t.Fatalf("second open in this process: %v", err)
	}
	closeJournal(t, f)
	if out := second(); !strings.Contains(out, "open: <nil>") {
		t.Fatalf("second process after Close:\n%s", out)
	}
}

// The verifier takes the journal's durability, and refuses another one.
func TestNewVerifierFileNoncesDurability(t *testing.T) {
	f := openJournal(t, t.TempDir(), DurabilityProcess, newFnClock(fnT0))
	for _, d := range []Durability{"", DurabilityProcess} {
		if _, err := NewVerifier(fixedKeys{}, f, Config{NonceDurability: d}); err != nil {
			t.Errorf("NewVerifier(%q): %v", d, err)
		}
	}
	if _, err := NewVerifier(fixedKeys{}, f, Config{NonceDurability: DurabilityFull}); err == nil {
		t.Error("NewVerifier accepted a durability the journal does not have")
	}
}

// A kernel killed (SIGKILL: no Close, no flush of its own) right after its claims were accepted
// loses none of them, under either durability: what process durability promises. The claims
// are made in a child process that kills itself once they are answered.
func TestFileNoncesSurviveKill(t *testing.T) {
	if dir := os.Getenv("NOPS_TEST_NONCE_KILL_DIR"); dir != "" {
		f, err := OpenFileNonces(dir, FileNoncesOptions{Durability: Durability(os.Getenv("NOPS_TEST_NONCE_KILL_DURABILITY")), Now: func() time.Time { return fnT0 }})
		if err != nil {
			fmt.Println("open:", err)
			os.Exit(3)
		}
		var wg sync.WaitGroup
		for i := range 64 {
			wg.Go(func() {
				if ok, err := f.ClaimNonce(context.Background(), "rk", fmt.Sprint("k-", i), fnT0.Add(5*time.Minute), fnT0); !ok || err != nil {
					fmt.Println("claim:", ok, err)
					os.Exit(3)
				}
			})
		}
		wg.Wait()
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // killed
	}
	for _, d := range []Durability{DurabilityFull, DurabilityProcess} {
		t.Run(string(d), func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestFileNoncesSurviveKill$")
			cmd.Env = append(os.Environ(), "NOPS_TEST_NONCE_KILL_DIR="+dir, "NOPS_TEST_NONCE_KILL_DURABILITY="+string(d))
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child: %v, want killed\n%s", err, out)
			}
			f := openJournal(t, dir, d, newFnClock(fnT0))
			for i := range 64 {
				if mustClaim(t, f, "rk", fmt.Sprint("k-", i), fnT0.Add(5*time.Minute), fnT0) {
					t.Fatalf("k-%d accepted again after the kill", i)
				}
			}
		})
	}
}

// Key IDs and nonces the record format cannot hold are refused with an error, never truncated
// (a truncated nonce would collide with another).
func TestFileNoncesOversized(t *testing.T) {
	f := openJournal(t, t.TempDir(), DurabilityFull, newFnClock(fnT0))
	until := fnT0.Add(time.Minute)
	if _, err := f.ClaimNonce(t.Context(), strings.Repeat("k", recMaxKeyLen+1), "n", until, fnT0); err == nil {
		t.Error("a key id of 256 bytes was claimed")
	}
	if _, err := f.ClaimNonce(t.Context(), "rk", strings.Repeat("n", recMaxNonceLn+1), until, fnT0); err == nil {
		t.Error("an oversized nonce was claimed")
	}
	long := strings.Repeat("n", recMaxNonceLn)
	if !mustClaim(t, f, strings.Repeat("k", recMaxKeyLen), long, until, fnT0) {
		t.Fatal("the largest record was refused")
	}
	closeJournal(t, f)
	g := openJournal(t, f.dir, DurabilityFull, newFnClock(fnT0))
	if mustClaim(t, g, strings.Repeat("k", recMaxKeyLen), long, until, fnT0) {
		t.Fatal("the largest record was lost by the reopen")
	}
}
