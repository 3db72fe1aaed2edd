package apikey

import (
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

const (
	goodID     = "ak01jz3kq8d9x7m2n4p5r6s7t8v9"
	goodSecret = "Ab3dEf6hIj9kLmN0pQrStUvWxYz0123456789abcdEF"
)

func TestParse(t *testing.T) {
	if len(goodSecret) != SecretLen || len(goodID) != IDLen {
		t.Fatalf("fixture lengths %d, %d", len(goodID), len(goodSecret))
	}
	good := Prefix + goodID + "_" + goodSecret
	if len(good) != RawLen {
		t.Fatalf("RawLen = %d, good key is %d", RawLen, len(good))
	}
	id, secret, err := Parse(good)
	if err != nil || id != goodID || secret != goodSecret {
		t.Fatalf("Parse(good) = %q, %q, %v", id, secret, err)
	}

	bad := map[string]string{
		"empty":                 "",
		"one byte short":        good[:RawLen-1],
		"one byte long":         good + "a",
		"twice":                 good + good,
		"other prefix":          "NOPS_" + good[5:],
		"bearer word":           "Bearer " + good[7:],
		"upper-case id":         Prefix + strings.ToUpper(goodID) + "_" + goodSecret,
		"id without ak":         Prefix + "xk" + goodID[2:] + "_" + goodSecret,
		"ulid overflow":         Prefix + "ak8" + goodID[3:] + "_" + goodSecret,
		"id with crockford i":   Prefix + goodID[:10] + "i" + goodID[11:] + "_" + goodSecret,
		"id with underscore":    Prefix + goodID[:10] + "_" + goodID[11:] + "_" + goodSecret,
		"dash separator":        Prefix + goodID + "-" + goodSecret,
		"underscore in secret":  Prefix + goodID + "_" + goodSecret[:20] + "_" + goodSecret[21:],
		"dash in secret":        Prefix + goodID + "_" + goodSecret[:20] + "-" + goodSecret[21:],
		"space in secret":       Prefix + goodID + "_" + goodSecret[:42] + " ",
		"non-ASCII in secret":   Prefix + goodID + "_" + goodSecret[:41] + "é",
		"NUL in secret":         Prefix + goodID + "_" + goodSecret[:42] + "\x00",
		"leading space":         " " + good[:RawLen-1],
		"signing key id as kid": Prefix + "key_01JZ3KQ8D9X7M2N4P5R6S7T8" + "_" + goodSecret,
	}
	for name, raw := range bad {
		t.Run(name, func(t *testing.T) {
			id, secret, err := Parse(raw)
			requireRejected(t, err)
			if id != "" || secret != "" {
				t.Fatalf("Parse returned parts %q, %q with an error", id, secret)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		goodID:                          true,
		"ak" + strings.Repeat("0", 26):  true,
		"ak7" + strings.Repeat("z", 25): true,
		"ak8" + strings.Repeat("z", 25): false, // beyond 128 bits
		goodID[:IDLen-1]:                false,
		goodID + "0":                    false,
		goodID[:IDLen-1] + "u":          false, // u is not Crockford
		"AK" + goodID[2:]:               false,
		"":                              false,
	} {
		if got := ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestNewIDCarriesTimeAndIsUnique(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	seen := map[string]bool{}
	for range 1000 {
		id, err := newID(now)
		if err != nil {
			t.Fatal(err)
		}
		if !ValidID(id) || seen[id] {
			t.Fatalf("newID = %q: valid %v, seen before %v", id, ValidID(id), seen[id])
		}
		seen[id] = true
		u, err := ulid.ParseStrict(strings.ToUpper(id[2:]))
		if err != nil {
			t.Fatal(err)
		}
		if got := ulid.Time(u.Time()); !got.Equal(now) {
			t.Fatalf("time of %s = %s, want %s", id, got, now)
		}
	}
}

func TestNewSecretIsUniformBase62(t *testing.T) {
	counts := map[byte]int{}
	seen := map[string]bool{}
	const n = 4000
	for range n {
		s, err := newSecret()
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != SecretLen || seen[s] {
			t.Fatalf("secret %q: length %d, seen before %v", s, len(s), seen[s])
		}
		seen[s] = true
		for i := 0; i < len(s); i++ {
			if !isBase62(s[i]) {
				t.Fatalf("secret %q has %q", s, s[i])
			}
			counts[s[i]]++
		}
	}
	if len(counts) != 62 {
		t.Fatalf("%d distinct characters in %d secrets, want 62", len(counts), n)
	}
	// Without rejection sampling, b%62 over a byte would pick '0'..'7' 5 times in 256 instead of
	// 4: 25% too often. Each count is about 2774 ± 53, so 8% is far outside chance.
	var low, rest float64
	for c, k := range counts {
		if strings.IndexByte(base62[:8], c) >= 0 {
			low += float64(k) / 8
		} else {
			rest += float64(k) / 54
		}
	}
	if ratio := low / rest; ratio > 1.08 || ratio < 0.92 {
		t.Fatalf("'0'..'7' drawn %.3f times as often as the others", ratio)
	}
}

func TestFormatParseRoundTrip(t *testing.T) {
	now := time.Now()
	for range 100 {
		id, err := newID(now)
		if err != nil {
			t.Fatal(err)
		}
		secret, err := newSecret()
		if err != nil {
			t.Fatal(err)
		}
		gotID, gotSecret, err := Parse(format(id, secret))
		if err != nil || gotID != id || gotSecret != secret {
			t.Fatalf("Parse(format(%s, …)) = %q, %v", id, gotID, err)
		}
	}
}
