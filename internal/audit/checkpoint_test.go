package audit_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/errs"
)

func TestSignCheckpointFormat(t *testing.T) {
	st := newMemStore()
	recs := appendN(t, st, testTree, 5)
	s := newSigner(t, keyName)
	cp := signCheckpoint(t, st, s, testTree)

	var leaves [][]byte
	for _, r := range recs {
		leaves = append(leaves, r.Canonical())
	}
	root := rfc6962Root(leaves)
	wantText := keyName + "/" + testTree + "\n5\n" + base64.StdEncoding.EncodeToString(root[:]) + "\n"
	n, err := note.Open(cp.Note, verifiersOf(s))
	if err != nil {
		t.Fatal(err)
	}
	if n.Text != wantText {
		t.Fatalf("checkpoint text %q, want %q", n.Text, wantText)
	}
	if !strings.HasSuffix(string(cp.Note), "\n") || !strings.Contains(string(cp.Note), "\n\n\u2014 "+keyName+" ") {
		t.Fatalf("not a signed note: %q", cp.Note)
	}
	want := audit.Checkpoint{Tree: testTree, Size: 5, Hash: tlog.Hash(root), Note: cp.Note}
	if diff := cmp.Diff(want, cp); diff != "" {
		t.Fatalf("checkpoint (-want +got):\n%s", diff)
	}
	stored, ok, err := st.LatestCheckpoint(t.Context(), testTree)
	if err != nil || !ok {
		t.Fatalf("latest checkpoint: %v %v", ok, err)
	}
	if diff := cmp.Diff(want, stored); diff != "" {
		t.Fatalf("stored checkpoint (-want +got):\n%s", diff)
	}
	opened, err := audit.OpenCheckpoint(cp.Note, verifiersOf(s))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, opened); diff != "" {
		t.Fatalf("OpenCheckpoint (-want +got):\n%s", diff)
	}
	if audit.Origin(keyName, testTree) != keyName+"/"+testTree {
		t.Fatal("Origin")
	}
}

func TestSignCheckpointUnchangedTreeReturnsLatest(t *testing.T) {
	st := newMemStore()
	appendN(t, st, testTree, 3)
	s := newSigner(t, keyName)
	first := signCheckpoint(t, st, s, testTree)
	st.saveErr = errors.New("must not save again")
	again := signCheckpoint(t, st, s, testTree)
	if diff := cmp.Diff(first, again); diff != "" {
		t.Fatalf("second checkpoint differs (-first +again):\n%s", diff)
	}
}

func TestSignCheckpointExtendsPrevious(t *testing.T) {
	st := newMemStore()
	s := newSigner(t, keyName)
	for _, n := range []int{1, 4, 7, 16, 17} {
		for range n {
			if _, err := audit.Append(t.Context(), st, sampleRecord(testTree, n)); err != nil {
				t.Fatal(err)
			}
		}
		signCheckpoint(t, st, s, testTree)
	}
	if len(st.checkpoints) != 5 {
		t.Fatalf("%d checkpoints stored, want 5", len(st.checkpoints))
	}
}

