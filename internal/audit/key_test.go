package audit_test

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/nops-kernel/nops/internal/audit"
)

func TestNewSignerDerivesTheVerifierKey(t *testing.T) {
	// Key data is base64, whose alphabet has '+', the separator of the key's fields: go on
	// until a key with '+' in its data has been seen (half of them have one).
	sawPlus := false
	for i := 0; i < 200 && !sawPlus; i++ {
		skey, vkey, err := note.GenerateKey(rand.Reader, "nops")
		if err != nil {
			t.Fatal(err)
		}
		sawPlus = strings.Count(skey, "+") > 4
		s, err := audit.NewSigner(skey)
		if err != nil {
			t.Fatalf("NewSigner(%s): %v", skey, err)
		}
		if s.VerifierKey() != vkey {
			t.Fatalf("VerifierKey = %s, want %s", s.VerifierKey(), vkey)
		}
	}
	if !sawPlus {
		t.Fatal("no key with '+' in its data was generated")
	}
	s := newSigner(t, "nops.example.com/audit")
	if s.Name() != "nops.example.com/audit" || s.KeyHash() != s.Verifier().KeyHash() {
		t.Fatalf("name %s hash %08x verifier hash %08x", s.Name(), s.KeyHash(), s.Verifier().KeyHash())
	}
	msg, err := note.Sign(&note.Note{Text: "hello\n"}, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(msg, verifiersOf(s)); err != nil {
		t.Fatalf("note signed by the Signer does not open with its verifier: %v", err)
	}
}

func TestNewSignerRejects(t *testing.T) {
	bang, _, err := note.GenerateKey(rand.Reader, "bad!name")
	if err != nil {
		t.Fatal(err)
	}
	good, _, err := note.GenerateKey(rand.Reader, "nops")
	if err != nil {
		t.Fatal(err)
	}
	for name, skey := range map[string]string{
		"empty":            "",
		"verifier key":     strings.TrimPrefix(good, "PRIVATE+KEY+"),
		"wrong hash":       good[:len("PRIVATE+KEY+nops+")] + "00000000" + good[len("PRIVATE+KEY+nops+00000000"):],
		"name we disallow": bang,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := audit.NewSigner(skey); err == nil {
				t.Fatal("NewSigner accepted it")
			}
		})
	}
}

func TestValidKeyName(t *testing.T) {
	for name, want := range map[string]bool{
		"nops-kernel":            true,
		"nops.example.com/audit": true,
		"host:8443":              true,
		"":                       false,
		"/lead":                  false,
		"trail/":                 false,
		"sp ace":                 false,
		"plus+":                  false,
		strings.Repeat("n", 129): false,
	} {
		if got := audit.ValidKeyName(name); got != want {
			t.Errorf("ValidKeyName(%q) = %v, want %v", name, got, want)
		}
	}
}

func perm(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestLoadOrCreateSignerCreatesThenLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "keys")
	path := filepath.Join(dir, "audit.key")
	s, vkey, err := audit.LoadOrCreateSigner(path, keyName)
	if err != nil {
		t.Fatal(err)
	}
	if p := perm(t, path); p != 0o600 {
		t.Fatalf("key file permissions %04o, want 0600", p)
	}
	if p := perm(t, dir); p != 0o700 {
		t.Fatalf("key directory permissions %04o, want 0700", p)
	}
	if vkey != s.VerifierKey() || s.Name() != keyName {
		t.Fatalf("vkey %s, signer %s %s", vkey, s.Name(), s.VerifierKey())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "PRIVATE+KEY+"+keyName+"+") {
		t.Fatalf("key file is not in note's signer key format")
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("key directory holds %v (%v), want only the key", entries, err)
	}
	_, again, err := audit.LoadOrCreateSigner(path, keyName)
	if err != nil {
		t.Fatal(err)
	}
	if again != vkey {
		t.Fatal("second load returned another key")
	}
}

func TestLoadOrCreateSignerConcurrentCreatorsAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.key")
	const n = 8
	vkeys := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, vkeys[i], errs[i] = audit.LoadOrCreateSigner(path, keyName) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("creator %d: %v", i, errs[i])
		}
		if vkeys[i] != vkeys[0] {
			t.Fatalf("creators got different keys: %s and %s", vkeys[0], vkeys[i])
		}
	}
}

func TestLoadOrCreateSignerRefuses(t *testing.T) {
	writeKey := func(t *testing.T, dir string, mode os.FileMode, content string) string {
		t.Helper()
		path := filepath.Join(dir, "audit.key")
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	skey, _, err := note.GenerateKey(rand.Reader, keyName)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := note.GenerateKey(rand.Reader, "other-name")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) string
		want  string
	}{
		{"world-readable file", func(t *testing.T) string { return writeKey(t, t.TempDir(), 0o644, skey) }, "permissions 0644"},
		{"group-readable file", func(t *testing.T) string { return writeKey(t, t.TempDir(), 0o640, skey) }, "permissions 0640"},
		{"group-writable directory", func(t *testing.T) string {
			dir := t.TempDir()
			if err := os.Chmod(dir, 0o770); err != nil {
				t.Fatal(err)
			}
			return writeKey(t, dir, 0o600, skey)
		}, "permissions 0770"},
		{"another key name", func(t *testing.T) string { return writeKey(t, t.TempDir(), 0o600, other) }, `named "other-name"`},
		{"garbage", func(t *testing.T) string { return writeKey(t, t.TempDir(), 0o600, "not a key") }, "parse checkpoint signer key"},
		{"too large", func(t *testing.T) string {
			return writeKey(t, t.TempDir(), 0o600, skey+strings.Repeat("\n", 5000))
		}, "larger than"},
		{"a directory", func(t *testing.T) string {
			path := filepath.Join(t.TempDir(), "audit.key")
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
			return path
		}, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.setup(t)
			_, _, err := audit.LoadOrCreateSigner(path, keyName)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadOrCreateSigner = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	t.Run("directory cannot be created", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := audit.LoadOrCreateSigner(filepath.Join(file, "keys", "audit.key"), keyName); err == nil {
			t.Fatal("LoadOrCreateSigner succeeded under a regular file")
		}
	})
	t.Run("invalid name", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.key")
		if _, _, err := audit.LoadOrCreateSigner(path, "bad name"); err == nil {
			t.Fatal("accepted a name with a space")
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Fatalf("a key file was created for an invalid name: %v", err)
		}
	})
	t.Run("loaded key works", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := writeKey(t, dir, 0o600, skey+"\n")
		s, _, err := audit.LoadOrCreateSigner(path, keyName)
		if err != nil {
			t.Fatalf("a 0600 key in a 0755 directory was refused: %v", err)
		}
		want, err := note.NewSigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		if s.KeyHash() != want.KeyHash() {
			t.Fatal("loaded another key than the file's")
		}
	})
}
