package audit

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/errs"
)

// verifyPage is how many seqs Verify reads per Records call.
const verifyPage = 1024

// Kind names what Verify found wrong.
type Kind string

// The kinds of problem, in the order Verify looks for them within a record.
const (
	// KindRecordMissing: no row at a seq below the expected size (a gap, or a truncated tail).
	KindRecordMissing Kind = "record_missing"
	// KindRecordUnexpected: a second row at one seq, or a row outside 0 <= seq < expected size.
	KindRecordUnexpected Kind = "record_unexpected"
	// KindRecordMalformed: the stored bytes are not a canonical record.
	KindRecordMalformed Kind = "record_malformed"
	// KindRecordMisplaced: the record names another seq or tree than the row it is stored in.
	KindRecordMisplaced Kind = "record_misplaced"
	// KindLeafHashMismatch: the record's leaf hash differs from its stored leaf hash, or that
	// hash is missing: the record (or its hash) changed after it was appended.
	KindLeafHashMismatch Kind = "leaf_hash_mismatch"
	// KindNodeHashMismatch: a stored interior hash differs from the one recomputed from the
	// records; Seq is the first record of the subtree it covers.
	KindNodeHashMismatch Kind = "node_hash_mismatch"
	// KindTreeHeadMismatch: the tree head's size is smaller than the signed checkpoint's.
	KindTreeHeadMismatch Kind = "tree_head_mismatch"
	// KindCheckpointInvalid: the latest stored checkpoint does not verify with the given keys,
	// is malformed, is of another tree, or disagrees with the row it is stored in.
	KindCheckpointInvalid Kind = "checkpoint_invalid"
	// KindCheckpointMismatch: every record checks out against the stored hashes, yet the root
	// recomputed from the records at the checkpoint's size is not the signed root: records below
	// that size were rewritten together with their hashes.
	KindCheckpointMismatch Kind = "checkpoint_mismatch"
)

// Problem is one finding of Verify.
type Problem struct {
	Kind   Kind   `json:"kind"`
	Seq    int64  `json:"seq"` // the first bad seq; -1 when no seq of the tree can be blamed
	Detail string `json:"detail"`
}

// CheckpointStatus describes the latest stored checkpoint.
type CheckpointStatus struct {
	Size     int64    `json:"size"`
	Hash     string   `json:"hash"`              // root hash, base64
	Verified bool     `json:"verified"`          // the note verified and matches its row and tree
	Signers  []string `json:"signers,omitempty"` // names of the keys whose signatures verified
	Matches  bool     `json:"matches"`           // the records recompute to the signed root
}

// Report is the outcome of Verify for one tree.
type Report struct {
	Tree        string            `json:"tree"`
	OK          bool              `json:"ok"`
	FirstBadSeq int64             `json:"first_bad_seq"`    // -1 when no record is singled out
	TreeSize    int64             `json:"tree_size"`        // the size in the tree head
	Verified    int64             `json:"records_verified"` // records 0..Verified-1 check out (0 on checkpoint_mismatch)
	Checkpoint  *CheckpointStatus `json:"checkpoint,omitempty"`
	Problems    []Problem         `json:"problems,omitempty"`
}

// Summary renders r on one line for people.
func (r Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tree %s: ", r.Tree)
	if r.OK {
		b.WriteString("ok")
	} else {
		b.WriteString("FAILED")
	}
	fmt.Fprintf(&b, ", %d of %d records verified", r.Verified, r.TreeSize)
	mismatch := slices.ContainsFunc(r.Problems, func(p Problem) bool { return p.Kind == KindCheckpointMismatch })
	switch cp := r.Checkpoint; {
	case cp == nil:
		b.WriteString(", no checkpoint")
	case !cp.Verified:
		fmt.Fprintf(&b, ", checkpoint at %d does NOT verify", cp.Size)
	case cp.Matches:
		fmt.Fprintf(&b, ", checkpoint at %d verified", cp.Size)
	case mismatch:
		fmt.Fprintf(&b, ", checkpoint at %d CONTRADICTED by the records", cp.Size)
	default:
		fmt.Fprintf(&b, ", checkpoint at %d signature verified, root not reached", cp.Size)
	}
	for _, p := range r.Problems {
		if p.Seq >= 0 {
			fmt.Fprintf(&b, "; seq %d: %s: %s", p.Seq, p.Kind, p.Detail)
		} else {
			fmt.Fprintf(&b, "; %s: %s", p.Kind, p.Detail)
		}
	}
	return b.String()
}

