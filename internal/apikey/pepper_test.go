package apikey

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/blake2b"
)

func TestPepperFromConfig(t *testing.T) {
	tests := []struct {
		name, version, secret string
		ok                    bool
	}{
		{"32 bytes", "v1", strings.Repeat("a", 32), true},
		{"64 bytes", "2026-01.a_b", strings.Repeat("Z", 64), true},
		{"base64 output", "v2", "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8Q=", true},
		{"31 bytes", "v1", strings.Repeat("a", 31), false},
		{"65 bytes: longer than a BLAKE2b key", "v1", strings.Repeat("a", 65), false},
		{"space inside", "v1", strings.Repeat("a", 20) + " " + strings.Repeat("a", 20), false},
		{"trailing newline", "v1", strings.Repeat("a", 40) + "\n", false},
		{"non-ASCII", "v1", strings.Repeat("a", 40) + "é", false},
		{"empty version", "", strings.Repeat("a", 40), false},
		{"version with space", "v 1", strings.Repeat("a", 40), false},
		{"version too long", strings.Repeat("v", 33), strings.Repeat("a", 40), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := PepperFromConfig(tt.version, tt.secret)
			if (err == nil) != tt.ok {
				t.Fatalf("PepperFromConfig = %v, want ok %v", err, tt.ok)
			}
			if err != nil {
				if strings.Contains(err.Error(), strings.TrimSpace(tt.secret)) {
					t.Fatalf("error %q quotes the secret", err)
				}
				return
			}
			if p.Version != tt.version || string(p.Key) != tt.secret {
				t.Fatalf("PepperFromConfig = %s with key %q", p, p.Key)
			}
		})
	}
}

func TestNewPeppers(t *testing.T) {
	v1, v2 := testPepper(t, "v1"), testPepper(t, "v2")
	ps, err := NewPeppers(v2, v1)
	if err != nil {
		t.Fatal(err)
	}
	if ps.Current().Version != "v2" {
		t.Fatalf("Current = %s", ps.Current())
	}
	if got, ok := ps.Get("v1"); !ok || !bytes.Equal(got.Key, v1.Key) {
		t.Fatalf("Get(v1) = %s, %v", got, ok)
	}
	if _, ok := ps.Get("v3"); ok {
		t.Fatal("Get(v3) found a pepper")
	}
	if diff := cmp.Diff([]string{"v1", "v2"}, ps.Versions()); diff != "" {
		t.Fatal(diff)
	}
	// The set keeps its own copy: a caller scrubbing its buffer does not change it.
	v1.Key[0] ^= 0xff
	if got, _ := ps.Get("v1"); got.Key[0] == v1.Key[0] {
		t.Fatal("NewPeppers shares the caller's key buffer")
	}

	if _, err := NewPeppers(v1, testPepper(t, "v1")); err == nil {
		t.Fatal("a duplicate version was accepted")
	}
	if _, err := NewPeppers(v1, Pepper{Version: "v0", Key: []byte("short")}); err == nil {
		t.Fatal("a short older pepper was accepted")
	}
	if _, err := NewPeppers(Pepper{}); err == nil {
		t.Fatal("an empty pepper was accepted")
	}
}

func TestPepperIsNeverPrinted(t *testing.T) {
	p := testPepper(t, "v1")
	ps := peppersOf(t, p, testPepper(t, "v0"))
	var out bytes.Buffer
	slog.New(slog.NewJSONHandler(&out, nil)).Info("peppers", "pepper", p, "peppers", ps)
	slog.New(slog.NewTextHandler(&out, nil)).Info("peppers", "pepper", p, "peppers", ps)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		fmt.Fprintf(&out, verb+"\n", p)
		fmt.Fprintf(&out, verb+"\n", ps)
		fmt.Fprintf(&out, verb+"\n", []Pepper{p})
	}
	text := out.String()
	for _, leak := range []string{string(p.Key), hex.EncodeToString(p.Key), strings.ToUpper(hex.EncodeToString(p.Key)), fmt.Sprint(p.Key)} {
		if strings.Contains(text, leak) {
			t.Fatalf("output shows the pepper key:\n%s", text)
		}
	}
	if !strings.Contains(text, "v1") || !strings.Contains(text, "v0") {
		t.Fatalf("output does not name the versions:\n%s", text)
	}
}

func TestDigest(t *testing.T) {
	v1, v2 := testPepper(t, "v1"), testPepper(t, "v2")
	h, err := blake2b.New256(v1.Key)
	if err != nil {
		t.Fatal(err)
	}
	h.Write([]byte(goodID + "_" + goodSecret))
	want := h.Sum(nil)
	if got := v1.digest(goodID, goodSecret); !bytes.Equal(got, want) {
		t.Fatalf("digest = %x, want keyed BLAKE2b-256 of id_secret %x", got, want)
	}
	otherID := goodID[:IDLen-1] + "0"
	for name, d := range map[string][]byte{
		"other pepper": v2.digest(goodID, goodSecret),
		"other id":     v1.digest(otherID, goodSecret),
		"other secret": v1.digest(goodID, goodSecret[:SecretLen-1]+"0"),
	} {
		if bytes.Equal(d, want) {
			t.Errorf("%s gives the same digest", name)
		}
	}
}
