package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/store"
)

// AuditStore is what an adapter offers the audit log: its records, hashes, heads and checkpoints
// (audit.Store), the transactions audit.Append runs in, and the listing behind GET /v1/audit.
type AuditStore interface {
	audit.Store
	InTx(ctx context.Context, fn func(ctx context.Context) error) error
	AuditRecords(ctx context.Context, tree string, f store.AuditFilter) ([]audit.Entry, error)
}

// RunAudit runs the audit log's conformance suite. open must return a fresh, migrated store on a
// database no other test uses, closed through t.Cleanup.
func RunAudit(t *testing.T, open func(t *testing.T) AuditStore) {
	t.Run("append and read back", func(t *testing.T) { t.Parallel(); testAuditAppend(t, open(t)) })
	t.Run("append refusals", func(t *testing.T) { t.Parallel(); testAuditAppendRefusals(t, open(t)) })
	t.Run("read hashes", func(t *testing.T) { t.Parallel(); testAuditReadHashes(t, open(t)) })
	t.Run("checkpoints", func(t *testing.T) { t.Parallel(); testAuditCheckpoints(t, open(t)) })
	t.Run("trees", func(t *testing.T) { t.Parallel(); testAuditTrees(t, open(t)) })
	t.Run("rollback", func(t *testing.T) { t.Parallel(); testAuditRollback(t, open(t)) })
	t.Run("concurrent appends to one tree", func(t *testing.T) { t.Parallel(); testAuditConcurrentAppends(t, open(t)) })
	t.Run("listing", func(t *testing.T) { t.Parallel(); testAuditListing(t, open(t)) })
}

const (
	auditTree    = "ten_01JAUDITCONFORMANCE"
	auditKeyName = "nops-test"
)

var auditActions = []string{"agent.create", "agent.update", "apikey.create"}

// auditRecord returns a valid record of tree; i varies every field the listing filters on. Times
// are in a zone other than UTC, with nanoseconds, and not in seq order.
func auditRecord(tree string, i int) audit.Record {
	return audit.Record{
		Tree: tree,
		Time: base.Add(time.Duration((i*7)%31) * time.Second),
		Actor: audit.Actor{
			Principal: fmt.Sprintf("usr_%d", i%4),
			IP:        "192.0.2.7",
			RequestID: fmt.Sprintf("req-%d", i),
		},
		Action:        auditActions[i%len(auditActions)],
		Resource:      fmt.Sprintf("agents/agt_%04d", i),
		Decision:      audit.Decision{Allowed: i%5 != 0, Reason: "role ADMIN"},
		RequestDigest: audit.DigestRequest(fmt.Appendf(nil, `{"name":"a%d"}`, i)),
	}
}

// appendAudit appends recs in order through audit.Append in one transaction and returns them as
// stored.
func appendAudit(t *testing.T, s AuditStore, recs ...audit.Record) []audit.Record {
	t.Helper()
	out := make([]audit.Record, 0, len(recs))
	err := s.InTx(t.Context(), func(ctx context.Context) error {
		for _, r := range recs {
			stored, err := audit.Append(ctx, s, r)
			if err != nil {
				return err
			}
			out = append(out, stored)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("append %d audit records: %v", len(recs), err)
	}
	return out
}

// auditRecords returns n records of tree from auditRecord, starting at from.
func auditRecords(tree string, from, n int) []audit.Record {
	out := make([]audit.Record, n)
	for i := range out {
		out[i] = auditRecord(tree, from+i)
	}
	return out
}

// refTree is a tree recomputed with tlog from its records alone: what the stored hashes must be.
type refTree map[int64]tlog.Hash

func newRefTree(t *testing.T, recs []audit.Record) refTree {
	t.Helper()
	r := refTree{}
	for i, rec := range recs {
		hs, err := tlog.StoredHashes(int64(i), rec.Canonical(), r)
		if err != nil {
			t.Fatalf("reference hashes of record %d: %v", i, err)
		}
		for j, h := range hs {
			r[tlog.StoredHashIndex(0, int64(i))+int64(j)] = h
		}
	}
	return r
}

func (r refTree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		h, ok := r[idx]
		if !ok {
			return nil, fmt.Errorf("no reference hash %d", idx)
		}
		out[i] = h
	}
	return out, nil
}

// storeHashes reads the hashes of tree in s, for tlog.
func storeHashes(ctx context.Context, s AuditStore, tree string) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) { return s.ReadHashes(ctx, tree, indexes) })
}

