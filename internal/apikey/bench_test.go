package apikey

import (
	"testing"

	"golang.org/x/crypto/blake2b"
)

// BenchmarkVerify measures a successful Verify against the in-memory store, usage recorded;
// BenchmarkBlake2bOnly is the same-run baseline: one keyed BLAKE2b-256 of the same input. Verify
// computes two digests, so a ratio near 2 plus the store lookup is expected. Not asserted.
//
//	go test -run '^$' -bench 'Verify|Blake2bOnly' -benchmem ./internal/apikey
func BenchmarkVerify(b *testing.B) {
	h := newHarness(b)
	rec := NewUsageRecorder(h.store, UsageOptions{})
	svc := h.service(b, peppersOf(b, testPepper(b, "v1")), Options{Usage: rec})
	_, raw := h.create(b, CreateInput{})
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := svc.Verify(ctx, raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBlake2bOnly(b *testing.B) {
	key := testPepper(b, "v1").Key
	input := []byte(goodID + "_" + goodSecret)
	b.ReportAllocs()
	for b.Loop() {
		h, err := blake2b.New256(key)
		if err != nil {
			b.Fatal(err)
		}
		h.Write(input)
		_ = h.Sum(nil)
	}
}
