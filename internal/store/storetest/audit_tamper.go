package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/errs"
)

// Tamperer runs SQL on a store's database directly, bypassing the adapter, as an attacker with
// access to the database would. The statements RunAuditTamper sends use $1, $2, … parameters and
// SQL that both SQLite and PostgreSQL accept, on the audit tables as migration 00006 lays them out:
// audit_trees(tree, size), audit_records(tree, seq, canonical, time, action, principal, allowed),
// audit_hashes(tree, idx, hash).
type Tamperer interface {
	ExecRaw(ctx context.Context, query string, args ...any) error
}

// The tampered log: records 0..39 under a signed checkpoint, 40..44 appended since.
const (
	tamperTree   = "ten_01JTAMPERED"
	tamperSigned = 40
	tamperSize   = 45
	// tamperAway is added to seqs that must move out of the way first: the primary key forbids
	// two rows at one seq even in the middle of a statement, in PostgreSQL.
	tamperAway = 1_000_000
)

type tamperLog struct {
	st     AuditStore
	raw    Tamperer
	signer *audit.Signer
}

func newTamperLog(t *testing.T, open func(t *testing.T) (AuditStore, Tamperer)) tamperLog {
	t.Helper()
	st, raw := open(t)
	l := tamperLog{st: st, raw: raw, signer: newAuditSigner(t)}
	appendAudit(t, st, auditRecords(tamperTree, 0, tamperSigned)...)
	if _, err := audit.SignCheckpoint(t.Context(), st, l.signer, tamperTree); err != nil {
		t.Fatalf("SignCheckpoint: %v", err)
	}
	appendAudit(t, st, auditRecords(tamperTree, tamperSigned, tamperSize-tamperSigned)...)
	return l
}

func (l tamperLog) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	if err := l.raw.ExecRaw(t.Context(), query, args...); err != nil {
		t.Fatalf("tamper: %s: %v", query, err)
	}
}

