package events_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/events"
)

// FuzzParseEvent feeds Parse arbitrary bytes. The seeds are in testdata/fuzz/FuzzParseEvent
// (valid events of every shape the JSON format allows, and near misses) plus the samples'
// canonical events. Parse must never panic and must fail only with errs.Invalid or
// errs.TooLarge; whatever it accepts must serialize, read back as the same event, serialize to
// the same bytes again (the canonical form is a fixed point), and, for a catalogue type, yield
// its payload.
func FuzzParseEvent(f *testing.F) {
	for _, s := range samples() {
		f.Add(mustMarshal(f, newEvent(f, s)))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := events.Parse(b)
		if err != nil {
			if c := errs.CodeOf(err); c != errs.Invalid && c != errs.TooLarge {
				t.Fatalf("Parse failed with code %s: %v", c, err)
			}
			return
		}
		out, err := e.MarshalJSON()
		if err != nil {
			t.Fatalf("MarshalJSON of a parsed event: %v", err)
		}
		back, err := events.Parse(out)
		if err != nil {
			t.Fatalf("Parse of MarshalJSON's output %s: %v", out, err)
		}
		if diff := cmp.Diff(e, back); diff != "" {
			t.Fatalf("round trip changed the event (-parsed +reparsed):\n%s", diff)
		}
		again, err := back.MarshalJSON()
		if err != nil || !bytes.Equal(out, again) {
			t.Fatalf("second serialization differs: %s, %v\nfirst: %s", again, err, out)
		}
		if e.Type.Known() {
			if _, err := e.Payload(); err != nil {
				t.Fatalf("Payload of a parsed %s: %v", e.Type, err)
			}
		}
	})
}

// TestFuzzSeeds keeps the seed corpus honest: the files named valid-* parse, the invalid-* ones
// do not, so each seed exercises the path its name promises. Other files (inputs the fuzzer
// found, kept as regression cases) are FuzzParseEvent's alone.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParseEvent")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("no seeds")
	}
	for _, ent := range entries {
		t.Run(ent.Name(), func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, ent.Name()))
			if err != nil {
				t.Fatal(err)
			}
			lit, ok := strings.CutPrefix(string(raw), "go test fuzz v1\n[]byte(")
			lit, ok2 := strings.CutSuffix(lit, ")\n")
			if !ok || !ok2 {
				t.Fatalf("not a one-value []byte corpus file")
			}
			b, err := strconv.Unquote(lit)
			if err != nil {
				t.Fatal(err)
			}
			_, err = events.Parse([]byte(b))
			switch {
			case strings.HasPrefix(ent.Name(), "valid-") && err != nil:
				t.Errorf("Parse: %v", err)
			case strings.HasPrefix(ent.Name(), "invalid-") && err == nil:
				t.Error("Parse accepted it")
			}
		})
	}
}