// Verify checks tree as stored in st, trusting nothing stored: it recomputes every leaf and
// interior hash from the canonical records, in seq order, compares them with the stored hashes,
// and compares the recomputed root at the latest checkpoint's size with the root that checkpoint
// signs, after verifying its signature with verifiers. The expected size is the larger of the
// tree head and the verified checkpoint's size. The walk stops at the first bad record; Report
// says which seq and why (see Kind). Problems holds at most two entries: a checkpoint_invalid
// one, if the checkpoint does not verify (the walk then goes on without it), and the first
// problem of the walk. An error means st could not be read, not that the log is bad.
//
// Records appended after the latest checkpoint are checked only against the stored hashes: an
// attacker who rewrites them together with their hashes is caught by the next checkpoint's
// consistency check in SignCheckpoint, or by an auditor holding a later checkpoint, not here.
func Verify(ctx context.Context, st Store, tree string, verifiers note.Verifiers) (Report, error) {
	rep := Report{Tree: tree, FirstBadSeq: -1}
	head, err := st.TreeSize(ctx, tree)
	if err != nil {
		return Report{}, fmt.Errorf("audit tree %s size: %w", tree, err)
	}
	rep.TreeSize = head
	w := &walker{st: st, tree: tree, f: newFrontier()}
	stored, ok, err := st.LatestCheckpoint(ctx, tree)
	if err != nil {
		return Report{}, fmt.Errorf("audit tree %s latest checkpoint: %w", tree, err)
	}
	if ok {
		rep.Checkpoint = &CheckpointStatus{Size: stored.Size, Hash: stored.Hash.String()}
		cp, signers, p := checkStoredCheckpoint(stored, tree, verifiers)
		if p != nil {
			rep.Problems = append(rep.Problems, *p)
		} else {
			rep.Checkpoint.Verified = true
			rep.Checkpoint.Signers = signers
			w.cp = &cp
			w.status = rep.Checkpoint
		}
	}
	expected := max(head, 0)
	if w.cp != nil && w.cp.Size > expected {
		expected = w.cp.Size
	}
	p, err := w.run(ctx, expected)
	if err != nil {
		return Report{}, err
	}
	if p == nil && w.cp != nil && head < w.cp.Size {
		p = &Problem{Kind: KindTreeHeadMismatch, Seq: max(head, 0), Detail: fmt.Sprintf(
			"the tree head says %d records, the signed checkpoint %d", head, w.cp.Size)}
	}
	if p == nil {
		if p, err = w.outside(ctx, expected); err != nil {
			return Report{}, err
		}
	}
	rep.Verified = w.f.size
	if p != nil {
		rep.Problems = append(rep.Problems, *p)
		rep.FirstBadSeq = p.Seq
		switch {
		case p.Kind == KindCheckpointMismatch:
			// Some record below the checkpoint's size is bad, which one is unknown.
			rep.Verified = 0
		case p.Seq >= 0:
			rep.Verified = min(rep.Verified, p.Seq)
		}
	}
	rep.OK = len(rep.Problems) == 0
	return rep, nil
}

// VerifyAll runs Verify on every tree of st.
func VerifyAll(ctx context.Context, st Store, verifiers note.Verifiers) ([]Report, error) {
	trees, err := st.Trees(ctx)
	if err != nil {
		return nil, fmt.Errorf("list audit trees: %w", err)
	}
	reports := make([]Report, 0, len(trees))
	for _, tree := range trees {
		r, err := Verify(ctx, st, tree, verifiers)
		if err != nil {
			return nil, err
		}
		reports = append(reports, r)
	}
	return reports, nil
}

// checkStoredCheckpoint verifies a stored checkpoint of tree and returns its parsed form and the
// names of the keys that signed it, or the problem with it.
func checkStoredCheckpoint(stored Checkpoint, tree string, verifiers note.Verifiers) (Checkpoint, []string, *Problem) {
	invalid := func(format string, args ...any) (Checkpoint, []string, *Problem) {
		return Checkpoint{}, nil, &Problem{Kind: KindCheckpointInvalid, Seq: -1, Detail: fmt.Sprintf(format, args...)}
	}
	cp, n, err := openCheckpoint(stored.Note, verifiers)
	if err != nil {
		return invalid("the latest checkpoint does not verify: %v", err)
	}
	if cp.Tree != tree {
		return invalid("the latest checkpoint is signed for tree %s", cp.Tree)
	}
	if cp.Size != stored.Size || cp.Hash != stored.Hash || stored.Tree != tree {
		return invalid("the latest checkpoint is stored as tree %s size %d hash %s but signs size %d hash %s",
			stored.Tree, stored.Size, stored.Hash, cp.Size, cp.Hash)
	}
	signers := make([]string, len(n.Sigs))
	for i, s := range n.Sigs {
		signers[i] = fmt.Sprintf("%s+%08x", s.Name, s.Hash)
	}
	return cp, signers, nil
}

