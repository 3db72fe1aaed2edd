package apikey

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLoadOrCreatePepperCreatesThenLoads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "apikey-pepper.json")
	ps, err := LoadOrCreatePepper(path)
	if err != nil {
		t.Fatal(err)
	}
	cur := ps.Current()
	if cur.Version != "v1" || len(cur.Key) != generatedPepperLen || bytes.Equal(cur.Key, make([]byte, generatedPepperLen)) {
		t.Fatalf("generated pepper %s with %d bytes", cur, len(cur.Key))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("pepper file mode %04o, want 0600", perm)
	}
	// The file is the documented JSON.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Current string
		Peppers []struct {
			Version   string
			Key       string
			CreatedAt string `json:"created_at"`
		}
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Current != "v1" || len(doc.Peppers) != 1 || doc.Peppers[0].Version != "v1" || doc.Peppers[0].CreatedAt == "" ||
		doc.Peppers[0].Key != base64.StdEncoding.EncodeToString(cur.Key) {
		t.Fatalf("pepper file:\n%s", b)
	}
	// A second start reads the same pepper.
	again, err := LoadOrCreatePepper(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Current().Key, cur.Key) {
		t.Fatal("the second load generated another pepper")
	}
	assertNoTempFiles(t, dir)
}

func TestLoadOrCreatePepperConcurrentStartersAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pepper.json")
	const n = 8
	keys := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ps, err := LoadOrCreatePepper(path)
			keys[i], errs[i] = ps.Current().Key, err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("starter %d: %v", i, errs[i])
		}
		if !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("starters %d and 0 use different peppers", i)
		}
	}
	assertNoTempFiles(t, filepath.Dir(path))
}

func TestPepperFileTooOpenIsRefused(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o602, 0o620, 0o610, 0o777} {
		t.Run(mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pepper.json")
			if _, err := LoadOrCreatePepper(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreatePepper(path)
			if err == nil || !strings.Contains(err.Error(), "chmod 600") {
				t.Fatalf("LoadOrCreatePepper on a %s file = %v, want a refusal", mode, err)
			}
			if _, err := RotatePepperFile(path); err == nil {
				t.Fatal("RotatePepperFile used a file that is too open")
			}
		})
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		t.Run(mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pepper.json")
			if _, err := LoadOrCreatePepper(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadOrCreatePepper(path); err != nil {
				t.Fatalf("a %s file was refused: %v", mode, err)
			}
		})
	}
}

func TestPepperFileMalformedIsRefused(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	short := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 16))
	tests := map[string]string{
		"not JSON":           `current = v1`,
		"unknown field":      `{"current":"v1","peppers":[{"version":"v1","key":"` + key + `"}],"extra":1}`,
		"trailing data":      `{"current":"v1","peppers":[{"version":"v1","key":"` + key + `"}]} {}`,
		"no peppers":         `{"current":"v1","peppers":[]}`,
		"current missing":    `{"current":"v2","peppers":[{"version":"v1","key":"` + key + `"}]}`,
		"short key":          `{"current":"v1","peppers":[{"version":"v1","key":"` + short + `"}]}`,
		"bad base64":         `{"current":"v1","peppers":[{"version":"v1","key":"%%%"}]}`,
		"bad version":        `{"current":"v 1","peppers":[{"version":"v 1","key":"` + key + `"}]}`,
		"version twice":      `{"current":"v1","peppers":[{"version":"v1","key":"` + key + `"},{"version":"v1","key":"` + key + `"}]}`,
		"larger than 64 KiB": `{"current":"v1","peppers":[{"version":"v1","key":"` + key + `"}]}` + strings.Repeat(" ", maxPepperFile),
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "pepper.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreatePepper(path)
			if err == nil {
				t.Fatal("a malformed pepper file was accepted")
			}
			if strings.Contains(err.Error(), key) {
				t.Fatalf("error quotes the key: %v", err)
			}
			// It was not replaced by a generated one either.
			if b, _ := os.ReadFile(path); string(b) != content {
				t.Fatal("the malformed file was overwritten")
			}
		})
	}
}

func TestPepperFileNotRegularOrNoDirectory(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreatePepper(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("a directory as pepper file = %v", err)
	}
	if _, err := LoadOrCreatePepper(filepath.Join(dir, "missing", "pepper.json")); err == nil {
		t.Fatal("a pepper file in a missing directory was created")
	}
}

func TestPepperFileSymlinkIsFollowed(t *testing.T) {
	// Mounted secrets (Kubernetes) are symlinks to 0400/0600 files: the target's mode counts.
	dir := t.TempDir()
	target := filepath.Join(dir, "target.json")
	want, err := LoadOrCreatePepper(target)
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	got, err := LoadOrCreatePepper(link)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Current().Key, want.Current().Key) {
		t.Fatal("the symlink gave another pepper")
	}
}

func TestRotatePepperFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pepper.json")
	first, err := LoadOrCreatePepper(path)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := RotatePepperFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"v1", "v2"}, rotated.Versions()); diff != "" {
		t.Fatal(diff)
	}
	if rotated.Current().Version != "v2" || bytes.Equal(rotated.Current().Key, first.Current().Key) {
		t.Fatalf("current after rotation = %s", rotated.Current())
	}
	if old, ok := rotated.Get("v1"); !ok || !bytes.Equal(old.Key, first.Current().Key) {
		t.Fatal("the old pepper was not kept")
	}
	loaded, err := LoadOrCreatePepper(path)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Current().Version != "v2" || !bytes.Equal(loaded.Current().Key, rotated.Current().Key) {
		t.Fatal("the rotated file does not load as rotated")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("rotated file mode %04o", perm)
	}
	assertNoTempFiles(t, dir)

	// Versions that are not v<n> are kept and skipped when numbering.
	custom := filepath.Join(dir, "custom.json")
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))
	doc := `{"current":"2026-q1","peppers":[{"version":"2026-q1","key":"` + key + `"},{"version":"v7","key":"` + key + `"}]}`
	if err := os.WriteFile(custom, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	ps, err := RotatePepperFile(custom)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"2026-q1", "v7", "v8"}, ps.Versions()); diff != "" || ps.Current().Version != "v8" {
		t.Fatalf("versions %v current %s", ps.Versions(), ps.Current())
	}

	if _, err := RotatePepperFile(filepath.Join(dir, "absent.json")); err == nil {
		t.Fatal("RotatePepperFile created a file")
	}
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Fatalf("temporary file %s left in %s", e.Name(), dir)
		}
	}
}
