package audit_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/errs"
)

func requireField(t *testing.T, err error, field string) {
	t.Helper()
	e := errs.As(err)
	if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != field {
		t.Fatalf("error = %v, want an invalid error naming %s", err, field)
	}
}

func TestInclusionProof(t *testing.T) {
	st := newMemStore()
	recs := appendN(t, st, testTree, 21)
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) { return st.ReadHashes(t.Context(), testTree, idx) })
	for size := int64(1); size <= 21; size++ {
		root, err := tlog.TreeHash(size, reader)
		if err != nil {
			t.Fatal(err)
		}
		for seq := range size {
			p, err := audit.InclusionProof(t.Context(), st, testTree, seq, size)
			if err != nil {
				t.Fatalf("InclusionProof(%d, %d): %v", seq, size, err)
			}
			if err := tlog.CheckRecord(p, size, root, seq, tlog.RecordHash(recs[seq].Canonical())); err != nil {
				t.Fatalf("proof of %d in %d does not check: %v", seq, size, err)
			}
		}
	}
}

func TestInclusionProofRejects(t *testing.T) {
	st := newMemStore()
	appendN(t, st, testTree, 5)
	tests := []struct {
		name      string
		tree      string
		seq, size int64
		field     string
	}{
		{"seq equals size", testTree, 3, 3, "seq"},
		{"seq beyond size", testTree, 4, 3, "seq"},
		{"negative seq", testTree, -1, 3, "seq"},
		{"size beyond tree", testTree, 0, 6, "size"},
		{"size zero", testTree, 0, 0, "size"},
		{"bad tree", "a/b", 0, 1, "tree"},
		{"empty tree", "ten_empty", 0, 1, "size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := audit.InclusionProof(t.Context(), st, tt.tree, tt.seq, tt.size)
			requireField(t, err, tt.field)
		})
	}
}

func TestConsistencyProof(t *testing.T) {
	st := newMemStore()
	appendN(t, st, testTree, 19)
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) { return st.ReadHashes(t.Context(), testTree, idx) })
	for to := int64(1); to <= 19; to++ {
		newRoot, err := tlog.TreeHash(to, reader)
		if err != nil {
			t.Fatal(err)
		}
		for from := int64(1); from <= to; from++ {
			oldRoot, err := tlog.TreeHash(from, reader)
			if err != nil {
				t.Fatal(err)
			}
			p, err := audit.ConsistencyProof(t.Context(), st, testTree, from, to)
			if err != nil {
				t.Fatalf("ConsistencyProof(%d, %d): %v", from, to, err)
			}
			if err := tlog.CheckTree(p, to, newRoot, from, oldRoot); err != nil {
				t.Fatalf("proof from %d to %d does not check: %v", from, to, err)
			}
		}
	}
}

func TestConsistencyProofRejects(t *testing.T) {
	st := newMemStore()
	appendN(t, st, testTree, 5)
	tests := []struct {
		name     string
		from, to int64
		field    string
	}{
		{"from greater than to", 4, 3, "from"},
		{"from zero", 0, 3, "from"},
		{"to beyond tree", 2, 6, "to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := audit.ConsistencyProof(t.Context(), st, testTree, tt.from, tt.to)
			requireField(t, err, tt.field)
		})
	}
}

func TestProofStoreErrors(t *testing.T) {
	boom := errors.New("boom")
	st := newMemStore()
	appendN(t, st, testTree, 5)
	st.readErr = boom
	if _, err := audit.InclusionProof(t.Context(), st, testTree, 1, 5); !errors.Is(err, boom) {
		t.Fatalf("InclusionProof = %v", err)
	}
	if _, err := audit.ConsistencyProof(t.Context(), st, testTree, 1, 5); !errors.Is(err, boom) {
		t.Fatalf("ConsistencyProof = %v", err)
	}
	st.readErr, st.sizeErr = nil, boom
	if _, err := audit.InclusionProof(t.Context(), st, testTree, 1, 5); !errors.Is(err, boom) {
		t.Fatalf("InclusionProof = %v", err)
	}
}

// provedLog is a tree of 11 records with a checkpoint at 11 and the material of an inclusion
// proof of record 6.
type provedLog struct {
	st     *memStore
	signer *audit.Signer
	cp     audit.Checkpoint
	record []byte
	proof  tlog.RecordProof
}