// walker recomputes a tree record by record.
type walker struct {
	st     Store
	tree   string
	f      *frontier
	cp     *Checkpoint       // the verified latest checkpoint, or nil
	status *CheckpointStatus // set Matches on it when the root at cp.Size matches
}

func (w *walker) run(ctx context.Context, expected int64) (*Problem, error) {
	if p, err := w.checkRoot(); p != nil || err != nil {
		return p, err
	}
	for from := int64(0); from < expected; {
		to := min(from+verifyPage, expected)
		rows, err := w.st.Records(ctx, w.tree, from, to, int(to-from)+1)
		if err != nil {
			return nil, fmt.Errorf("audit tree %s records %d..%d: %w", w.tree, from, to, err)
		}
		n := 0
		for n < len(rows) && rows[n].Seq == from+int64(n) {
			n++
		}
		hashes, err := w.readHashes(ctx, from, from+int64(n))
		if err != nil {
			return nil, err
		}
		for i := range n {
			var stored []tlog.Hash
			if hashes != nil {
				lo := tlog.StoredHashIndex(0, from+int64(i)) - tlog.StoredHashIndex(0, from)
				hi := tlog.StoredHashIndex(0, from+int64(i)+1) - tlog.StoredHashIndex(0, from)
				stored = hashes[lo:hi]
			}
			if p, err := w.record(ctx, rows[i], stored); p != nil || err != nil {
				return p, err
			}
		}
		seq := from + int64(n)
		if n < len(rows) {
			if next := rows[n].Seq; next > seq {
				return &Problem{Kind: KindRecordMissing, Seq: seq, Detail: fmt.Sprintf(
					"no record at seq %d; the next stored record is at seq %d", seq, next)}, nil
			}
			return &Problem{Kind: KindRecordUnexpected, Seq: rows[n].Seq, Detail: fmt.Sprintf(
				"more than one record stored at seq %d", rows[n].Seq)}, nil
		}
		if seq < to {
			return &Problem{Kind: KindRecordMissing, Seq: seq, Detail: fmt.Sprintf(
				"no record at seq %d or after it, but %d records are expected", seq, expected)}, nil
		}
		from = to
	}
	return nil, nil
}

// outside looks for rows outside 0 <= seq < size. A row at a negative seq is no position of
// the tree, so its Problem blames no seq.
func (w *walker) outside(ctx context.Context, size int64) (*Problem, error) {
	for _, r := range [][2]int64{{math.MinInt64, 0}, {size, math.MaxInt64}} {
		extra, err := w.st.Records(ctx, w.tree, r[0], r[1], 1)
		if err != nil {
			return nil, fmt.Errorf("audit tree %s records outside 0..%d: %w", w.tree, size, err)
		}
		if len(extra) > 0 {
			return &Problem{Kind: KindRecordUnexpected, Seq: max(extra[0].Seq, -1), Detail: fmt.Sprintf(
				"record stored at seq %d, outside the tree of %d records", extra[0].Seq, size)}, nil
		}
	}
	return nil, nil
}

// readHashes reads the stored hashes of records from..to-1, which are contiguous. It returns nil
// when some are missing, so that the walk reads them record by record and blames the right one.
func (w *walker) readHashes(ctx context.Context, from, to int64) ([]tlog.Hash, error) {
	if from == to {
		return nil, nil
	}
	lo, hi := tlog.StoredHashIndex(0, from), tlog.StoredHashIndex(0, to)
	indexes := make([]int64, 0, hi-lo)
	for i := lo; i < hi; i++ {
		indexes = append(indexes, i)
	}
	hs, err := w.st.ReadHashes(ctx, w.tree, indexes)
	if errs.Is(err, errs.NotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit tree %s hashes of records %d..%d: %w", w.tree, from, to, err)
	}
	if len(hs) != len(indexes) {
		return nil, fmt.Errorf("audit tree %s: %d hashes read for %d indexes", w.tree, len(hs), len(indexes))
	}
	return hs, nil
}

