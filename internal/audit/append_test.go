package audit_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/errs"
)

// rfc6962Root computes the Merkle tree hash of RFC 6962 §2.1 directly from the leaves, as an
// independent check of what Append stores.
func rfc6962Root(leaves [][]byte) [32]byte {
	if len(leaves) == 1 {
		return sha256.Sum256(append([]byte{0}, leaves[0]...))
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	l, r := rfc6962Root(leaves[:k]), rfc6962Root(leaves[k:])
	return sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...))
}

func TestAppendBuildsRFC6962Tree(t *testing.T) {
	ctx := t.Context()
	st := newMemStore()
	var leaves [][]byte
	for i := range 13 {
		in := sampleRecord(testTree, i)
		in.Seq = 999 // ignored
		in.Time = in.Time.In(time.FixedZone("X", -7*3600))
		got, err := audit.Append(ctx, st, in)
		if err != nil {
			t.Fatal(err)
		}
		if got.Seq != int64(i) {
			t.Fatalf("record %d got seq %d", i, got.Seq)
		}
		if got.Time.Location() != time.UTC || !got.Time.Equal(in.Time) {
			t.Fatalf("record %d time %v, want %v in UTC", i, got.Time, in.Time)
		}
		raw := st.rawRecord(testTree, int64(i))
		if string(raw) != string(got.Canonical()) {
			t.Fatalf("stored bytes differ from the returned record's canonical form")
		}
		leaves = append(leaves, raw)
		size, err := st.TreeSize(ctx, testTree)
		if err != nil || size != int64(i+1) {
			t.Fatalf("tree size %d, %v; want %d", size, err, i+1)
		}
		root, err := tlog.TreeHash(size, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			return st.ReadHashes(ctx, testTree, idx)
		}))
		if err != nil {
			t.Fatal(err)
		}
		if want := rfc6962Root(leaves); root != tlog.Hash(want) {
			t.Fatalf("size %d: root %x, want %x", size, root, want)
		}
	}
	if n := len(st.hashes[testTree]); int64(n) != tlog.StoredHashCount(13) {
		t.Fatalf("%d stored hashes, want %d", n, tlog.StoredHashCount(13))
	}
}

func TestAppendTreesAreIndependent(t *testing.T) {
	st := newMemStore()
	appendN(t, st, "ten_a", 3)
	r, err := audit.Append(t.Context(), st, sampleRecord(audit.GlobalTree, 0))
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != 0 {
		t.Fatalf("first record of the global tree got seq %d", r.Seq)
	}
}

func TestAppendRejectsInvalidRecordBeforeTouchingStore(t *testing.T) {
	st := newMemStore()
	st.sizeErr = errors.New("store must not be called")
	r := sampleRecord(testTree, 0)
	r.Action = ""
	if _, err := audit.Append(t.Context(), st, r); !errs.Is(err, errs.Invalid) {
		t.Fatalf("Append = %v, want invalid", err)
	}
}

func TestAppendStoreErrors(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		set  func(*memStore)
	}{
		{"size", func(m *memStore) { m.sizeErr = boom }},
		{"read hashes", func(m *memStore) { m.readErr = boom }},
		{"append", func(m *memStore) { m.appendErr = boom }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemStore()
			appendN(t, st, testTree, 1)
			tt.set(st)
			if _, err := audit.Append(t.Context(), st, sampleRecord(testTree, 1)); !errors.Is(err, boom) {
				t.Fatalf("Append = %v, want %v in the chain", err, boom)
			}
		})
	}
}

func TestAppendNegativeSizeIsInternal(t *testing.T) {
	st := newMemStore()
	st.setHead(testTree, -1)
	if _, err := audit.Append(t.Context(), st, sampleRecord(testTree, 0)); !errs.Is(err, errs.Internal) {
		t.Fatalf("Append = %v, want internal", err)
	}
}

// staleSize reports a fixed tree size: what an unserialised concurrent append sees.
type staleSize struct {
	*memStore
	size int64
}

func (s staleSize) TreeSize(context.Context, string) (int64, error) { return s.size, nil }

func TestAppendUnserialisedConflicts(t *testing.T) {
	st := newMemStore()
	appendN(t, st, testTree, 2)
	_, err := audit.Append(t.Context(), staleSize{st, 1}, sampleRecord(testTree, 9))
	if !errs.Is(err, errs.Conflict) {
		t.Fatalf("Append with a stale size = %v, want conflict", err)
	}
}