func TestSignCheckpointRefusesTamperedTree(t *testing.T) {
	s := newSigner(t, keyName)
	tests := []struct {
		name   string
		tamper func(t *testing.T, st *memStore)
	}{
		{"suffix rewritten with hashes, then grown", func(t *testing.T, st *memStore) {
			rewriteSuffix(t, st, testTree, 3, func(r *audit.Record) { r.Decision.Allowed = true })
			appendN(t, st, testTree, 2)
		}},
		{"suffix rewritten with hashes, same size", func(t *testing.T, st *memStore) {
			rewriteSuffix(t, st, testTree, 6, func(r *audit.Record) { r.Actor.Principal = "usr_x" })
		}},
		{"tree head shrunk", func(t *testing.T, st *memStore) { st.setHead(testTree, 5) }},
		{"checkpoint note forged", func(t *testing.T, st *memStore) {
			cp := st.checkpoints[0]
			cp.Note = []byte(strings.Replace(string(cp.Note), "\n8\n", "\n2\n", 1))
			st.setCheckpoints(cp)
		}},
		{"checkpoint row disagrees with its note", func(t *testing.T, st *memStore) {
			cp := st.checkpoints[0]
			cp.Size = 2
			st.setCheckpoints(cp)
		}},
		{"checkpoint of another tree", func(t *testing.T, st *memStore) {
			appendN(t, st, "ten_other", 8)
			other, err := audit.SignCheckpoint(t.Context(), st, s, "ten_other")
			if err != nil {
				t.Fatal(err)
			}
			other.Tree = testTree
			st.setCheckpoints(other)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemStore()
			appendN(t, st, testTree, 8)
			signCheckpoint(t, st, s, testTree)
			tt.tamper(t, st)
			before := len(st.checkpoints)
			_, err := audit.SignCheckpoint(t.Context(), st, s, testTree)
			if !errors.Is(err, audit.ErrTampered) || !errs.Is(err, errs.Internal) {
				t.Fatalf("SignCheckpoint = %v, want internal wrapping ErrTampered", err)
			}
			if len(st.checkpoints) != before {
				t.Fatal("a checkpoint was stored over a tampered tree")
			}
		})
	}
}

func TestSignCheckpointAfterKeyRotation(t *testing.T) {
	st := newMemStore()
	appendN(t, st, testTree, 4)
	signCheckpoint(t, st, newSigner(t, keyName), testTree)
	appendN(t, st, testTree, 1)
	rotated := newSigner(t, keyName)
	cp := signCheckpoint(t, st, rotated, testTree)
	if cp.Size != 5 {
		t.Fatalf("checkpoint size %d, want 5", cp.Size)
	}
}

func TestSignCheckpointAfterEmptyCheckpoint(t *testing.T) {
	st := newMemStore()
	s := newSigner(t, keyName)
	empty, err := note.Sign(&note.Note{Text: keyName + "/" + testTree + "\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"}, s)
	if err != nil {
		t.Fatal(err)
	}
	cp0, err := audit.OpenCheckpoint(empty, verifiersOf(s))
	if err != nil {
		t.Fatal(err)
	}
	st.setCheckpoints(cp0)
	appendN(t, st, testTree, 3)
	if cp := signCheckpoint(t, st, s, testTree); cp.Size != 3 {
		t.Fatalf("checkpoint size %d, want 3", cp.Size)
	}
}

func TestSignCheckpointRejects(t *testing.T) {
	s := newSigner(t, keyName)
	st := newMemStore()
	if _, err := audit.SignCheckpoint(t.Context(), st, s, testTree); !errs.Is(err, errs.Invalid) {
		t.Fatalf("empty tree: %v, want invalid", err)
	}
	if _, err := audit.SignCheckpoint(t.Context(), st, s, "no/slash"); !errs.Is(err, errs.Invalid) {
		t.Fatalf("bad tree name: %v, want invalid", err)
	}
	boom := errors.New("boom")
	for name, set := range map[string]func(*memStore){
		"size":   func(m *memStore) { m.sizeErr = boom },
		"hashes": func(m *memStore) { m.readErr = boom },
		"latest": func(m *memStore) { m.latestErr = boom },
		"save":   func(m *memStore) { m.saveErr = boom },
	} {
		t.Run(name, func(t *testing.T) {
			st := newMemStore()
			appendN(t, st, testTree, 3)
			set(st)
			if _, err := audit.SignCheckpoint(t.Context(), st, s, testTree); !errors.Is(err, boom) {
				t.Fatalf("SignCheckpoint = %v, want %v in the chain", err, boom)
			}
		})
	}
	t.Run("consistency proof read fails", func(t *testing.T) {
		st := newMemStore()
		appendN(t, st, testTree, 3)
		signCheckpoint(t, st, s, testTree)
		appendN(t, st, testTree, 3)
		// Index 2 is the hash of records 0..1: TreeHash(6) does not read it, the consistency
		// proof from 3 does.
		st.deleteHash(testTree, 2)
		_, err := audit.SignCheckpoint(t.Context(), st, s, testTree)
		if err == nil || errors.Is(err, audit.ErrTampered) || !errs.Is(err, errs.NotFound) {
			t.Fatalf("SignCheckpoint = %v, want the read error, not ErrTampered", err)
		}
	})
}

