package audit_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/audit"
)

// tamperLog is a tree of 45 records: 0..39 under a signed checkpoint, 40..44 appended since.
type tamperLog struct {
	st     *memStore
	signer *audit.Signer
}

const (
	tamperSigned = 40
	tamperSize   = 45
)

func newTamperLog(t *testing.T) tamperLog {
	t.Helper()
	st := newMemStore()
	s := newSigner(t, keyName)
	appendN(t, st, testTree, tamperSigned)
	signCheckpoint(t, st, s, testTree)
	for i := tamperSigned; i < tamperSize; i++ {
		if _, err := audit.Append(t.Context(), st, sampleRecord(testTree, i)); err != nil {
			t.Fatal(err)
		}
	}
	return tamperLog{st: st, signer: s}
}

func (l tamperLog) verify(t *testing.T) audit.Report {
	t.Helper()
	rep, err := audit.Verify(t.Context(), l.st, testTree, verifiersOf(l.signer))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

// edit rewrites the record at seq the way an attacker with SQL access would: a valid canonical
// record with changed content, hashes untouched.
func (l tamperLog) edit(t *testing.T, seq int64, mutate func(*audit.Record)) {
	t.Helper()
	r := parse(t, l.st.rawRecord(testTree, seq))
	mutate(&r)
	l.st.setRaw(testTree, seq, r.Canonical())
}

// requireFirstBad checks the report blames seq with kind and nothing else.
func requireFirstBad(t *testing.T, rep audit.Report, seq int64, kind audit.Kind) {
	t.Helper()
	if rep.OK || rep.FirstBadSeq != seq || len(rep.Problems) != 1 || rep.Problems[0].Kind != kind || rep.Problems[0].Seq != seq {
		t.Fatalf("report %s\nwant first bad seq %d, %s", rep.Summary(), seq, kind)
	}
	if seq >= 0 && rep.Verified != seq {
		t.Fatalf("records_verified = %d, want %d", rep.Verified, seq)
	}
}

func TestVerifyCleanLog(t *testing.T) {
	l := newTamperLog(t)
	rep := l.verify(t)
	want := audit.Report{
		Tree:        testTree,
		OK:          true,
		FirstBadSeq: -1,
		TreeSize:    tamperSize,
		Verified:    tamperSize,
		Checkpoint: &audit.CheckpointStatus{
			Size:     tamperSigned,
			Hash:     l.st.checkpoints[0].Hash.String(),
			Verified: true,
			Signers:  []string{keyName + "+" + l.signer.VerifierKey()[len(keyName)+1:len(keyName)+9]},
			Matches:  true,
		},
	}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Fatalf("report (-want +got):\n%s", diff)
	}
	if got := rep.Summary(); got != "tree "+testTree+": ok, 45 of 45 records verified, checkpoint at 40 verified" {
		t.Fatalf("Summary = %q", got)
	}
}

func TestVerifyWithoutCheckpoint(t *testing.T) {
	st := newMemStore()
	appendN(t, st, testTree, 9)
	rep, err := audit.Verify(t.Context(), st, testTree, verifiersOf(newSigner(t, keyName)))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Checkpoint != nil || rep.Verified != 9 || rep.FirstBadSeq != -1 {
		t.Fatalf("report %+v", rep)
	}
	if !strings.Contains(rep.Summary(), "no checkpoint") {
		t.Fatalf("Summary = %q", rep.Summary())
	}
	empty, err := audit.Verify(t.Context(), st, "ten_never_written", verifiersOf(newSigner(t, keyName)))
	if err != nil || !empty.OK || empty.Verified != 0 {
		t.Fatalf("empty tree: %+v, %v", empty, err)
	}
}

// The six tamperings of the "Done when", each done to the raw rows.

func TestVerifyDetectsEditedRecord(t *testing.T) {
	t.Run("content edited", func(t *testing.T) {
		l := newTamperLog(t)
		l.edit(t, 17, func(r *audit.Record) { r.Decision.Allowed = !r.Decision.Allowed })
		requireFirstBad(t, l.verify(t), 17, audit.KindLeafHashMismatch)
	})
	t.Run("edited in the unsigned tail", func(t *testing.T) {
		l := newTamperLog(t)
		l.edit(t, 43, func(r *audit.Record) { r.Actor.IP = "198.51.100.1" })
		requireFirstBad(t, l.verify(t), 43, audit.KindLeafHashMismatch)
	})
	t.Run("bytes edited into a non-canonical record", func(t *testing.T) {
		l := newTamperLog(t)
		l.st.setRaw(testTree, 17, []byte(strings.Replace(string(l.st.rawRecord(testTree, 17)), `"v":1`, `"v": 1`, 1)))
		requireFirstBad(t, l.verify(t), 17, audit.KindRecordMalformed)
	})
}