// entriesOf returns the rows recs should be stored as.
func entriesOf(recs []audit.Record) []audit.Entry {
	var out []audit.Entry
	for _, r := range recs {
		out = append(out, audit.Entry{Seq: r.Seq, Canonical: r.Canonical()})
	}
	return out
}

func treeSize(t *testing.T, s AuditStore, tree string) int64 {
	t.Helper()
	n, err := s.TreeSize(t.Context(), tree)
	if err != nil {
		t.Fatalf("TreeSize(%s): %v", tree, err)
	}
	return n
}

func allRecords(t *testing.T, s AuditStore, tree string) []audit.Entry {
	t.Helper()
	got, err := s.Records(t.Context(), tree, math.MinInt64, math.MaxInt64, math.MaxInt32)
	if err != nil {
		t.Fatalf("Records(%s): %v", tree, err)
	}
	return got
}

// checkStoredTree checks that tree holds exactly recs (seqs 0..len-1), with the hashes and root
// tlog computes from them, and that Verify passes.
func checkStoredTree(t *testing.T, s AuditStore, tree string, recs []audit.Record) {
	t.Helper()
	ctx := t.Context()
	n := int64(len(recs))
	if got := treeSize(t, s, tree); got != n {
		t.Fatalf("TreeSize(%s) = %d, want %d", tree, got, n)
	}
	if diff := cmp.Diff(entriesOf(recs), allRecords(t, s, tree)); diff != "" {
		t.Fatalf("records of %s (-want +got):\n%s", tree, diff)
	}
	ref := newRefTree(t, recs)
	indexes := make([]int64, tlog.StoredHashCount(n))
	for i := range indexes {
		indexes[i] = int64(i)
	}
	want, err := ref.ReadHashes(indexes)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadHashes(ctx, tree, indexes)
	if err != nil {
		t.Fatalf("ReadHashes(%s): %v", tree, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("stored hashes of %s differ from tlog's (-want +got):\n%s", tree, diff)
	}
	if n > 0 {
		wantRoot, err := tlog.TreeHash(n, ref)
		if err != nil {
			t.Fatal(err)
		}
		gotRoot, err := tlog.TreeHash(n, storeHashes(ctx, s, tree))
		if err != nil {
			t.Fatalf("root of %s from the stored hashes: %v", tree, err)
		}
		if gotRoot != wantRoot {
			t.Fatalf("root of %s = %s, want %s", tree, gotRoot, wantRoot)
		}
	}
	rep, err := audit.Verify(ctx, s, tree, nil)
	if err != nil {
		t.Fatalf("Verify(%s): %v", tree, err)
	}
	if !rep.OK || rep.Verified != n {
		t.Fatalf("Verify(%s): %s", tree, rep.Summary())
	}
}

func testAuditAppend(t *testing.T, s AuditStore) {
	ctx := t.Context()
	const other = "global"
	// Batches of several sizes, with appends to another tree in between: each tree numbers its
	// records on its own.
	var recs, others []audit.Record
	next := 0
	for _, batch := range []int{1, 1, 2, 20, 1, 45} {
		recs = append(recs, appendAudit(t, s, auditRecords(auditTree, next, batch)...)...)
		others = append(others, appendAudit(t, s, auditRecord(other, next))...)
		next += batch
	}
	for i, r := range recs {
		if r.Seq != int64(i) {
			t.Fatalf("record %d appended at seq %d", i, r.Seq)
		}
		want := auditRecord(auditTree, i)
		want.Seq, want.Time = int64(i), want.Time.UTC()
		if diff := cmp.Diff(want, r); diff != "" {
			t.Fatalf("record %d as appended (-want +got):\n%s", i, diff)
		}
	}
	checkStoredTree(t, s, auditTree, recs)
	checkStoredTree(t, s, other, others)
	checkStoredTree(t, s, "ten_never_written", nil)

	// The stored bytes parse back to the record, nanoseconds included.
	got := allRecords(t, s, auditTree)
	for i, e := range got {
		r, err := e.Record()
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if diff := cmp.Diff(recs[i], r); diff != "" {
			t.Fatalf("record %d read back (-want +got):\n%s", i, diff)
		}
	}

	windows := []struct {
		name     string
		from, to int64
		limit    int
		want     []audit.Entry
	}{
		{"a window", 10, 20, 100, entriesOf(recs[10:20])},
		{"cut by the limit", 10, 20, 3, entriesOf(recs[10:13])},
		{"limit of one", 0, math.MaxInt64, 1, entriesOf(recs[:1])},
		{"to the end", 65, math.MaxInt64, 100, entriesOf(recs[65:])},
		{"past the end", 70, math.MaxInt64, 100, nil},
		{"before the start", math.MinInt64, 0, 100, nil},
		{"empty range", 5, 5, 100, nil},
	}
	for _, w := range windows {
		t.Run(w.name, func(t *testing.T) {
			got, err := s.Records(ctx, auditTree, w.from, w.to, w.limit)
			if err != nil {
				t.Fatalf("Records: %v", err)
			}
			if diff := cmp.Diff(w.want, got); diff != "" {
				t.Fatalf("Records(%d, %d, %d) (-want +got):\n%s", w.from, w.to, w.limit, diff)
			}
		})
	}
	if _, err := s.Records(ctx, auditTree, 0, 10, 0); err == nil {
		t.Fatal("Records with limit 0 succeeded, want an error")
	}
}

func testAuditAppendRefusals(t *testing.T, s AuditStore) {
	ctx := t.Context()
	recs := appendAudit(t, s, auditRecords(auditTree, 0, 5)...)

	// Another record at an existing seq, with the hashes it would have had there.
	dup := auditRecord(auditTree, 99)
	dup.Seq, dup.Time = 3, dup.Time.UTC()
	dupHashes, err := tlog.StoredHashes(3, dup.Canonical(), newRefTree(t, recs[:3]))
	if err != nil {
		t.Fatal(err)
	}
	next := auditRecord(auditTree, 5)
	next.Seq, next.Time = 5, next.Time.UTC()
	nextHashes, err := tlog.StoredHashes(5, next.Canonical(), newRefTree(t, recs))
	if err != nil {
		t.Fatal(err)
	}
	other := auditRecord(auditTree, 6)
	other.Seq = 5

	tests := []struct {
		name      string
		rec       audit.Record
		canonical []byte
		hashes    []tlog.Hash
		code      errs.Code
	}{
		{"seq already stored", dup, dup.Canonical(), dupHashes, errs.Conflict},
		{"too few hashes", next, next.Canonical(), nextHashes[:len(nextHashes)-1], errs.Internal},
		{"too many hashes", next, next.Canonical(), append(slices.Clone(nextHashes), tlog.Hash{1}), errs.Internal},
		{"canonical of another record", next, other.Canonical(), nextHashes, errs.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, inTx := range []bool{false, true} {
				var err error
				if inTx {
					err = s.InTx(ctx, func(ctx context.Context) error { return s.AppendRecord(ctx, tt.rec, tt.canonical, tt.hashes) })
				} else {
					err = s.AppendRecord(ctx, tt.rec, tt.canonical, tt.hashes)
				}
				if got := errs.CodeOf(err); got != tt.code {
					t.Fatalf("AppendRecord (in a transaction: %v) error code = %q (%v), want %q", inTx, got, err, tt.code)
				}
			}
			// Nothing of the refused record was written.
			checkStoredTree(t, s, auditTree, recs)
		})
	}

	// The refusals left the tree appendable where it was.
	recs = append(recs, appendAudit(t, s, auditRecord(auditTree, 5))...)
	checkStoredTree(t, s, auditTree, recs)
}

