package audit_test

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/note"

	"github.com/nops-kernel/nops/internal/audit"
)

// FuzzParseCanonical feeds arbitrary bytes to ParseCanonical, which reads records from a
// database an attacker may have written and from auditors' bundles. It must never panic, and
// whatever it accepts must be a valid record whose canonical encoding is exactly the input, so
// no two byte strings parse to the same record. The seed corpus is in
// testdata/fuzz/FuzzParseCanonical.
func FuzzParseCanonical(f *testing.F) {
	f.Add([]byte(goldenCanonical))
	for i := range 3 {
		f.Add(sampleRecord(testTree, i).Canonical())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := audit.ParseCanonical(b)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted an invalid record: %v", err)
		}
		if got := r.Canonical(); !bytes.Equal(got, b) {
			t.Fatalf("accepted a non-canonical encoding:\n in  %q\n out %q", b, got)
		}
	})
}

// FuzzParseBundle feeds arbitrary bytes to ParseBundle, which reads files handed to an auditor.
// It must never panic; whatever it accepts must marshal and parse back to the same bundle, and
// checking it must not panic either. The seed corpus is in testdata/fuzz/FuzzParseBundle; a
// bundle of a freshly signed log is added here.
func FuzzParseBundle(f *testing.F) {
	st := newMemStore()
	appendN(f, st, testTree, 11)
	s := newSigner(f, keyName)
	signCheckpoint(f, st, s, testTree)
	b, err := audit.MakeBundle(f.Context(), st, testTree, 6, note.VerifierList(s.Verifier()))
	if err != nil {
		f.Fatal(err)
	}
	data, err := audit.MarshalBundle(b)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	vkey := s.VerifierKey()
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := audit.ParseBundle(data)
		if err != nil {
			return
		}
		out, err := audit.MarshalBundle(b)
		if err != nil {
			t.Fatalf("cannot marshal a parsed bundle: %v", err)
		}
		again, err := audit.ParseBundle(out)
		if err != nil {
			t.Fatalf("cannot parse a marshalled bundle: %v\n%s", err, out)
		}
		if diff := cmp.Diff(b, again); diff != "" {
			t.Fatalf("round trip changed the bundle (-first +second):\n%s", diff)
		}
		_ = audit.CheckBundle(b, vkey)
	})
}
