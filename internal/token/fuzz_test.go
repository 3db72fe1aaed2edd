package token_test

import (
	"testing"

	"github.com/nops-kernel/nops/internal/token"
)

// FuzzVerify feeds arbitrary strings to Verify: it must never panic, must reject every input that
// is not exactly a token this service issued with the one uniform error, and must accept those it
// issued. EdDSA and HMAC signatures have a single valid encoding, so no mutation of an issued token
// may verify. The seed corpus is in testdata/fuzz/FuzzVerify; the issued tokens are added here
// because their key is generated per run.
func FuzzVerify(f *testing.F) {
	clk := newClock()
	store := newFakeStore()
	ed := newService(f, store, clk, token.AlgEdDSA)
	// A stored HS256 key: tokens of both algorithms verify with ed.
	hs := newService(f, store, clk, token.AlgHS256)
	if err := ed.Reload(f.Context()); err != nil {
		f.Fatal(err)
	}
	issued := map[string]bool{}
	for _, svc := range []*token.Service{ed, hs} {
		for _, c := range []token.Claims{someClaims, {Subject: "usr_2"}} {
			raw := issue(f, svc, c)
			issued[raw] = true
			f.Add(raw)
		}
	}

	f.Fuzz(func(t *testing.T, raw string) {
		p, err := ed.Verify(t.Context(), raw)
		if !issued[raw] {
			requireRejected(t, err)
			return
		}
		if err != nil || p.Subject == "" {
			t.Fatalf("issued token rejected: %v", err)
		}
	})
}