func TestVerifyDetectsDeletedRecord(t *testing.T) {
	for _, seq := range []int64{0, 17, 39, 40, 44} {
		l := newTamperLog(t)
		l.st.deleteRow(testTree, seq)
		requireFirstBad(t, l.verify(t), seq, audit.KindRecordMissing)
	}
}

func TestVerifyDetectsSwappedRecords(t *testing.T) {
	t.Run("contents swapped", func(t *testing.T) {
		l := newTamperLog(t)
		a, b := l.st.rawRecord(testTree, 12), l.st.rawRecord(testTree, 30)
		l.st.setRaw(testTree, 12, b)
		l.st.setRaw(testTree, 30, a)
		requireFirstBad(t, l.verify(t), 12, audit.KindRecordMisplaced)
	})
	t.Run("seq columns swapped", func(t *testing.T) {
		l := newTamperLog(t)
		l.st.setSeq(testTree, 12, -100)
		l.st.setSeq(testTree, 30, 12)
		l.st.setSeq(testTree, -100, 30)
		requireFirstBad(t, l.verify(t), 12, audit.KindRecordMisplaced)
	})
	t.Run("swapped with their seqs rewritten", func(t *testing.T) {
		l := newTamperLog(t)
		a, b := parse(t, l.st.rawRecord(testTree, 12)), parse(t, l.st.rawRecord(testTree, 30))
		a.Seq, b.Seq = 30, 12
		l.st.setRaw(testTree, 12, b.Canonical())
		l.st.setRaw(testTree, 30, a.Canonical())
		requireFirstBad(t, l.verify(t), 12, audit.KindLeafHashMismatch)
	})
}

func TestVerifyDetectsTruncatedTail(t *testing.T) {
	truncate := func(l tamperLog, from int64) {
		for seq := from; seq < tamperSize; seq++ {
			l.st.deleteRow(testTree, seq)
		}
	}
	t.Run("rows deleted, tree head kept", func(t *testing.T) {
		l := newTamperLog(t)
		truncate(l, 42)
		requireFirstBad(t, l.verify(t), 42, audit.KindRecordMissing)
	})
	t.Run("rows deleted below the checkpoint, tree head lowered", func(t *testing.T) {
		l := newTamperLog(t)
		truncate(l, 35)
		l.st.setHead(testTree, 35)
		requireFirstBad(t, l.verify(t), 35, audit.KindRecordMissing)
	})
	t.Run("rows and hashes deleted, tree head lowered", func(t *testing.T) {
		l := newTamperLog(t)
		truncate(l, 35)
		for idx := tlog.StoredHashIndex(0, 35); idx < tlog.StoredHashCount(tamperSize); idx++ {
			l.st.deleteHash(testTree, idx)
		}
		l.st.setHead(testTree, 35)
		requireFirstBad(t, l.verify(t), 35, audit.KindRecordMissing)
	})
	t.Run("only the tree head lowered", func(t *testing.T) {
		l := newTamperLog(t)
		truncate(l, tamperSigned)
		l.st.setHead(testTree, 38)
		requireFirstBad(t, l.verify(t), 38, audit.KindTreeHeadMismatch)
	})
}