func testAuditReadHashes(t *testing.T, s AuditStore) {
	ctx := t.Context()
	recs := appendAudit(t, s, auditRecords(auditTree, 0, 9)...)
	ref := newRefTree(t, recs)
	n := tlog.StoredHashCount(int64(len(recs)))
	tests := []struct {
		name    string
		indexes []int64
	}{
		{"none", []int64{}},
		{"one", []int64{4}},
		{"out of order", []int64{n - 1, 0, 7, 3}},
		{"repeated", []int64{2, 2, 5, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := ref.ReadHashes(tt.indexes)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.ReadHashes(ctx, auditTree, tt.indexes)
			if err != nil {
				t.Fatalf("ReadHashes: %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("ReadHashes(%v) (-want +got):\n%s", tt.indexes, diff)
			}
		})
	}
	missing := []struct {
		name    string
		tree    string
		indexes []int64
	}{
		{"past the tree", auditTree, []int64{n}},
		{"one of several missing", auditTree, []int64{0, n + 5, 1}},
		{"negative", auditTree, []int64{-1}},
		{"another tree", "ten_other", []int64{0}},
	}
	for _, tt := range missing {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.ReadHashes(ctx, tt.tree, tt.indexes)
			if got := errs.CodeOf(err); got != errs.NotFound {
				t.Fatalf("ReadHashes(%s, %v) error code = %q (%v), want %q", tt.tree, tt.indexes, got, err, errs.NotFound)
			}
		})
	}
}