func newProvedLog(t *testing.T) provedLog {
	t.Helper()
	st := newMemStore()
	appendN(t, st, testTree, 11)
	s := newSigner(t, keyName)
	cp := signCheckpoint(t, st, s, testTree)
	p, err := audit.InclusionProof(t.Context(), st, testTree, 6, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	return provedLog{st: st, signer: s, cp: cp, record: st.rawRecord(testTree, 6), proof: p}
}

func TestCheckInclusion(t *testing.T) {
	l := newProvedLog(t)
	vkey := l.signer.VerifierKey()
	t.Run("every record verifies", func(t *testing.T) {
		for seq := range l.cp.Size {
			p, err := audit.InclusionProof(t.Context(), l.st, testTree, seq, l.cp.Size)
			if err != nil {
				t.Fatal(err)
			}
			if err := audit.CheckInclusion(l.st.rawRecord(testTree, seq), p, seq, l.cp.Note, vkey); err != nil {
				t.Fatalf("record %d: %v", seq, err)
			}
		}
	})
	altered := parse(t, l.record)
	altered.Decision.Allowed = !altered.Decision.Allowed
	otherTree := parse(t, l.record)
	otherTree.Tree = "ten_other"
	tamperedProof := slices.Clone(l.proof)
	tamperedProof[0][0] ^= 1
	tests := []struct {
		name       string
		record     []byte
		proof      tlog.RecordProof
		seq        int64
		checkpoint []byte
		vkey       string
	}{
		{"altered record", altered.Canonical(), l.proof, 6, l.cp.Note, vkey},
		{"non-canonical record", append(slices.Clone(l.record), ' '), l.proof, 6, l.cp.Note, vkey},
		{"record of another tree", otherTree.Canonical(), l.proof, 6, l.cp.Note, vkey},
		{"another seq", l.record, l.proof, 5, l.cp.Note, vkey},
		{"tampered proof", l.record, tamperedProof, 6, l.cp.Note, vkey},
		{"truncated proof", l.record, l.proof[1:], 6, l.cp.Note, vkey},
		{"overlong proof", l.record, make(tlog.RecordProof, 129), 6, l.cp.Note, vkey},
		{"checkpoint of another key", l.record, l.proof, 6, l.cp.Note, newSigner(t, keyName).VerifierKey()},
		{"edited checkpoint", l.record, l.proof, 6, []byte(strings.Replace(string(l.cp.Note), "\n11\n", "\n12\n", 1)), vkey},
		{"malformed verifier key", l.record, l.proof, 6, l.cp.Note, "not-a-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := audit.CheckInclusion(tt.record, tt.proof, tt.seq, tt.checkpoint, tt.vkey); !errs.Is(err, errs.Invalid) {
				t.Fatalf("CheckInclusion = %v, want invalid", err)
			}
		})
	}
	t.Run("record beyond the checkpoint", func(t *testing.T) {
		recs := appendN(t, l.st, testTree, 1)
		// The record at seq 11 exists but the checkpoint covers 0..10.
		next := recs[0]
		next.Seq = 11
		if err := audit.CheckInclusion(next.Canonical(), l.proof, 11, l.cp.Note, vkey); !errs.Is(err, errs.Invalid) {
			t.Fatalf("CheckInclusion = %v, want invalid", err)
		}
	})
}

func TestCheckConsistency(t *testing.T) {
	st := newMemStore()
	s := newSigner(t, keyName)
	vkey := s.VerifierKey()
	appendN(t, st, testTree, 8)
	cp8 := signCheckpoint(t, st, s, testTree)
	appendN(t, st, testTree, 5)
	cp13 := signCheckpoint(t, st, s, testTree)
	proof, err := audit.ConsistencyProof(t.Context(), st, testTree, 8, 13)
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.CheckConsistency(cp8.Note, cp13.Note, proof, vkey); err != nil {
		t.Fatalf("honest checkpoints: %v", err)
	}
	if err := audit.CheckConsistency(cp13.Note, cp13.Note, nil, vkey); err != nil {
		t.Fatalf("a checkpoint with itself: %v", err)
	}

	// The attacker deletes the checkpoints so the kernel signs again, then rewrites records
	// 3.. with consistent hashes; the kernel signs the rewritten tree. An auditor who kept cp8
	// detects it: no proof links cp8 to the new checkpoint.
	st.setCheckpoints()
	rewriteSuffix(t, st, testTree, 3, func(r *audit.Record) { r.Decision.Allowed = true })
	appendN(t, st, testTree, 2)
	rewritten := signCheckpoint(t, st, s, testTree)
	badProof, err := audit.ConsistencyProof(t.Context(), st, testTree, 8, 15)
	if err != nil {
		t.Fatal(err)
	}

	other := newSigner(t, keyName)
	otherStore := newMemStore()
	appendN(t, otherStore, "ten_other", 13)
	otherTree := signCheckpoint(t, otherStore, s, "ten_other")
	otherKey := signCheckpoint(t, otherStore, other, "ten_other")
	fork := newMemStore()
	appendN(t, fork, testTree, 13)
	rewriteSuffix(t, fork, testTree, 12, func(r *audit.Record) { r.Resource = "forked" })
	forked := signCheckpoint(t, fork, s, testTree)
	tamperedProof := slices.Clone(proof)
	tamperedProof[0][3] ^= 0x80
	empty, err := note.Sign(&note.Note{Text: audit.Origin(keyName, testTree) + "\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"}, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.CheckConsistency(empty, cp8.Note, nil, vkey); err != nil {
		t.Fatalf("from the empty tree: %v", err)
	}

	tests := []struct {
		name     string
		old, new []byte
		proof    tlog.TreeProof
		vkey     string
	}{
		{"rewritten later tree", cp8.Note, rewritten.Note, badProof, vkey},
		{"rewritten later tree with the honest proof", cp8.Note, rewritten.Note, proof, vkey},
		{"tampered proof", cp8.Note, cp13.Note, tamperedProof, vkey},
		{"old newer than new", cp13.Note, cp8.Note, proof, vkey},
		{"different trees", cp8.Note, otherTree.Note, proof, vkey},
		{"same size different roots", cp13.Note, forked.Note, nil, vkey},
		{"same size with a proof", cp8.Note, cp8.Note, tlog.TreeProof{{1}}, vkey},
		{"checkpoint of another key", cp8.Note, otherKey.Note, proof, vkey},
		{"verified by another key", cp8.Note, cp13.Note, proof, other.VerifierKey()},
		{"malformed verifier key", cp8.Note, cp13.Note, proof, "x"},
		{"overlong proof", cp8.Note, cp13.Note, make(tlog.TreeProof, 129), vkey},
		{"old checkpoint malformed", []byte("x"), cp13.Note, proof, vkey},
		{"from the empty tree with a proof", empty, cp13.Note, proof, vkey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := audit.CheckConsistency(tt.old, tt.new, tt.proof, tt.vkey); !errs.Is(err, errs.Invalid) {
				t.Fatalf("CheckConsistency = %v, want invalid", err)
			}
		})
	}
}
