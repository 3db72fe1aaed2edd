package apikey

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/user"
)

// countDigests wraps svc's digest function and returns the counter it increments.
func countDigests(svc *Service) *atomic.Int64 {
	var n atomic.Int64
	inner := svc.digest
	svc.digest = func(p Pepper, id, secret string) []byte {
		n.Add(1)
		return inner(p, id, secret)
	}
	return &n
}

func otherSecret(secret string) string {
	if secret[0] == 'A' {
		return "B" + secret[1:]
	}
	return "A" + secret[1:]
}

// TestVerifyFailuresAreIndistinguishable checks that every refusal gives the same error, and that
// every well-formed key costs the same two digests whether or not its ID exists.
func TestVerifyFailuresAreIndistinguishable(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, h *harness) (svc *Service, raw string)
		reason  string
		digests int64
	}{
		{"malformed", func(t *testing.T, h *harness) (*Service, string) {
			return h.svc, "nops_not-a-key"
		}, "malformed", 0},
		{"unknown id", func(t *testing.T, h *harness) (*Service, string) {
			return h.svc, format(goodID, goodSecret)
		}, "unknown_id", 2},
		{"wrong secret", func(t *testing.T, h *harness) (*Service, string) {
			_, raw := h.create(t, CreateInput{})
			id, secret, _ := Parse(raw)
			return h.svc, format(id, otherSecret(secret))
		}, "wrong_secret", 2},
		{"secret of another key", func(t *testing.T, h *harness) (*Service, string) {
			_, raw1 := h.create(t, CreateInput{})
			_, raw2 := h.create(t, CreateInput{})
			id1, _, _ := Parse(raw1)
			_, secret2, _ := Parse(raw2)
			return h.svc, format(id1, secret2)
		}, "wrong_secret", 2},
		{"revoked", func(t *testing.T, h *harness) (*Service, string) {
			k, raw := h.create(t, CreateInput{})
			if _, err := h.svc.Revoke(as(t, adminA), k.ID); err != nil {
				t.Fatal(err)
			}
			return h.svc, raw
		}, "revoked", 2},
		{"expired", func(t *testing.T, h *harness) (*Service, string) {
			_, raw := h.create(t, CreateInput{ExpiresAt: h.clk.Now().Add(time.Hour)})
			h.clk.Advance(time.Hour)
			return h.svc, raw
		}, "expired", 2},
		{"rotated out after grace", func(t *testing.T, h *harness) (*Service, string) {
			k, raw := h.create(t, CreateInput{})
			if _, _, err := h.svc.Rotate(as(t, adminA), k.ID, time.Hour); err != nil {
				t.Fatal(err)
			}
			h.clk.Advance(time.Hour)
			return h.svc, raw
		}, "rotated_out", 2},
		{"pepper no longer configured", func(t *testing.T, h *harness) (*Service, string) {
			_, raw := h.create(t, CreateInput{})
			return h.service(t, peppersOf(t, testPepper(t, "v2")), Options{}), raw
		}, "unknown_pepper", 2},
	}
	var first *errs.Error
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			svc, raw := tt.setup(t, h)
			n := countDigests(svc)
			k, err := svc.Verify(t.Context(), raw)
			requireRejected(t, err)
			if k.ID != "" {
				t.Fatalf("a key came with the error: %+v", k)
			}
			e := errs.As(err)
			if first == nil {
				first = e
			}
			if e.Code != first.Code || e.Message != first.Message || !cmp.Equal(e.Fields, first.Fields) {
				t.Fatalf("error %v differs from %v", e, first)
			}
			if _, secret, perr := Parse(raw); perr == nil && strings.Contains(err.Error(), secret) {
				t.Fatalf("error quotes the secret: %v", err)
			}
			if got := n.Load(); got != tt.digests {
				t.Fatalf("%d digests computed, want %d", got, tt.digests)
			}
			if !strings.Contains(h.log.String(), `"reason":"`+tt.reason+`"`) {
				t.Fatalf("log lacks reason %s:\n%s", tt.reason, h.log.String())
			}
		})
	}
}