// newAuditSigner loads a checkpoint key the way the kernel does, from a file in a new directory.
func newAuditSigner(t *testing.T) *audit.Signer {
	t.Helper()
	signer, _, err := audit.LoadOrCreateSigner(filepath.Join(t.TempDir(), "keys", "audit.key"), auditKeyName)
	if err != nil {
		t.Fatalf("LoadOrCreateSigner: %v", err)
	}
	return signer
}

func latestCheckpoint(t *testing.T, s AuditStore, tree string) (audit.Checkpoint, bool) {
	t.Helper()
	cp, ok, err := s.LatestCheckpoint(t.Context(), tree)
	if err != nil {
		t.Fatalf("LatestCheckpoint(%s): %v", tree, err)
	}
	return cp, ok
}

func testAuditCheckpoints(t *testing.T, s AuditStore) {
	ctx := t.Context()
	signer := newAuditSigner(t)
	verifiers := note.VerifierList(signer.Verifier())

	if _, ok := latestCheckpoint(t, s, auditTree); ok {
		t.Fatal("LatestCheckpoint of an empty store found one")
	}
	appendAudit(t, s, auditRecords(auditTree, 0, 10)...)
	first, err := audit.SignCheckpoint(ctx, s, signer, auditTree)
	if err != nil {
		t.Fatalf("SignCheckpoint: %v", err)
	}
	if got, _ := latestCheckpoint(t, s, auditTree); !cmp.Equal(first, got) {
		t.Fatalf("LatestCheckpoint = %+v, want the checkpoint signed %+v", got, first)
	}
	if opened, err := audit.OpenCheckpoint(first.Note, verifiers); err != nil || opened.Size != 10 || opened.Hash != first.Hash {
		t.Fatalf("stored note opens to %+v, %v", opened, err)
	}

	appendAudit(t, s, auditRecords(auditTree, 10, 7)...)
	second, err := audit.SignCheckpoint(ctx, s, signer, auditTree)
	if err != nil {
		t.Fatalf("second SignCheckpoint: %v", err)
	}
	if second.Size != 17 {
		t.Fatalf("second checkpoint size = %d, want 17", second.Size)
	}
	if got, _ := latestCheckpoint(t, s, auditTree); !cmp.Equal(second, got) {
		t.Fatalf("LatestCheckpoint = %+v, want %+v", got, second)
	}
	// Nothing appended since: the stored checkpoint is returned, not a new one.
	again, err := audit.SignCheckpoint(ctx, s, signer, auditTree)
	if err != nil || !cmp.Equal(second, again) {
		t.Fatalf("SignCheckpoint with no new records = %+v, %v; want %+v", again, err, second)
	}
	// Saving an older checkpoint again (another replica's) changes nothing.
	if err := s.SaveCheckpoint(ctx, first); err != nil {
		t.Fatalf("SaveCheckpoint of a stored checkpoint: %v", err)
	}
	if got, _ := latestCheckpoint(t, s, auditTree); !cmp.Equal(second, got) {
		t.Fatalf("LatestCheckpoint after re-saving an older one = %+v, want %+v", got, second)
	}
	rep, err := audit.Verify(ctx, s, auditTree, verifiers)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Verified != 17 || rep.Checkpoint == nil || !rep.Checkpoint.Matches || rep.Checkpoint.Size != 17 {
		t.Fatalf("Verify: %s", rep.Summary())
	}

	t.Run("first saved at a size is kept", func(t *testing.T) {
		const tree = "ten_saved"
		kept := audit.Checkpoint{Tree: tree, Size: 5, Hash: tlog.Hash{1}, Note: []byte("first note\n")}
		for _, cp := range []audit.Checkpoint{kept, {Tree: tree, Size: 5, Hash: tlog.Hash{2}, Note: []byte("second note\n")}} {
			if err := s.SaveCheckpoint(ctx, cp); err != nil {
				t.Fatalf("SaveCheckpoint: %v", err)
			}
		}
		if got, ok := latestCheckpoint(t, s, tree); !ok || !cmp.Equal(kept, got) {
			t.Fatalf("LatestCheckpoint = %+v, %v; want %+v", got, ok, kept)
		}
	})
	t.Run("largest size wins, whatever the order saved", func(t *testing.T) {
		const tree = "ten_sizes"
		var want audit.Checkpoint
		for _, size := range []int64{9, 100, 10, 99} {
			cp := audit.Checkpoint{Tree: tree, Size: size, Hash: tlog.Hash{byte(size)}, Note: fmt.Appendf(nil, "note %d\n", size)}
			if size == 100 {
				want = cp
			}
			if err := s.SaveCheckpoint(ctx, cp); err != nil {
				t.Fatalf("SaveCheckpoint: %v", err)
			}
		}
		if got, ok := latestCheckpoint(t, s, tree); !ok || !cmp.Equal(want, got) {
			t.Fatalf("LatestCheckpoint = %+v, %v; want %+v", got, ok, want)
		}
		if _, ok := latestCheckpoint(t, s, "ten_none"); ok {
			t.Fatal("LatestCheckpoint of a tree without checkpoints found one")
		}
	})
}