func TestVerifyDetectsInsertedRecord(t *testing.T) {
	forged := func(t *testing.T, l tamperLog, seq int64) []byte {
		r := parse(t, l.st.rawRecord(testTree, seq))
		r.Action, r.Resource = "tenant.delete", "tenants/ten_victim"
		return r.Canonical()
	}
	t.Run("later seqs shifted", func(t *testing.T) {
		l := newTamperLog(t)
		rec := forged(t, l, 20)
		for seq := int64(tamperSize - 1); seq >= 20; seq-- {
			l.st.setSeq(testTree, seq, seq+1)
		}
		l.st.insertRow(testTree, 20, rec)
		l.st.setHead(testTree, tamperSize+1)
		requireFirstBad(t, l.verify(t), 20, audit.KindLeafHashMismatch)
	})
	t.Run("duplicate seq, forged row first", func(t *testing.T) {
		l := newTamperLog(t)
		orig := l.st.rawRecord(testTree, 20)
		l.st.setRaw(testTree, 20, forged(t, l, 20))
		l.st.insertRow(testTree, 20, orig)
		requireFirstBad(t, l.verify(t), 20, audit.KindLeafHashMismatch)
	})
	t.Run("duplicate seq, forged row second", func(t *testing.T) {
		l := newTamperLog(t)
		l.st.insertRow(testTree, 20, forged(t, l, 20))
		requireFirstBad(t, l.verify(t), 20, audit.KindRecordUnexpected)
	})
	t.Run("extra row after the tree", func(t *testing.T) {
		l := newTamperLog(t)
		r := parse(t, l.st.rawRecord(testTree, 44))
		r.Seq = tamperSize
		l.st.insertRow(testTree, tamperSize, r.Canonical())
		requireFirstBad(t, l.verify(t), tamperSize, audit.KindRecordUnexpected)
	})
	t.Run("row at a negative seq", func(t *testing.T) {
		l := newTamperLog(t)
		l.st.insertRow(testTree, -3, l.st.rawRecord(testTree, 0))
		rep := l.verify(t)
		requireFirstBad(t, rep, -1, audit.KindRecordUnexpected)
		if rep.Verified != tamperSize {
			t.Fatalf("records_verified = %d, want %d: the tree itself is intact", rep.Verified, tamperSize)
		}
	})
	t.Run("record of another tree", func(t *testing.T) {
		l := newTamperLog(t)
		r := parse(t, l.st.rawRecord(testTree, 20))
		r.Tree = "ten_other"
		l.st.setRaw(testTree, 20, r.Canonical())
		requireFirstBad(t, l.verify(t), 20, audit.KindRecordMisplaced)
	})
}

func TestVerifyDetectsConsistentlyRewrittenSuffix(t *testing.T) {
	l := newTamperLog(t)
	rewriteSuffix(t, l.st, testTree, 25, func(r *audit.Record) { r.Decision = audit.Decision{Allowed: true, Reason: "ok"} })
	rep := l.verify(t)
	if rep.OK || rep.FirstBadSeq != -1 || len(rep.Problems) != 1 || rep.Problems[0].Kind != audit.KindCheckpointMismatch {
		t.Fatalf("report %s\nwant a checkpoint mismatch", rep.Summary())
	}
	if rep.Verified != 0 || !rep.Checkpoint.Verified || rep.Checkpoint.Matches {
		t.Fatalf("report %+v %+v", rep, rep.Checkpoint)
	}
	if !strings.Contains(rep.Summary(), "checkpoint at 40 CONTRADICTED by the records; checkpoint_mismatch: records 0..39") {
		t.Fatalf("Summary = %q", rep.Summary())
	}
}

func TestVerifyDetectsHashTampering(t *testing.T) {
	t.Run("leaf hash deleted", func(t *testing.T) {
		l := newTamperLog(t)
		l.st.deleteHash(testTree, tlog.StoredHashIndex(0, 10))
		requireFirstBad(t, l.verify(t), 10, audit.KindLeafHashMismatch)
	})
	t.Run("interior hash changed", func(t *testing.T) {
		l := newTamperLog(t)
		l.st.putHash(testTree, tlog.StoredHashIndex(1, 5), tlog.Hash{7})
		requireFirstBad(t, l.verify(t), 10, audit.KindNodeHashMismatch)
	})
	t.Run("record and its leaf hash changed", func(t *testing.T) {
		l := newTamperLog(t)
		l.edit(t, 10, func(r *audit.Record) { r.Resource = "agents/agt_other" })
		l.st.putHash(testTree, tlog.StoredHashIndex(0, 10), tlog.RecordHash(l.st.rawRecord(testTree, 10)))
		// Record 11 completes the subtree of records 10..11, whose stored hash no longer matches.
		requireFirstBad(t, l.verify(t), 10, audit.KindNodeHashMismatch)
	})
}

