package audit_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/audit"
)

const (
	testTree = "ten_01JTESTTENANT"
	keyName  = "nops-test"
)

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC)

// sampleRecord returns a valid record; i varies its content.
func sampleRecord(tree string, i int) audit.Record {
	return audit.Record{
		Tree: tree,
		Time: t0.Add(time.Duration(i) * time.Second),
		Actor: audit.Actor{
			Principal: "usr_01JADMIN",
			IP:        "192.0.2.7",
			RequestID: fmt.Sprintf("req-%d", i),
		},
		Action:        "agent.create",
		Resource:      fmt.Sprintf("agents/agt_%04d", i),
		Decision:      audit.Decision{Allowed: i%5 != 0, Reason: "role ADMIN"},
		RequestDigest: audit.DigestRequest(fmt.Appendf(nil, `{"name":"a%d"}`, i)),
	}
}

func newSigner(t testing.TB, name string) *audit.Signer {
	t.Helper()
	skey, _, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := audit.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func verifiersOf(s *audit.Signer) note.Verifiers { return note.VerifierList(s.Verifier()) }

// appendN appends n sample records to tree and returns them as stored.
func appendN(t testing.TB, st audit.Appender, tree string, n int) []audit.Record {
	t.Helper()
	out := make([]audit.Record, 0, n)
	for i := range n {
		r, err := audit.Append(context.Background(), st, sampleRecord(tree, i))
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		out = append(out, r)
	}
	return out
}

func signCheckpoint(t testing.TB, st audit.Store, s *audit.Signer, tree string) audit.Checkpoint {
	t.Helper()
	cp, err := audit.SignCheckpoint(context.Background(), st, s, tree)
	if err != nil {
		t.Fatalf("sign checkpoint: %v", err)
	}
	return cp
}

func parse(t testing.TB, b []byte) audit.Record {
	t.Helper()
	r, err := audit.ParseCanonical(b)
	if err != nil {
		t.Fatalf("parse %s: %v", b, err)
	}
	return r
}

// rewriteSuffix is the strongest attacker: it changes every record of tree from seq from on with
// mutate and recomputes their leaf and interior hashes consistently, as Append would have.
func rewriteSuffix(t testing.TB, m *memStore, tree string, from int64, mutate func(*audit.Record)) {
	t.Helper()
	size, err := m.TreeSize(context.Background(), tree)
	if err != nil {
		t.Fatal(err)
	}
	for seq := from; seq < size; seq++ {
		r := parse(t, m.rawRecord(tree, seq))
		mutate(&r)
		canonical := r.Canonical()
		hashes, err := tlog.StoredHashes(seq, canonical, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			return m.ReadHashes(context.Background(), tree, idx)
		}))
		if err != nil {
			t.Fatal(err)
		}
		m.setRaw(tree, seq, canonical)
		base := tlog.StoredHashIndex(0, seq)
		for i, h := range hashes {
			m.putHash(tree, base+int64(i), h)
		}
	}
}