// record checks the row e, the next record of the walk, against stored, its stored hashes (nil:
// read them), then adds it to the recomputed tree.
func (w *walker) record(ctx context.Context, e Entry, stored []tlog.Hash) (*Problem, error) {
	seq := e.Seq
	rec, err := ParseCanonical(e.Canonical)
	if err != nil {
		return &Problem{Kind: KindRecordMalformed, Seq: seq, Detail: fmt.Sprintf("record at seq %d: %v", seq, err)}, nil
	}
	if rec.Seq != seq || rec.Tree != w.tree {
		return &Problem{Kind: KindRecordMisplaced, Seq: seq, Detail: fmt.Sprintf(
			"record stored at %s seq %d says %s seq %d", w.tree, seq, rec.Tree, rec.Seq)}, nil
	}
	hashes, err := tlog.StoredHashes(seq, e.Canonical, w.f)
	if err != nil {
		return nil, fmt.Errorf("audit tree %s recompute hashes of %d: %w", w.tree, seq, err)
	}
	if stored == nil {
		lo := tlog.StoredHashIndex(0, seq)
		indexes := make([]int64, len(hashes))
		for i := range indexes {
			indexes[i] = lo + int64(i)
		}
		stored, err = w.st.ReadHashes(ctx, w.tree, indexes)
		if errs.Is(err, errs.NotFound) {
			return &Problem{Kind: KindLeafHashMismatch, Seq: seq, Detail: fmt.Sprintf(
				"the stored hashes of record %d are missing", seq)}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("audit tree %s hashes of record %d: %w", w.tree, seq, err)
		}
	}
	if len(stored) != len(hashes) {
		return nil, fmt.Errorf("audit tree %s: %d stored hashes for record %d, want %d", w.tree, len(stored), seq, len(hashes))
	}
	if stored[0] != hashes[0] {
		return &Problem{Kind: KindLeafHashMismatch, Seq: seq, Detail: fmt.Sprintf(
			"record %d hashes to %s but its stored leaf hash is %s: it was altered after it was appended", seq, hashes[0], stored[0])}, nil
	}
	for level := 1; level < len(hashes); level++ {
		if stored[level] != hashes[level] {
			first := seq >> level << level
			return &Problem{Kind: KindNodeHashMismatch, Seq: first, Detail: fmt.Sprintf(
				"the stored hash of records %d..%d (level %d) does not match the records", first, seq, level)}, nil
		}
	}
	w.f.add(hashes)
	return w.checkRoot()
}

// checkRoot compares the recomputed root with the checkpoint's once the walk reaches its size.
func (w *walker) checkRoot() (*Problem, error) {
	if w.cp == nil || w.f.size != w.cp.Size {
		return nil, nil
	}
	root, err := tlog.TreeHash(w.f.size, w.f)
	if err != nil {
		return nil, fmt.Errorf("audit tree %s recompute root at %d: %w", w.tree, w.f.size, err)
	}
	if root != w.cp.Hash {
		return &Problem{Kind: KindCheckpointMismatch, Seq: -1, Detail: fmt.Sprintf(
			"records 0..%d recompute to root %s, the checkpoint signs %s: records below seq %d were rewritten with their hashes",
			w.cp.Size-1, root, w.cp.Hash, w.cp.Size)}, nil
	}
	w.status.Matches = true
	return nil, nil
}

// frontier is a tlog.HashReader over a tree being rebuilt from its records, holding only the
// roots of its maximal complete subtrees: all that tlog.StoredHashes reads to add the next record
// and tlog.TreeHash reads to compute the root. Memory stays O(log size).
type frontier struct {
	size   int64
	hashes map[int64]tlog.Hash
}

func newFrontier() *frontier { return &frontier{hashes: map[int64]tlog.Hash{}} }

func (f *frontier) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		h, ok := f.hashes[idx]
		if !ok {
			return nil, fmt.Errorf("hash %d is not on the frontier of a tree of size %d", idx, f.size)
		}
		out[i] = h
	}
	return out, nil
}

// add appends the record whose tlog.StoredHashes are hashes.
func (f *frontier) add(hashes []tlog.Hash) {
	base := tlog.StoredHashIndex(0, f.size)
	for i, h := range hashes {
		f.hashes[base+int64(i)] = h
	}
	f.size++
	keep := map[int64]bool{}
	for level := 0; f.size>>level > 0; level++ {
		if n := f.size >> level; n&1 == 1 {
			keep[tlog.StoredHashIndex(level, n-1)] = true
		}
	}
	for idx := range f.hashes {
		if !keep[idx] {
			delete(f.hashes, idx)
		}
	}
}