func testAuditTrees(t *testing.T, s AuditStore) {
	ctx := t.Context()
	trees, err := s.Trees(ctx)
	if err != nil || len(trees) != 0 {
		t.Fatalf("Trees of an empty store = %v, %v; want none", trees, err)
	}
	// Names whose byte order differs from a natural-language collation's.
	withRecords := []string{"zeta", "Zeta", "_under", "-dash", "a1", "A2", "0num", "global"}
	for i, tree := range withRecords {
		appendAudit(t, s, auditRecords(tree, 0, 1+i%3)...)
	}
	const checkpointOnly = "ten_checkpoint_only"
	if err := s.SaveCheckpoint(ctx, audit.Checkpoint{Tree: checkpointOnly, Size: 3, Hash: tlog.Hash{3}, Note: []byte("n\n")}); err != nil {
		t.Fatalf("SaveCheckpoint: %v", err)
	}
	want := slices.Sorted(slices.Values(append(slices.Clone(withRecords), checkpointOnly)))
	got, err := s.Trees(ctx)
	if err != nil {
		t.Fatalf("Trees: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Trees (-want +got):\n%s", diff)
	}
}

// testAuditRollback checks that appends roll back with the transaction that made them: no record,
// hash, head or tree is left, and the next append takes the seq the rolled-back one had.
func testAuditRollback(t *testing.T, s AuditStore) {
	ctx := t.Context()
	const newTree = "ten_rolled_back"
	recs := appendAudit(t, s, auditRecords(auditTree, 0, 5)...)
	boom := errors.New("the audited change failed")
	err := s.InTx(ctx, func(ctx context.Context) error {
		for i := range 3 {
			if _, err := audit.Append(ctx, s, auditRecord(auditTree, 5+i)); err != nil {
				return err
			}
			if _, err := audit.Append(ctx, s, auditRecord(newTree, i)); err != nil {
				return err
			}
		}
		if n, err := s.TreeSize(ctx, auditTree); err != nil || n != 8 {
			return fmt.Errorf("TreeSize inside the transaction = %d, %v; want 8", n, err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want the callback's error", err)
	}
	checkStoredTree(t, s, auditTree, recs)
	checkStoredTree(t, s, newTree, nil)
	if _, err := s.ReadHashes(ctx, auditTree, []int64{tlog.StoredHashIndex(0, 5)}); !errs.Is(err, errs.NotFound) {
		t.Fatalf("ReadHashes of a rolled-back record: %v, want not found", err)
	}
	if _, err := s.ReadHashes(ctx, newTree, []int64{0}); !errs.Is(err, errs.NotFound) {
		t.Fatalf("ReadHashes of a rolled-back tree: %v, want not found", err)
	}
	trees, err := s.Trees(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{auditTree}, trees); diff != "" {
		t.Fatalf("Trees after a rollback (-want +got):\n%s", diff)
	}
	recs = append(recs, appendAudit(t, s, auditRecord(auditTree, 5))...)
	if recs[5].Seq != 5 {
		t.Fatalf("append after the rollback took seq %d, want 5", recs[5].Seq)
	}
	checkStoredTree(t, s, auditTree, recs)
}

// testAuditConcurrentAppends appends to one tree from many goroutines, each in its own
// transaction: the adapter must serialise them (audit.Append reads the size, then writes at it),
// so every append succeeds and takes its own seq.
func testAuditConcurrentAppends(t *testing.T, s AuditStore) {
	ctx := t.Context()
	const writers = 50
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		mu    sync.Mutex
		byReq = map[string]audit.Record{}
		fails []error
	)
	for i := range writers {
		wg.Go(func() {
			<-start
			var stored audit.Record
			err := s.InTx(ctx, func(ctx context.Context) error {
				var err error
				stored, err = audit.Append(ctx, s, auditRecord(auditTree, i))
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fails = append(fails, fmt.Errorf("writer %d: %w", i, err))
				return
			}
			byReq[stored.Actor.RequestID] = stored
		})
	}
	close(start)
	wg.Wait()
	for _, err := range fails {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	recs := make([]audit.Record, writers)
	seen := make([]bool, writers)
	for _, r := range byReq {
		if r.Seq < 0 || r.Seq >= writers || seen[r.Seq] {
			t.Fatalf("seq %d taken twice or out of range", r.Seq)
		}
		seen[r.Seq] = true
		recs[r.Seq] = r
	}
	if len(byReq) != writers {
		t.Fatalf("%d records appended, want %d", len(byReq), writers)
	}
	checkStoredTree(t, s, auditTree, recs)
}

func testAuditListing(t *testing.T, s AuditStore) {
	ctx := t.Context()
	recs := appendAudit(t, s, auditRecords(auditTree, 0, 40)...)
	// Another tree with the same actions, principals and times: never listed.
	appendAudit(t, s, auditRecords("ten_other", 0, 40)...)

	yes, no := true, false
	micro := func(tm time.Time) time.Time { return tm.Truncate(time.Microsecond) }
	matches := func(r audit.Record, f store.AuditFilter) bool {
		return r.Seq > f.AfterSeq &&
			(f.Action == "" || r.Action == f.Action) &&
			(f.Principal == "" || r.Actor.Principal == f.Principal) &&
			(f.Allowed == nil || r.Decision.Allowed == *f.Allowed) &&
			(f.Since.IsZero() || !micro(r.Time).Before(micro(f.Since))) &&
			(f.Until.IsZero() || micro(r.Time).Before(micro(f.Until)))
	}
	expect := func(f store.AuditFilter) []audit.Entry {
		var out []audit.Record
		for _, r := range recs {
			if matches(r, f) && len(out) < f.Limit {
				out = append(out, r)
			}
		}
		return entriesOf(out)
	}
	// Bounds taken from stored times, which have nanoseconds: they compare at microseconds.
	since, until := recs[10].Time, recs[20].Time
	filters := []struct {
		name string
		f    store.AuditFilter
		none bool // the filter matches nothing; every other one must match something
	}{
		{"everything", store.AuditFilter{AfterSeq: -1, Limit: 100}, false},
		{"first page", store.AuditFilter{AfterSeq: -1, Limit: 7}, false},
		{"after a seq", store.AuditFilter{AfterSeq: 33, Limit: 100}, false},
		{"after the last", store.AuditFilter{AfterSeq: 39, Limit: 100}, true},
		{"action", store.AuditFilter{AfterSeq: -1, Action: "agent.update", Limit: 100}, false},
		{"unknown action", store.AuditFilter{AfterSeq: -1, Action: "tenant.delete", Limit: 100}, true},
		{"principal", store.AuditFilter{AfterSeq: -1, Principal: "usr_2", Limit: 100}, false},
		{"allowed", store.AuditFilter{AfterSeq: -1, Allowed: &yes, Limit: 100}, false},
		{"denied", store.AuditFilter{AfterSeq: -1, Allowed: &no, Limit: 100}, false},
		{"since", store.AuditFilter{AfterSeq: -1, Since: since, Limit: 100}, false},
		{"until", store.AuditFilter{AfterSeq: -1, Until: until, Limit: 100}, false},
		{"between", store.AuditFilter{AfterSeq: -1, Since: since, Until: until, Limit: 100}, false},
		{"every filter at once", store.AuditFilter{
			AfterSeq: 3, Action: "agent.create", Principal: "usr_1", Allowed: &yes,
			Since: base, Until: base.Add(time.Hour), Limit: 100,
		}, false},
		{"denied actions, one page", store.AuditFilter{AfterSeq: 5, Action: "apikey.create", Allowed: &no, Limit: 1}, false},
	}
	for _, tt := range filters {
		t.Run(tt.name, func(t *testing.T) {
			want := expect(tt.f)
			if (len(want) == 0) != tt.none || len(want) == len(recs) && tt.name != "everything" {
				t.Fatalf("the filter selects %d of %d records: the test no longer tests it", len(want), len(recs))
			}
			got, err := s.AuditRecords(ctx, auditTree, tt.f)
			if err != nil {
				t.Fatalf("AuditRecords: %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("AuditRecords(%+v) (-want +got):\n%s", tt.f, diff)
			}
		})
	}

	t.Run("paging through", func(t *testing.T) {
		for _, f := range []store.AuditFilter{
			{Limit: 7},
			{Limit: 3, Allowed: &no},
			{Limit: 4, Action: "agent.create", Since: since},
		} {
			f.AfterSeq = -1
			var pages []audit.Entry
			for range 100 {
				page, err := s.AuditRecords(ctx, auditTree, f)
				if err != nil {
					t.Fatalf("AuditRecords: %v", err)
				}
				if len(page) > f.Limit {
					t.Fatalf("page of %d records, limit %d", len(page), f.Limit)
				}
				if len(page) == 0 {
					break
				}
				pages = append(pages, page...)
				f.AfterSeq = page[len(page)-1].Seq
			}
			f.AfterSeq, f.Limit = -1, 1000
			if diff := cmp.Diff(expect(f), pages); diff != "" || len(pages) == 0 {
				t.Fatalf("pages of %+v (-want +got):\n%s", f, diff)
			}
		}
	})

	t.Run("bad filters", func(t *testing.T) {
		for _, f := range []store.AuditFilter{
			{AfterSeq: -1, Limit: 0},
			{AfterSeq: -1, Limit: -5},
			{AfterSeq: -2, Limit: 10},
		} {
			if _, err := s.AuditRecords(ctx, auditTree, f); !errs.Is(err, errs.Invalid) {
				t.Errorf("AuditRecords(%+v) error = %v, want code %q", f, err, errs.Invalid)
			}
		}
	})

	if got, err := s.AuditRecords(ctx, "ten_never_written", store.AuditFilter{AfterSeq: -1, Limit: 10}); err != nil || got != nil {
		t.Fatalf("AuditRecords of an unknown tree = %v, %v; want none", got, err)
	}
}
