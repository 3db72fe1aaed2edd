package audit_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/nops-kernel/nops/internal/audit"
	"github.com/nops-kernel/nops/internal/errs"
)

func TestBundleRoundTrip(t *testing.T) {
	l := newProvedLog(t)
	b, err := audit.MakeBundle(t.Context(), l.st, testTree, 6, verifiersOf(l.signer))
	if err != nil {
		t.Fatal(err)
	}
	want := audit.Bundle{Seq: 6, Record: l.record, Proof: l.proof, Checkpoint: l.cp.Note}
	if diff := cmp.Diff(want, b); diff != "" {
		t.Fatalf("MakeBundle (-want +got):\n%s", diff)
	}
	data, err := audit.MarshalBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	order := []string{`"format": "nops-audit-inclusion-proof-v1"`, `"seq": 6`, `"record": "` + base64.StdEncoding.EncodeToString(l.record) + `"`, `"proof": [`, `"checkpoint": "` + keyName + "/"}
	last := -1
	for _, s := range order {
		i := strings.Index(text, s)
		if i <= last {
			t.Fatalf("bundle JSON lacks %s or has it out of order:\n%s", s, text)
		}
		last = i
	}
	if !strings.HasSuffix(text, "}\n") {
		t.Fatalf("bundle JSON does not end in a newline")
	}
	parsed, err := audit.ParseBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(b, parsed); diff != "" {
		t.Fatalf("ParseBundle (-want +got):\n%s", diff)
	}
	if err := audit.CheckBundle(parsed, l.signer.VerifierKey()); err != nil {
		t.Fatalf("CheckBundle: %v", err)
	}

	altered := parsed
	r := parse(t, altered.Record)
	r.Resource = "agents/agt_else"
	altered.Record = r.Canonical()
	if err := audit.CheckBundle(altered, l.signer.VerifierKey()); !errs.Is(err, errs.Invalid) {
		t.Fatalf("CheckBundle of an altered record = %v, want invalid", err)
	}
	if err := audit.CheckBundle(parsed, newSigner(t, keyName).VerifierKey()); !errs.Is(err, errs.Invalid) {
		t.Fatalf("CheckBundle with another key = %v, want invalid", err)
	}
}

func TestMakeBundleRejects(t *testing.T) {
	t.Run("no checkpoint", func(t *testing.T) {
		st := newMemStore()
		appendN(t, st, testTree, 3)
		_, err := audit.MakeBundle(t.Context(), st, testTree, 1, verifiersOf(newSigner(t, keyName)))
		if !errs.Is(err, errs.NotFound) {
			t.Fatalf("MakeBundle = %v, want not found", err)
		}
	})
	invalid := []struct {
		name  string
		tree  string
		seq   int64
		field string
	}{
		{"seq not covered", testTree, 11, "seq"},
		{"negative seq", testTree, -1, "seq"},
		{"bad tree", "a/b", 1, "tree"},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			l := newProvedLog(t)
			appendN(t, l.st, testTree, 2)
			_, err := audit.MakeBundle(t.Context(), l.st, tt.tree, tt.seq, verifiersOf(l.signer))
			requireField(t, err, tt.field)
		})
	}
	tampered := []struct {
		name   string
		tamper func(t *testing.T, l provedLog)
		other  bool
	}{
		{"record altered", func(t *testing.T, l provedLog) {
			r := parse(t, l.record)
			r.Decision.Allowed = !r.Decision.Allowed
			l.st.setRaw(testTree, 6, r.Canonical())
		}, false},
		{"record deleted", func(t *testing.T, l provedLog) { l.st.deleteRow(testTree, 6) }, false},
		{"record duplicated", func(t *testing.T, l provedLog) { l.st.insertRow(testTree, 6, l.record) }, false},
		{"checkpoint of another key", func(*testing.T, provedLog) {}, true},
		{"checkpoint of another tree", func(t *testing.T, l provedLog) {
			appendN(t, l.st, "ten_other", 11)
			cp := signCheckpoint(t, l.st, l.signer, "ten_other")
			cp.Tree = testTree
			l.st.setCheckpoints(cp)
		}, false},
	}
	for _, tt := range tampered {
		t.Run(tt.name, func(t *testing.T) {
			l := newProvedLog(t)
			tt.tamper(t, l)
			v := verifiersOf(l.signer)
			if tt.other {
				v = verifiersOf(newSigner(t, keyName))
			}
			_, err := audit.MakeBundle(t.Context(), l.st, testTree, 6, v)
			if !errors.Is(err, audit.ErrTampered) || !errs.Is(err, errs.Internal) {
				t.Fatalf("MakeBundle = %v, want internal wrapping ErrTampered", err)
			}
		})
	}
	boom := errors.New("boom")
	for name, set := range map[string]func(*memStore){
		"latest":  func(m *memStore) { m.latestErr = boom },
		"records": func(m *memStore) { m.recordsErr = boom },
		"hashes":  func(m *memStore) { m.readErr = boom },
	} {
		t.Run(name+" error", func(t *testing.T) {
			l := newProvedLog(t)
			set(l.st)
			if _, err := audit.MakeBundle(t.Context(), l.st, testTree, 6, verifiersOf(l.signer)); !errors.Is(err, boom) {
				t.Fatalf("MakeBundle = %v, want %v in the chain", err, boom)
			}
		})
	}
}