func TestVerifySuccessCostsTwoDigests(t *testing.T) {
	h := newHarness(t)
	k, raw := h.create(t, CreateInput{})
	n := countDigests(h.svc)
	if _, err := h.svc.Verify(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.svc.Rotate(as(t, adminA), k.ID, 0); err != nil {
		t.Fatal(err)
	}
	n.Store(0)
	if _, err := h.svc.Verify(t.Context(), raw); err != nil {
		t.Fatal(err)
	}
	if got := n.Load(); got != 2 {
		t.Fatalf("%d digests for a key with a previous secret, want 2", got)
	}
}

func TestPepperRotationKeepsOldKeysValid(t *testing.T) {
	v1, v2 := testPepper(t, "v1"), testPepper(t, "v2")
	h := newHarness(t, v1)
	k1, raw1 := h.create(t, CreateInput{})

	both := h.service(t, peppersOf(t, v2, v1), Options{})
	if got, err := both.Verify(t.Context(), raw1); err != nil || got.PepperVersion != "v1" {
		t.Fatalf("a v1 key after v2 became current: %v", err)
	}
	k2, raw2, err := both.Create(as(t, adminA), CreateInput{Name: "new", Role: user.RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	if k2.PepperVersion != "v2" {
		t.Fatalf("new key hashed with %s", k2.PepperVersion)
	}
	if _, err := both.Verify(t.Context(), raw2); err != nil {
		t.Fatal(err)
	}
	_, err = h.svc.Verify(t.Context(), raw2) // a replica that only knows v1
	requireRejected(t, err)

	// Rotating the v1 key moves it to v2, the old secret still verifying under v1 during grace.
	rotated, newRaw1, err := both.Rotate(as(t, adminA), k1.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.PepperVersion != "v2" || rotated.PrevPepperVersion != "v1" {
		t.Fatalf("rotated key peppers %s / %s", rotated.PepperVersion, rotated.PrevPepperVersion)
	}
	for _, raw := range []string{raw1, newRaw1} {
		if _, err := both.Verify(t.Context(), raw); err != nil {
			t.Fatal(err)
		}
	}
	// Once v1 is retired only the new secret works.
	onlyV2 := h.service(t, peppersOf(t, v2), Options{})
	if _, err := onlyV2.Verify(t.Context(), newRaw1); err != nil {
		t.Fatal(err)
	}
	_, err = onlyV2.Verify(t.Context(), raw1)
	requireRejected(t, err)
}

func TestSecretsNeverLeak(t *testing.T) {
	h := newHarness(t)
	ctx := as(t, adminA)
	var raws []string
	var keys []Key
	var errList []error
	keep := func(k Key, raw string, err error) {
		keys = append(keys, k)
		if raw != "" {
			raws = append(raws, raw)
		}
		if err != nil {
			errList = append(errList, err)
		}
	}
	k, raw, err := h.svc.Create(ctx, CreateInput{Name: "n", Role: user.RoleViewer})
	keep(k, raw, err)
	k, raw2, err := h.svc.Create(ctx, CreateInput{Name: "m", Role: user.RoleViewer})
	keep(k, raw2, err)
	id, _, _ := Parse(raw)
	_, secret2, _ := Parse(raw2)
	for _, r := range []string{raw, format(id, secret2), raw + "x", strings.ToUpper(raw)} {
		k, err := h.svc.Verify(t.Context(), r)
		keep(k, "", err)
	}
	k, rawRotated, err := h.svc.Rotate(ctx, id, time.Minute)
	keep(k, rawRotated, err)
	h.clk.Advance(time.Minute)
	for _, r := range []string{raw, rawRotated} {
		k, err := h.svc.Verify(t.Context(), r)
		keep(k, "", err)
	}
	k, err = h.svc.Revoke(ctx, id)
	keep(k, "", err)
	k, err = h.svc.Verify(t.Context(), rawRotated)
	keep(k, "", err)
	if len(raws) != 3 || len(errList) < 5 {
		t.Fatalf("%d raw keys and %d errors; the scenario did not run as planned", len(raws), len(errList))
	}

	var seen strings.Builder
	seen.WriteString(h.log.String())
	for _, k := range keys {
		fmt.Fprintf(&seen, "%+v %#v %s\n", k, k, k.LogValue())
	}
	for _, e := range errList {
		fmt.Fprintf(&seen, "%v %+v %#v\n", e, e, errs.As(e))
	}
	text := seen.String()
	for _, r := range raws {
		_, secret, _ := Parse(r)
		if strings.Contains(text, secret) {
			t.Fatalf("a secret appears in keys, errors or logs:\n%s", text)
		}
	}
	if !strings.Contains(h.log.String(), "api key created") || !strings.Contains(h.log.String(), "api key refused") {
		t.Fatalf("the log was not captured:\n%s", h.log.String())
	}
}

func TestVerifyRecordsUse(t *testing.T) {
	h := newHarness(t)
	rec := NewUsageRecorder(h.store, UsageOptions{})
	svc := h.service(t, peppersOf(t, testPepper(t, "v1")), Options{Usage: rec})
	k, raw := h.create(t, CreateInput{})
	id, secret, _ := Parse(raw)
	if _, err := svc.Verify(t.Context(), format(id, otherSecret(secret))); err == nil {
		t.Fatal("wrong secret accepted")
	}
	if rec.Pending() != 0 {
		t.Fatal("a refused key was recorded as used")
	}
	var last time.Time
	for range 3 {
		h.clk.Advance(time.Second)
		last = h.clk.Now()
		if _, err := svc.Verify(t.Context(), raw); err != nil {
			t.Fatal(err)
		}
	}
	if rec.Pending() != 1 {
		t.Fatalf("%d keys pending", rec.Pending())
	}
	if err := rec.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := h.store.get(t, k.ID).LastUsedAt; !got.Equal(last) {
		t.Fatalf("LastUsedAt = %s, want %s", got, last)
	}
	if len(h.store.touches) != 1 {
		t.Fatalf("%d writes for three uses", len(h.store.touches))
	}
}