func TestOpenCheckpointRejects(t *testing.T) {
	s := newSigner(t, keyName)
	root := strings.Repeat("A", 43) + "="
	sign := func(t *testing.T, text string) []byte {
		t.Helper()
		msg, err := note.Sign(&note.Note{Text: text}, s)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	origin := keyName + "/" + testTree
	tests := []struct {
		name string
		note func(t *testing.T) []byte
	}{
		{"another key", func(t *testing.T) []byte {
			msg, err := note.Sign(&note.Note{Text: origin + "\n1\n" + root + "\n"}, newSigner(t, keyName))
			if err != nil {
				t.Fatal(err)
			}
			return msg
		}},
		{"edited body", func(t *testing.T) []byte {
			return []byte(strings.Replace(string(sign(t, origin+"\n1\n"+root+"\n")), "\n1\n", "\n9\n", 1))
		}},
		{"four lines", func(t *testing.T) []byte { return sign(t, origin+"\n1\n"+root+"\nextra\n") }},
		{"two lines", func(t *testing.T) []byte { return sign(t, origin+"\n1\n") }},
		{"origin without tree", func(t *testing.T) []byte { return sign(t, "nops\n1\n"+root+"\n") }},
		{"origin of another name", func(t *testing.T) []byte { return sign(t, "evil/"+testTree+"\n1\n"+root+"\n") }},
		{"origin with bad tree", func(t *testing.T) []byte { return sign(t, keyName+"/ten.x\n1\n"+root+"\n") }},
		{"size leading zero", func(t *testing.T) []byte { return sign(t, origin+"\n01\n"+root+"\n") }},
		{"size with sign", func(t *testing.T) []byte { return sign(t, origin+"\n+1\n"+root+"\n") }},
		{"size negative", func(t *testing.T) []byte { return sign(t, origin+"\n-1\n"+root+"\n") }},
		{"size empty", func(t *testing.T) []byte { return sign(t, origin+"\n\n"+root+"\n") }},
		{"size overflow", func(t *testing.T) []byte { return sign(t, origin+"\n99999999999999999999\n"+root+"\n") }},
		{"hash unpadded", func(t *testing.T) []byte { return sign(t, origin+"\n1\n"+strings.Repeat("A", 43)+"\n") }},
		{"hash non-canonical bits", func(t *testing.T) []byte { return sign(t, origin+"\n1\n"+strings.Repeat("A", 42)+"B=\n") }},
		{"hash too short", func(t *testing.T) []byte { return sign(t, origin+"\n1\nAAAA\n") }},
		{"too long", func(t *testing.T) []byte { return sign(t, origin+"\n1\n"+root+"\n"+strings.Repeat("x", 17<<10)+"\n") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := audit.OpenCheckpoint(tt.note(t), verifiersOf(s)); !errs.Is(err, errs.Invalid) {
				t.Fatalf("OpenCheckpoint = %v, want invalid", err)
			}
		})
	}
	t.Run("valid", func(t *testing.T) {
		cp, err := audit.OpenCheckpoint(sign(t, origin+"\n1\n"+root+"\n"), verifiersOf(s))
		if err != nil || cp.Size != 1 || cp.Tree != testTree {
			t.Fatalf("OpenCheckpoint = %+v, %v", cp, err)
		}
	})
}