func (l tamperLog) verify(t *testing.T) audit.Report {
	t.Helper()
	rep, err := audit.Verify(t.Context(), l.st, tamperTree, note.VerifierList(l.signer.Verifier()))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

// record reads and parses the stored record at seq.
func (l tamperLog) record(t *testing.T, seq int64) audit.Record {
	t.Helper()
	rows, err := l.st.Records(t.Context(), tamperTree, seq, seq+1, 1)
	if err != nil || len(rows) != 1 {
		t.Fatalf("Records at %d = %d rows, %v", seq, len(rows), err)
	}
	r, err := rows[0].Record()
	if err != nil {
		t.Fatalf("record %d: %v", seq, err)
	}
	return r
}

// edit rewrites the canonical bytes of the record at seq into another valid record, leaving its
// hashes alone.
func (l tamperLog) edit(t *testing.T, seq int64, mutate func(*audit.Record)) {
	t.Helper()
	r := l.record(t, seq)
	mutate(&r)
	l.exec(t, `UPDATE audit_records SET canonical = $3 WHERE tree = $1 AND seq = $2`, tamperTree, seq, r.Canonical())
}

// deleteRecords deletes the records with from <= seq < to.
func (l tamperLog) deleteRecords(t *testing.T, from, to int64) {
	t.Helper()
	l.exec(t, `DELETE FROM audit_records WHERE tree = $1 AND seq >= $2 AND seq < $3`, tamperTree, from, to)
}

func (l tamperLog) setHead(t *testing.T, size int64) {
	t.Helper()
	l.exec(t, `UPDATE audit_trees SET size = $2 WHERE tree = $1`, tamperTree, size)
}

// requireFirstBad checks that rep blames seq with kind, and nothing else.
func requireFirstBad(t *testing.T, rep audit.Report, seq int64, kind audit.Kind) {
	t.Helper()
	if rep.OK || rep.FirstBadSeq != seq || len(rep.Problems) != 1 || rep.Problems[0].Kind != kind || rep.Problems[0].Seq != seq {
		t.Fatalf("report %s\nwant first bad seq %d, %s", rep.Summary(), seq, kind)
	}
	if rep.Verified != seq {
		t.Fatalf("records_verified = %d, want %d", rep.Verified, seq)
	}
	if rep.Checkpoint == nil || !rep.Checkpoint.Verified {
		t.Fatalf("the checkpoint does not verify: %s", rep.Summary())
	}
}

// RunAuditTamper alters a signed audit log in the database behind the adapter's back, one way at
// a time, each in a fresh database from open, and checks that audit.Verify reads the result
// through the adapter and reports the first bad seq, or the contradiction with the signed
// checkpoint when records and hashes were rewritten consistently. open returns a fresh migrated
// store, as for RunAudit, and a Tamperer on the same database.
func RunAuditTamper(t *testing.T, open func(t *testing.T) (AuditStore, Tamperer)) {
	t.Run("untampered", func(t *testing.T) {
		t.Parallel()
		l := newTamperLog(t, open)
		rep := l.verify(t)
		if !rep.OK || rep.Verified != tamperSize || rep.TreeSize != tamperSize || rep.Checkpoint == nil ||
			!rep.Checkpoint.Matches || rep.Checkpoint.Size != tamperSigned {
			t.Fatalf("untampered log: %s", rep.Summary())
		}
	})

	tests := []struct {
		name   string
		tamper func(t *testing.T, l tamperLog)
		seq    int64
		kind   audit.Kind
	}{
		{"edit one record", func(t *testing.T, l tamperLog) {
			l.edit(t, 17, func(r *audit.Record) { r.Decision.Allowed = !r.Decision.Allowed })
		}, 17, audit.KindLeafHashMismatch},
		{"edit one record after the checkpoint", func(t *testing.T, l tamperLog) {
			l.edit(t, 43, func(r *audit.Record) { r.Actor.IP = "198.51.100.1" })
		}, 43, audit.KindLeafHashMismatch},
		{"edit one record's bytes out of canonical form", func(t *testing.T, l tamperLog) {
			r := l.record(t, 17)
			bad := slices.Concat([]byte(`{"v": 1`), r.Canonical()[len(`{"v":1`):])
			l.exec(t, `UPDATE audit_records SET canonical = $3 WHERE tree = $1 AND seq = $2`, tamperTree, 17, bad)
		}, 17, audit.KindRecordMalformed},
		{"delete one record", func(t *testing.T, l tamperLog) { l.deleteRecords(t, 17, 18) }, 17, audit.KindRecordMissing},
		{"delete the first record", func(t *testing.T, l tamperLog) { l.deleteRecords(t, 0, 1) }, 0, audit.KindRecordMissing},
		{"swap two records' seqs", func(t *testing.T, l tamperLog) {
			const move = `UPDATE audit_records SET seq = $3 WHERE tree = $1 AND seq = $2`
			l.exec(t, move, tamperTree, 12, tamperAway)
			l.exec(t, move, tamperTree, 30, 12)
			l.exec(t, move, tamperTree, tamperAway, 30)
		}, 12, audit.KindRecordMisplaced},
		{"truncate the tail", func(t *testing.T, l tamperLog) { l.deleteRecords(t, 42, tamperSize) }, 42, audit.KindRecordMissing},
		{"truncate the tail below the checkpoint and lower the head", func(t *testing.T, l tamperLog) {
			l.deleteRecords(t, 35, tamperSize)
			l.setHead(t, 35)
		}, 35, audit.KindRecordMissing},
		{"truncate the tail with its hashes and lower the head", func(t *testing.T, l tamperLog) {
			l.deleteRecords(t, 35, tamperSize)
			l.exec(t, `DELETE FROM audit_hashes WHERE tree = $1 AND idx >= $2`, tamperTree, tlog.StoredHashIndex(0, 35))
			l.setHead(t, 35)
		}, 35, audit.KindRecordMissing},
		{"truncate after the checkpoint and lower the head below it", func(t *testing.T, l tamperLog) {
			l.deleteRecords(t, tamperSigned, tamperSize)
			l.setHead(t, 38)
		}, 38, audit.KindTreeHeadMismatch},
		{"delete the tree head", func(t *testing.T, l tamperLog) {
			l.exec(t, `DELETE FROM audit_trees WHERE tree = $1`, tamperTree)
			trees, err := l.st.Trees(t.Context())
			if err != nil || !slices.Contains(trees, tamperTree) {
				t.Fatalf("Trees = %v, %v: a tree with records but no head must still be listed", trees, err)
			}
		}, 0, audit.KindTreeHeadMismatch},
		{"insert one record, shifting the later ones", func(t *testing.T, l tamperLog) {
			forged := l.record(t, 20)
			forged.Action, forged.Resource = "tenant.delete", "tenants/ten_victim"
			l.exec(t, `UPDATE audit_records SET seq = seq + $3 WHERE tree = $1 AND seq >= $2`, tamperTree, 20, tamperAway)
			l.exec(t, `UPDATE audit_records SET seq = seq - $3 WHERE tree = $1 AND seq >= $2`, tamperTree, tamperAway, tamperAway-1)
			l.exec(t, `INSERT INTO audit_records (tree, seq, canonical, time, action, principal, allowed)
				SELECT tree, seq - 1, $3, time, $4, principal, allowed FROM audit_records WHERE tree = $1 AND seq = $2`,
				tamperTree, 21, forged.Canonical(), forged.Action)
			l.setHead(t, tamperSize+1)
		}, 20, audit.KindLeafHashMismatch},
		{"insert one record after the tree", func(t *testing.T, l tamperLog) {
			extra := l.record(t, tamperSize-1)
			extra.Seq = tamperSize
			l.exec(t, `INSERT INTO audit_records (tree, seq, canonical, time, action, principal, allowed)
				SELECT tree, seq + 1, $3, time, action, principal, allowed FROM audit_records WHERE tree = $1 AND seq = $2`,
				tamperTree, tamperSize-1, extra.Canonical())
		}, tamperSize, audit.KindRecordUnexpected},
		{"change an interior hash", func(t *testing.T, l tamperLog) {
			l.exec(t, `UPDATE audit_hashes SET hash = $3 WHERE tree = $1 AND idx = $2`,
				tamperTree, tlog.StoredHashIndex(1, 5), make([]byte, tlog.HashSize))
		}, 10, audit.KindNodeHashMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := newTamperLog(t, open)
			tt.tamper(t, l)
			requireFirstBad(t, l.verify(t), tt.seq, tt.kind)
		})
	}

	t.Run("rewrite a suffix with consistently recomputed hashes", func(t *testing.T) {
		t.Parallel()
		l := newTamperLog(t, open)
		ctx := t.Context()
		hashes := storeHashes(ctx, l.st, tamperTree)
		// The strongest attacker: every record from 25 on is changed, and its leaf and interior
		// hashes recomputed from the stored ones exactly as Append would have.
		for seq := int64(25); seq < tamperSize; seq++ {
			r := l.record(t, seq)
			r.Decision = audit.Decision{Allowed: true, Reason: "ok"}
			canonical := r.Canonical()
			hs, err := tlog.StoredHashes(seq, canonical, hashes)
			if err != nil {
				t.Fatal(err)
			}
			l.exec(t, `UPDATE audit_records SET canonical = $3, allowed = $4 WHERE tree = $1 AND seq = $2`, tamperTree, seq, canonical, true)
			for i, h := range hs {
				l.exec(t, `UPDATE audit_hashes SET hash = $3 WHERE tree = $1 AND idx = $2`,
					tamperTree, tlog.StoredHashIndex(0, seq)+int64(i), h[:])
			}
		}
		rep := l.verify(t)
		if rep.OK || rep.FirstBadSeq != -1 || len(rep.Problems) != 1 || rep.Problems[0].Kind != audit.KindCheckpointMismatch {
			t.Fatalf("report %s\nwant a checkpoint mismatch", rep.Summary())
		}
		if rep.Verified != 0 || rep.Checkpoint == nil || !rep.Checkpoint.Verified || rep.Checkpoint.Matches {
			t.Fatalf("report %s", rep.Summary())
		}
		// The kernel refuses to sign over the rewritten history.
		if _, err := audit.SignCheckpoint(ctx, l.st, l.signer, tamperTree); !errors.Is(err, audit.ErrTampered) {
			t.Fatalf("SignCheckpoint over a rewritten log = %v, want %v", err, audit.ErrTampered)
		}
	})

	// A record removed from the end with its head lowered, but its hashes left: appending again
	// fails on the hashes after the record row went in, and AppendRecord, called outside any
	// transaction, must undo that row itself.
	t.Run("a failed append outside a transaction writes nothing", func(t *testing.T) {
		t.Parallel()
		l := newTamperLog(t, open)
		ctx := t.Context()
		l.deleteRecords(t, tamperSize-1, tamperSize)
		l.setHead(t, tamperSize-1)
		_, err := audit.Append(ctx, l.st, auditRecord(tamperTree, 99))
		if got := errs.CodeOf(err); got != errs.Conflict {
			t.Fatalf("Append over leftover hashes: error code %q (%v), want %q", got, err, errs.Conflict)
		}
		if rows, err := l.st.Records(ctx, tamperTree, tamperSize-1, tamperSize+1, 10); err != nil || len(rows) != 0 {
			t.Fatalf("records after the failed append = %d, %v; want none", len(rows), err)
		}
		if got := treeSize(t, l.st, tamperTree); got != tamperSize-1 {
			t.Fatalf("tree head after the failed append = %d, want %d", got, tamperSize-1)
		}
	})
}
