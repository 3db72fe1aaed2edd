package sealbox_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nops-kernel/nops/internal/sealbox"
)

func key(version string, fill byte) sealbox.Key {
	return sealbox.Key{Version: version, Secret: bytes.Repeat([]byte{fill}, sealbox.KeyLen)}
}

func mustBox(t testing.TB, current sealbox.Key, older ...sealbox.Key) *sealbox.Box {
	t.Helper()
	b, err := sealbox.New(current, older...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOpenRefuses covers what must never open: each one is ErrOpen, whatever the cause.
func TestOpenRefuses(t *testing.T) {
	b := mustBox(t, key("k1", 1))
	sealed, err := b.Seal([]byte("secret"), []byte("rk_1"))
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		c := bytes.Clone(sealed)
		c[i] ^= 0x01
		return c
	}
	other := mustBox(t, key("k1", 2)) // same version, another key
	tests := []struct {
		name   string
		box    *sealbox.Box
		sealed []byte
		aad    string
	}{
		{"other associated data (row swap)", b, sealed, "rk_2"},
		{"empty associated data", b, sealed, ""},
		{"flipped format byte", b, flip(0), "rk_1"},
		{"flipped version length", b, flip(1), "rk_1"},
		{"flipped version", b, flip(2), "rk_1"},
		{"flipped nonce", b, flip(5), "rk_1"},
		{"flipped ciphertext", b, flip(len(sealed) - 17), "rk_1"},
		{"flipped tag", b, flip(len(sealed) - 1), "rk_1"},
		{"truncated", b, sealed[:len(sealed)-1], "rk_1"},
		{"header only", b, sealed[:4], "rk_1"},
		{"empty", b, nil, "rk_1"},
		{"unknown kek version", mustBox(t, key("k2", 1)), sealed, "rk_1"},
		{"same version, other kek", other, sealed, "rk_1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.box.Open(tt.sealed, []byte(tt.aad))
			if !errors.Is(err, sealbox.ErrOpen) || got != nil {
				t.Fatalf("Open = %q, %v; want nil, ErrOpen", got, err)
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	tests := []struct {
		name    string
		current sealbox.Key
		older   []sealbox.Key
	}{
		{"short key", sealbox.Key{Version: "k1", Secret: make([]byte, 16)}, nil},
		{"long key", sealbox.Key{Version: "k1", Secret: make([]byte, 33)}, nil},
		{"empty version", sealbox.Key{Secret: make([]byte, 32)}, nil},
		{"version with a space", sealbox.Key{Version: "k 1", Secret: make([]byte, 32)}, nil},
		{"version too long", sealbox.Key{Version: strings.Repeat("k", 33), Secret: make([]byte, 32)}, nil},
		{"duplicate version", key("k1", 1), []sealbox.Key{key("k1", 2)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := sealbox.New(tt.current, tt.older...); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}

func TestSealOpenAcrossRotation(t *testing.T) {
	old := mustBox(t, key("k1", 1))
	sealedOld, err := old.Seal([]byte("first"), []byte("id"))
	if err != nil {
		t.Fatal(err)
	}
	rotated := mustBox(t, key("k2", 2), key("k1", 1))
	sealedNew, err := rotated.Seal([]byte("second"), []byte("id"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sealed  []byte
		want    string
		version string
	}{{sealedOld, "first", "k1"}, {sealedNew, "second", "k2"}} {
		got, err := rotated.Open(tc.sealed, []byte("id"))
		if err != nil || string(got) != tc.want {
			t.Fatalf("Open = %q, %v; want %q", got, err, tc.want)
		}
		if v, ok := sealbox.Version(tc.sealed); !ok || v != tc.version {
			t.Fatalf("Version = %q, %v; want %q", v, ok, tc.version)
		}
	}
	// The old box cannot open what the new KEK sealed.
	if _, err := old.Open(sealedNew, []byte("id")); !errors.Is(err, sealbox.ErrOpen) {
		t.Fatalf("old box opened a value sealed under k2: %v", err)
	}
	// Two seals of one plaintext differ (random nonces).
	again, err := rotated.Seal([]byte("second"), []byte("id"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(again, sealedNew) {
		t.Fatal("two seals of the same plaintext are equal")
	}
}

func TestKeyNeverPrinted(t *testing.T) {
	k := sealbox.Key{Version: "k1", Secret: []byte(strings.Repeat("S", 32))}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("kek", "k", k)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%+v %#v %x %s", k, k, k, k), logs.String(), mustBox(t, k).String()} {
		// Long runs: a log line's timestamp may contain "5353" by chance.
		if strings.Contains(s, strings.Repeat("S", 16)) || strings.Contains(s, strings.Repeat("53", 16)) || strings.Contains(s, "U1NTU1NTU1NT") {
			t.Fatalf("key secret printed: %s", s)
		}
	}
}

func TestLoadOrCreateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek.json")
	b, err := sealbox.LoadOrCreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %04o, want 0600", fi.Mode().Perm())
	}
	sealed, err := b.Seal([]byte("x"), []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	// A restart reads the same KEK.
	again, err := sealbox.LoadOrCreateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.Open(sealed, []byte("a")); err != nil || string(got) != "x" {
		t.Fatalf("reloaded box: Open = %q, %v", got, err)
	}
	// Rotation keeps the old KEK for opening and seals with the new one.
	rotated, err := sealbox.RotateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Current() != "k2" || strings.Join(rotated.Versions(), ",") != "k1,k2" {
		t.Fatalf("after rotation: %s", rotated)
	}
	if got, err := rotated.Open(sealed, []byte("a")); err != nil || string(got) != "x" {
		t.Fatalf("rotated box: Open = %q, %v", got, err)
	}
	reloaded, err := sealbox.LoadOrCreateFile(path)
	if err != nil || reloaded.Current() != "k2" {
		t.Fatalf("reload after rotation: %v, %v", reloaded, err)
	}
}

func TestLoadOrCreateFileConcurrentStartersAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek.json")
	const n = 8
	boxes := make([]*sealbox.Box, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { boxes[i], errs[i] = sealbox.LoadOrCreateFile(path) })
	}
	wg.Wait()
	sealed, err := boxes[0].Seal([]byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("starter %d: %v", i, errs[i])
		}
		if _, err := boxes[i].Open(sealed, nil); err != nil {
			t.Fatalf("starter %d holds another KEK", i)
		}
	}
}

func TestFileRefused(t *testing.T) {
	valid := `{"current":"k1","keys":[{"version":"k1","key":"` + strings.Repeat("A", 43) + `=","created_at":"2026-01-02T03:04:05Z"}]}`
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"group readable", valid, 0o640, "must grant nothing"},
		{"world readable", valid, 0o604, "must grant nothing"},
		{"unknown field", `{"current":"k1","keys":[],"extra":1}`, 0o600, "unknown field"},
		{"no keys", `{"current":"k1","keys":[]}`, 0o600, "no key"},
		{"current missing", strings.Replace(valid, `"current":"k1"`, `"current":"k9"`, 1), 0o600, "not among"},
		{"short key", `{"current":"k1","keys":[{"version":"k1","key":"AAAA","created_at":"2026-01-02T03:04:05Z"}]}`, 0o600, "want 32"},
		{"trailing data", valid + "{}", 0o600, "after the JSON"},
		{"not json", "kek", 0o600, "decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kek.json")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := sealbox.LoadOrCreateFile(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadOrCreateFile error %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(fmt.Sprint(err), strings.Repeat("A", 20)) {
				t.Fatalf("error quotes the key: %v", err)
			}
		})
	}
	// A directory is not a key file.
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := sealbox.LoadOrCreateFile(dir); err == nil {
		t.Fatal("LoadOrCreateFile accepted a directory")
	}
}