func TestMarshalBundleRejects(t *testing.T) {
	ok := audit.Bundle{Seq: 1, Record: []byte("{}"), Checkpoint: []byte("x\n")}
	tests := []struct {
		name   string
		mutate func(*audit.Bundle)
		field  string
	}{
		{"negative seq", func(b *audit.Bundle) { b.Seq = -1 }, "seq"},
		{"no record", func(b *audit.Bundle) { b.Record = nil }, "record"},
		{"record too long", func(b *audit.Bundle) { b.Record = make([]byte, audit.MaxCanonicalSize+1) }, "record"},
		{"proof too long", func(b *audit.Bundle) { b.Proof = make(tlog.RecordProof, 129) }, "proof"},
		{"no checkpoint", func(b *audit.Bundle) { b.Checkpoint = nil }, "checkpoint"},
		{"checkpoint too long", func(b *audit.Bundle) { b.Checkpoint = make([]byte, 17<<10) }, "checkpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := ok
			tt.mutate(&b)
			_, err := audit.MarshalBundle(b)
			requireField(t, err, tt.field)
		})
	}
}

func TestParseBundleRejects(t *testing.T) {
	hash := base64.StdEncoding.EncodeToString(make([]byte, 32))
	valid := `{"format":"nops-audit-inclusion-proof-v1","seq":3,"record":"e30=","proof":["` + hash + `"],"checkpoint":"x\n"}`
	if _, err := audit.ParseBundle([]byte(valid)); err != nil {
		t.Fatalf("valid bundle rejected: %v", err)
	}
	rep := func(old, new string) string {
		if !strings.Contains(valid, old) {
			panic(old)
		}
		return strings.Replace(valid, old, new, 1)
	}
	tests := []struct {
		name, in string
	}{
		{"empty", ""},
		{"array", "[]"},
		{"null", "null"},
		{"not closed", strings.TrimSuffix(valid, "}")},
		{"trailing data", valid + "{}"},
		{"trailing garbage", valid + "x"},
		{"unknown member", rep(`"seq":3`, `"seq":3,"extra":1`)},
		{"duplicate member", rep(`"seq":3`, `"seq":3,"seq":4`)},
		{"member name case", rep(`"seq"`, `"Seq"`)},
		{"missing format", rep(`"format":"nops-audit-inclusion-proof-v1",`, ``)},
		{"missing seq", rep(`"seq":3,`, ``)},
		{"missing record", rep(`"record":"e30=",`, ``)},
		{"missing proof", rep(`"proof":["`+hash+`"],`, ``)},
		{"missing checkpoint", rep(`,"checkpoint":"x\n"`, ``)},
		{"other format", rep(`inclusion-proof-v1`, `inclusion-proof-v2`)},
		{"seq float", rep(`"seq":3`, `"seq":3.5`)},
		{"seq string", rep(`"seq":3`, `"seq":"3"`)},
		{"seq negative", rep(`"seq":3`, `"seq":-3`)},
		{"seq null", rep(`"seq":3`, `"seq":null`)},
		{"record unpadded", rep(`"e30="`, `"e30"`)},
		{"record url alphabet", rep(`"e30="`, `"-_8="`)},
		{"record empty", rep(`"e30="`, `""`)},
		{"record number", rep(`"e30="`, `7`)},
		{"proof null", rep(`["`+hash+`"]`, `null`)},
		{"proof object", rep(`["`+hash+`"]`, `{}`)},
		{"proof hash short", rep(hash, "AAAA")},
		{"proof hash unpadded", rep(hash, strings.TrimSuffix(hash, "="))},
		{"proof hash non-canonical", rep(hash, hash[:42]+"B=")},
		{"proof too long", rep(`["`+hash+`"]`, `[`+strings.TrimSuffix(strings.Repeat(`"`+hash+`",`, 129), ",")+`]`)},
		{"checkpoint number", rep(`"x\n"`, `1`)},
		{"checkpoint empty", rep(`"x\n"`, `""`)},
		{"too large", rep(`"x\n"`, `"`+strings.Repeat("x", audit.MaxBundleSize)+`"`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := audit.ParseBundle([]byte(tt.in)); !errs.Is(err, errs.Invalid) {
				t.Fatalf("ParseBundle(%.80q) = %v, want invalid", tt.in, err)
			}
		})
	}
}