func TestVerifyDetectsBadCheckpoint(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, l tamperLog)
	}{
		{"signed by another key", func(t *testing.T, l tamperLog) {
			l.st.setCheckpoints()
			signCheckpoint(t, l.st, newSigner(t, keyName), testTree)
		}},
		{"note body edited", func(t *testing.T, l tamperLog) {
			cp := l.st.checkpoints[0]
			cp.Note = []byte(strings.Replace(string(cp.Note), "\n40\n", "\n41\n", 1))
			l.st.setCheckpoints(cp)
		}},
		{"row disagrees with the note", func(t *testing.T, l tamperLog) {
			cp := l.st.checkpoints[0]
			cp.Size = 45
			l.st.setCheckpoints(cp)
		}},
		{"checkpoint of another tree", func(t *testing.T, l tamperLog) {
			appendN(t, l.st, "ten_other", 3)
			other := signCheckpoint(t, l.st, l.signer, "ten_other")
			other.Tree = testTree
			l.st.setCheckpoints(other)
		}},
		{"garbage note", func(t *testing.T, l tamperLog) {
			l.st.setCheckpoints(audit.Checkpoint{Tree: testTree, Size: 40, Note: []byte("garbage")})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newTamperLog(t)
			tt.tamper(t, l)
			rep := l.verify(t)
			if rep.OK || rep.FirstBadSeq != -1 || len(rep.Problems) != 1 || rep.Problems[0].Kind != audit.KindCheckpointInvalid {
				t.Fatalf("report %s\nwant checkpoint_invalid only", rep.Summary())
			}
			if rep.Checkpoint == nil || rep.Checkpoint.Verified || rep.Verified != tamperSize {
				t.Fatalf("report %+v", rep)
			}
			if !strings.Contains(rep.Summary(), ": FAILED, 45 of 45 records verified, checkpoint at ") ||
				!strings.Contains(rep.Summary(), " does NOT verify; checkpoint_invalid: ") {
				t.Fatalf("Summary = %q", rep.Summary())
			}
		})
	}
	t.Run("with a record problem too", func(t *testing.T) {
		l := newTamperLog(t)
		rep, err := audit.Verify(t.Context(), l.st, testTree, verifiersOf(newSigner(t, keyName)))
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK || len(rep.Problems) != 1 {
			t.Fatalf("report %s", rep.Summary())
		}
		l.st.deleteRow(testTree, 7)
		rep, err = audit.Verify(t.Context(), l.st, testTree, verifiersOf(newSigner(t, keyName)))
		if err != nil {
			t.Fatal(err)
		}
		kinds := []audit.Kind{}
		for _, p := range rep.Problems {
			kinds = append(kinds, p.Kind)
		}
		if diff := cmp.Diff([]audit.Kind{audit.KindCheckpointInvalid, audit.KindRecordMissing}, kinds); diff != "" || rep.FirstBadSeq != 7 {
			t.Fatalf("report %s", rep.Summary())
		}
	})
}

