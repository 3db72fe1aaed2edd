package sealbox_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/nops-kernel/nops/internal/sealbox"
)

// FuzzOpen feeds Open arbitrary stored bytes (a corrupted or forged database row): it never
// panics, fails with ErrOpen only, and opens nothing but what was sealed for the same associated
// data. Seeds: testdata/fuzz/FuzzOpen and the values below.
func FuzzOpen(f *testing.F) {
	b := mustBox(f, key("k2", 2), key("k1", 1))
	good, err := b.Seal([]byte("secret"), []byte("rk_1"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, []byte("rk_1"))
	f.Add(good, []byte("rk_2"))
	f.Add([]byte{1, 2, 'k', '1'}, []byte(""))
	f.Add([]byte{1, 255}, []byte("x"))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, sealed, aad []byte) {
		got, err := b.Open(sealed, aad)
		if err != nil {
			if !errors.Is(err, sealbox.ErrOpen) || got != nil {
				t.Fatalf("Open = %q, %v", got, err)
			}
			return
		}
		// Only a genuine seal opens (forging GCM is not something a fuzzer does), and every seal
		// of this box was made for "rk_1". (The fuzzing workers each compute their own seed seal,
		// with another random nonce, so the bytes are not compared.)
		if !bytes.Equal(aad, []byte("rk_1")) || string(got) != "secret" {
			t.Fatalf("Open(%x, %q) = %q: opened a value that was not sealed for it", sealed, aad, got)
		}
	})
}
