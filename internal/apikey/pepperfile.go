package apikey

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nops-kernel/nops/internal/keyfile"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	// pepperFileMode is the mode of a generated pepper file. A file granting anything to group or
	// others is refused on load: anyone who reads it can test guesses against a database dump.
	pepperFileMode = 0o600
	// maxPepperFile bounds what is read from a pepper file.
	maxPepperFile = 64 << 10
	// generatedPepperLen is the size of generated peppers, in bytes.
	generatedPepperLen = 32
)

// pepperFile is the JSON document of a pepper file; see the package documentation.
type pepperFile struct {
	Current string        `json:"current"`
	Peppers []pepperEntry `json:"peppers"`
}

type pepperEntry struct {
	Version   string    `json:"version"`
	Key       []byte    `json:"key"` // standard base64 in JSON
	CreatedAt time.Time `json:"created_at"`
}

// LoadOrCreatePepper reads the pepper file at path, or, when there is none, generates one with a
// single 32-byte pepper "v1" and writes it with mode 0600. The file is written under a temporary
// name and linked into place, so a concurrent starter never sees a partial file and exactly one
// generated file wins; the loser reads the winner's. A file whose mode grants any permission to
// group or others is refused (POSIX permissions; the kernel runs on Linux), as is any file that is
// not exactly the documented format. The directory must exist.
func LoadOrCreatePepper(path string) (Peppers, error) {
	ps, err := loadPepperFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return ps, err
	}
	key, err := generatePepperKey()
	if err != nil {
		return Peppers{}, err
	}
	pf := pepperFile{Current: "v1", Peppers: []pepperEntry{{Version: "v1", Key: key, CreatedAt: nowSecond()}}}
	if err := writePepperFile(path, pf, false); err != nil && !errors.Is(err, fs.ErrExist) {
		return Peppers{}, err
	}
	return loadPepperFile(path)
}

// RotatePepperFile adds a generated pepper to the file at path and makes it current in one step
// (AddPepper then PromotePepper); the older ones stay for verification. Its version is "v<n+1>",
// n being the largest number among the versions of the form "v<n>" already there. The file is
// replaced atomically. With several replicas use the staged AddPepper, PromotePepper and
// RetirePepper instead (docs/operations.md, "Rotating keys"): a replica that has not reloaded the
// file yet cannot verify keys hashed with the new pepper. It returns the new set.
func RotatePepperFile(path string) (Peppers, error) {
	err := updatePepperFile(path, func(pf *pepperFile) error {
		key, err := generatePepperKey()
		if err != nil {
			return err
		}
		version := nextPepperVersion(pf)
		pf.Peppers = append(pf.Peppers, pepperEntry{Version: version, Key: key, CreatedAt: nowSecond()})
		pf.Current = version
		return nil
	})
	if err != nil {
		return Peppers{}, err
	}
	return loadPepperFile(path)
}

// nextPepperVersion returns "v<n+1>", n being the largest number among versions "v<n>" of pf.
func nextPepperVersion(pf *pepperFile) string {
	n := 0
	for _, e := range pf.Peppers {
		if num, ok := strings.CutPrefix(e.Version, "v"); ok {
			if v, err := strconv.Atoi(num); err == nil && v > n {
				n = v
			}
		}
	}
	return "v" + strconv.Itoa(n+1)
}

func loadPepperFile(path string) (Peppers, error) {
	_, pf, err := readPepperFile(path)
	if err != nil {
		return Peppers{}, err
	}
	ps, err := pf.peppers()
	if err != nil {
		return Peppers{}, fmt.Errorf("pepper file %s: %w", path, err)
	}
	return ps, nil
}

// readPepperFile checks the permissions of the opened file (not of the path, which could be
// swapped between a check and the open) and decodes it strictly. It returns the file's bytes with
// the decoded document.
func readPepperFile(path string) ([]byte, pepperFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, pepperFile{}, fmt.Errorf("open pepper file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, pepperFile{}, fmt.Errorf("stat pepper file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, pepperFile{}, fmt.Errorf("pepper file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, pepperFile{}, fmt.Errorf("pepper file %s has mode %04o: it must grant nothing to group or others (chmod 600)", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPepperFile+1))
	if err != nil {
		return nil, pepperFile{}, fmt.Errorf("read pepper file %s: %w", path, err)
	}
	if len(b) > maxPepperFile {
		return nil, pepperFile{}, fmt.Errorf("pepper file %s is larger than %d bytes", path, maxPepperFile)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var pf pepperFile
	if err := dec.Decode(&pf); err != nil {
		// json errors name offsets and types, never the content, so the key cannot leak here.
		return nil, pepperFile{}, fmt.Errorf("decode pepper file %s: %w", path, err)
	}
	if dec.More() {
		return nil, pepperFile{}, fmt.Errorf("decode pepper file %s: data after the JSON document", path)
	}
	return b, pf, nil
}

func (pf pepperFile) peppers() (Peppers, error) {
	if len(pf.Peppers) == 0 {
		return Peppers{}, errNoPeppers
	}
	var current *Pepper
	var older []Pepper
	for _, e := range pf.Peppers {
		p := Pepper{Version: e.Version, Key: e.Key}
		if e.Version == pf.Current && current == nil {
			current = &p
			continue
		}
		older = append(older, p)
	}
	if current == nil {
		return Peppers{}, fmt.Errorf("current pepper %q is not among the peppers", pf.Current)
	}
	return NewPeppers(*current, older...)
}

// writePepperFile writes pf durably and atomically (internal/keyfile): with replace over path,
// without only when path does not exist yet (fs.ErrExist otherwise). Losing the pepper loses
// every key hashed with it.
func writePepperFile(path string, pf pepperFile, replace bool) error {
	b, err := json.MarshalIndent(pf, "", "  ")
	if err != nil {
		return fmt.Errorf("encode pepper file: %w", err)
	}
	if err := keyfile.Write(path, append(b, '\n'), pepperFileMode, replace); err != nil {
		return fmt.Errorf("write pepper file: %w", err)
	}
	return nil
}

func generatePepperKey() ([]byte, error) {
	key := make([]byte, generatedPepperLen)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate pepper: %w", err)
	}
	return key, nil
}

func nowSecond() time.Time { return time.Now().UTC().Truncate(time.Second) }