// A log longer than one page of Verify's reads: problems at and around page boundaries.
func TestVerifyAcrossPages(t *testing.T) {
	st := newMemStore()
	s := newSigner(t, keyName)
	appendN(t, st, testTree, 2100)
	signCheckpoint(t, st, s, testTree)
	appendN(t, st, testTree, 10)
	verify := func(t *testing.T) audit.Report {
		rep, err := audit.Verify(t.Context(), st, testTree, verifiersOf(s))
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := verify(t); !rep.OK || rep.Verified != 2110 || !rep.Checkpoint.Matches {
		t.Fatalf("clean log: %s", rep.Summary())
	}
	t.Run("duplicate at a page boundary", func(t *testing.T) {
		st.insertRow(testTree, 1024, st.rawRecord(testTree, 1024))
		defer st.deleteRow(testTree, 1024)
		requireFirstBad(t, verify(t), 1024, audit.KindRecordUnexpected)
	})
	t.Run("last of a page missing", func(t *testing.T) {
		raw := st.rawRecord(testTree, 1023)
		st.deleteRow(testTree, 1023)
		defer st.insertRow(testTree, 1023, raw)
		requireFirstBad(t, verify(t), 1023, audit.KindRecordMissing)
	})
	t.Run("edited in the second page", func(t *testing.T) {
		raw := st.rawRecord(testTree, 1500)
		r := parse(t, raw)
		r.Actor.Principal = "usr_nobody"
		st.setRaw(testTree, 1500, r.Canonical())
		defer st.setRaw(testTree, 1500, raw)
		requireFirstBad(t, verify(t), 1500, audit.KindLeafHashMismatch)
	})
	t.Run("hash missing in the second page", func(t *testing.T) {
		idx := tlog.StoredHashIndex(0, 1600)
		h := st.hash(testTree, idx)
		st.deleteHash(testTree, idx)
		defer st.putHash(testTree, idx, h)
		requireFirstBad(t, verify(t), 1600, audit.KindLeafHashMismatch)
	})
	if rep := verify(t); !rep.OK {
		t.Fatalf("restored log: %s", rep.Summary())
	}
}

func TestVerifyStoreErrors(t *testing.T) {
	boom := errors.New("boom")
	for name, set := range map[string]func(*memStore){
		"size":    func(m *memStore) { m.sizeErr = boom },
		"latest":  func(m *memStore) { m.latestErr = boom },
		"records": func(m *memStore) { m.recordsErr = boom },
		"hashes":  func(m *memStore) { m.readErr = boom },
	} {
		t.Run(name, func(t *testing.T) {
			l := newTamperLog(t)
			set(l.st)
			if _, err := audit.Verify(t.Context(), l.st, testTree, verifiersOf(l.signer)); !errors.Is(err, boom) {
				t.Fatalf("Verify = %v, want %v in the chain", err, boom)
			}
		})
	}
	t.Run("trees", func(t *testing.T) {
		l := newTamperLog(t)
		l.st.treesErr = boom
		if _, err := audit.VerifyAll(t.Context(), l.st, verifiersOf(l.signer)); !errors.Is(err, boom) {
			t.Fatalf("VerifyAll = %v", err)
		}
	})
}

func TestVerifyBrokenStore(t *testing.T) {
	boom := errors.New("boom")
	t.Run("records outside the tree unreadable", func(t *testing.T) {
		l := newTamperLog(t)
		l.st.recordsHook = func(from, _ int64) error {
			if from == tamperSize {
				return boom
			}
			return nil
		}
		if _, err := audit.Verify(t.Context(), l.st, testTree, verifiersOf(l.signer)); !errors.Is(err, boom) {
			t.Fatalf("Verify = %v, want %v in the chain", err, boom)
		}
	})
	t.Run("too few hashes returned", func(t *testing.T) {
		l := newTamperLog(t)
		l.st.shortHashes = true
		if _, err := audit.Verify(t.Context(), l.st, testTree, verifiersOf(l.signer)); err == nil {
			t.Fatal("Verify trusted a store returning too few hashes")
		}
	})
}

func TestReportSummaryNamesFirstBadSeq(t *testing.T) {
	l := newTamperLog(t)
	l.st.deleteRow(testTree, 9)
	want := "tree " + testTree + ": FAILED, 9 of 45 records verified, checkpoint at 40 signature verified, root not reached; seq 9: record_missing: no record at seq 9; the next stored record is at seq 10"
	if got := l.verify(t).Summary(); got != want {
		t.Fatalf("Summary =\n%s\nwant\n%s", got, want)
	}
}

func TestEntryRecord(t *testing.T) {
	r := sampleRecord(testTree, 3)
	got, err := audit.Entry{Seq: 0, Canonical: r.Canonical()}.Record()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, got); diff != "" {
		t.Fatalf("Entry.Record (-want +got):\n%s", diff)
	}
	if _, err := (audit.Entry{Canonical: []byte("{}")}).Record(); err == nil {
		t.Fatal("Entry.Record parsed garbage")
	}
}

func TestVerifyAll(t *testing.T) {
	l := newTamperLog(t)
	appendN(t, l.st, audit.GlobalTree, 4)
	signCheckpoint(t, l.st, l.signer, audit.GlobalTree)
	l.edit(t, 3, func(r *audit.Record) { r.Action = "auth.login" })
	reps, err := audit.VerifyAll(t.Context(), l.st, verifiersOf(l.signer))
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 2 || reps[0].Tree != audit.GlobalTree || !reps[0].OK || reps[1].Tree != testTree || reps[1].FirstBadSeq != 3 {
		t.Fatalf("reports %+v", reps)
	}
	l.st.recordsErr = errors.New("boom")
	if _, err := audit.VerifyAll(t.Context(), l.st, note.VerifierList(l.signer.Verifier())); err == nil {
		t.Fatal("VerifyAll hid a store error")
	}
}

func TestReportJSON(t *testing.T) {
	l := newTamperLog(t)
	l.st.deleteRow(testTree, 5)
	b, err := json.Marshal(l.verify(t))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"tree", "ok", "first_bad_seq", "tree_size", "records_verified", "checkpoint", "problems"} {
		if _, ok := got[key]; !ok {
			t.Errorf("report JSON lacks %q: %s", key, b)
		}
	}
	if !strings.Contains(string(b), `"problems":[{"kind":"record_missing","seq":5,"detail":`) {
		t.Fatalf("report JSON %s", b)
	}
}
