package apicompat_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/apicompat"
)

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRemovedResponseFieldIsBreaking(t *testing.T) {
	rep, err := apicompat.Compare(read(t, "base.yaml"), read(t, "removed_field.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Refused() || len(rep.Breaking) == 0 {
		t.Fatalf("a removed response property was not reported as breaking: %+v", rep)
	}
	if !strings.Contains(strings.Join(rep.Breaking, "\n"), "name") {
		t.Errorf("the report does not name the removed property: %q", rep.Breaking)
	}
}

func TestAdditionsAreNotBreaking(t *testing.T) {
	rep, err := apicompat.Compare(read(t, "base.yaml"), read(t, "added.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Refused() || len(rep.Breaking) > 0 {
		t.Fatalf("additive changes reported as breaking: %q", rep.Breaking)
	}
}

func TestVersionedBreakingChangeIsAllowed(t *testing.T) {
	for rev, versioned := range map[string]bool{"0.2.0": true, "0.1.9": false, "1.0.0": true, "v0.3.0": true} {
		doc := bytes.Replace(read(t, "removed_field.yaml"), []byte("version: 0.1.0"), []byte("version: "+rev), 1)
		rep, err := apicompat.Compare(read(t, "base.yaml"), doc)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Breaking) == 0 || rep.Versioned != versioned || rep.Refused() == versioned {
			t.Errorf("version %s: breaking %d, versioned %v, refused %v; want versioned %v", rev, len(rep.Breaking), rep.Versioned, rep.Refused(), versioned)
		}
	}
	// Within 1.x only a new major allows it.
	base := bytes.Replace(read(t, "base.yaml"), []byte("version: 0.1.0"), []byte("version: 1.2.0"), 1)
	rev := bytes.Replace(read(t, "removed_field.yaml"), []byte("version: 0.1.0"), []byte("version: 1.3.0"), 1)
	if rep, err := apicompat.Compare(base, rev); err != nil || !rep.Refused() {
		t.Errorf("1.2.0 → 1.3.0 with a breaking change: refused %v, %v", rep.Refused(), err)
	}
}

func TestBadInput(t *testing.T) {
	if _, err := apicompat.Compare([]byte("not: [yaml"), read(t, "base.yaml")); err == nil {
		t.Error("a broken baseline was accepted")
	}
	bad := bytes.Replace(read(t, "base.yaml"), []byte("version: 0.1.0"), []byte("version: latest"), 1)
	if _, err := apicompat.Compare(read(t, "base.yaml"), bad); err == nil || !strings.Contains(err.Error(), "info.version") {
		t.Errorf("a non-semantic version: %v", err)
	}
}

func TestChangelog(t *testing.T) {
	from, to, changes, err := apicompat.Changelog(read(t, "base.yaml"), read(t, "removed_field.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if from != "0.1.0" || to != "0.1.0" {
		t.Errorf("versions %q → %q", from, to)
	}
	if len(changes) == 0 || changes[0].Level != apicompat.Breaking || changes[0].Operation != "GET /v1/things/{id}" || !strings.Contains(changes[0].Text, "name") {
		t.Fatalf("the removed property is not the first, breaking change of GET /v1/things/{id}: %+v", changes)
	}

	_, to, changes, err = apicompat.Changelog(read(t, "base.yaml"), read(t, "added.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if to != "0.1.1" {
		t.Errorf("revision version %q", to)
	}
	var ops []string
	for _, c := range changes {
		if c.Level == apicompat.Breaking {
			t.Errorf("an addition listed as breaking: %+v", c)
		}
		ops = append(ops, c.Operation)
	}
	joined := strings.Join(ops, "\n")
	if !strings.Contains(joined, "GET /v1/others") || !strings.Contains(joined, "GET /v1/things/{id}") {
		t.Errorf("the added operation and the added parameter/property are not both listed: %+v", changes)
	}

	if _, _, changes, err := apicompat.Changelog(read(t, "base.yaml"), read(t, "base.yaml")); err != nil || len(changes) != 0 {
		t.Errorf("a document compared with itself: %+v, %v", changes, err)
	}
	if _, _, _, err := apicompat.Changelog(read(t, "base.yaml"), []byte("openapi: [")); err == nil {
		t.Error("a broken revision was accepted")
	}
}
