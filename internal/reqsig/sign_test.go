package reqsig_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/reqsig"
)

func TestSignRefuses(t *testing.T) {
	_, priv := mustEd25519(t)
	for _, tc := range []struct {
		name string
		key  reqsig.SignerKey
	}{
		{"no id", reqsig.SignerKey{Alg: reqsig.AlgHMACSHA256, Secret: make([]byte, 32)}},
		{"short secret", reqsig.SignerKey{ID: "rk_x", Alg: reqsig.AlgHMACSHA256, Secret: make([]byte, 31)}},
		{"no private key", reqsig.SignerKey{ID: "rk_x", Alg: reqsig.AlgEd25519}},
		{"unknown algorithm", reqsig.SignerKey{ID: "rk_x", Alg: "rsa-pss-sha512", PrivateKey: priv}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := http.NewRequest(http.MethodGet, "http://api.example.com/", nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := reqsig.Sign(r, nil, tc.key, t0, ""); err == nil {
				t.Fatal("Sign succeeded")
			}
			if r.Header.Get("Signature") != "" || r.Header.Get("Signature-Input") != "" {
				t.Fatal("a refused Sign set headers")
			}
		})
	}
	// An existing Signature-Input that is not a dictionary is not overwritten blindly.
	r, _ := http.NewRequest(http.MethodGet, "http://api.example.com/", nil)
	r.Header.Set("Signature-Input", "(")
	if err := reqsig.Sign(r, nil, reqsig.SignerKey{ID: "rk_x", Alg: reqsig.AlgEd25519, PrivateKey: priv}, t0, ""); err == nil {
		t.Fatal("Sign over a malformed Signature-Input succeeded")
	}
}

// TestSignHeaders checks the exact headers Sign writes.
func TestSignHeaders(t *testing.T) {
	key := reqsig.SignerKey{ID: "rk_01jpaz8kq3n3c0r7f4d6t0x9zz", Alg: reqsig.AlgHMACSHA256, Secret: bytes.Repeat([]byte{0x42}, 32)}
	body := []byte(`{"hello":"world"}`)
	r, err := http.NewRequest(http.MethodPost, "https://api.example.com/v1/invoke/echo?x=1", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	// A signature of someone else (a gateway) is kept.
	r.Header.Set("Signature-Input", `gw=("@method");created=1`)
	r.Header.Set("Signature", `gw=:AAAA:`)
	if err := reqsig.Sign(r, body, key, t0, "fixed-nonce"); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	if got, want := r.Header.Get("Content-Digest"), "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":"; got != want {
		t.Errorf("Content-Digest %q, want %q", got, want)
	}
	wantInput := fmt.Sprintf(`gw=("@method");created=1, nops=("@method" "@target-uri" "content-digest" "content-type");created=%d;keyid="%s";nonce="fixed-nonce";tag="nops-request"`, t0.Unix(), key.ID)
	if got := r.Header.Get("Signature-Input"); got != wantInput {
		t.Errorf("Signature-Input\n%s\nwant\n%s", got, wantInput)
	}
	if got := r.Header.Get("Signature"); !regexp.MustCompile(`^gw=:AAAA:, nops=:[A-Za-z0-9+/]{43}=:$`).MatchString(got) {
		t.Errorf("Signature %q", got)
	}
	base, err := reqsig.SignatureBase(r, body)
	if err != nil {
		t.Fatal(err)
	}
	wantBase := strings.Join([]string{
		`"@method": POST`,
		`"@target-uri": https://api.example.com/v1/invoke/echo?x=1`,
		`"content-digest": sha-256=:` + base64.StdEncoding.EncodeToString(sum[:]) + `:`,
		`"content-type": application/json`,
		`"@signature-params": ("@method" "@target-uri" "content-digest" "content-type");created=` + fmt.Sprint(t0.Unix()) +
			`;keyid="` + key.ID + `";nonce="fixed-nonce";tag="nops-request"`,
	}, "\n")
	if base != wantBase {
		t.Errorf("signature base\n%s\nwant\n%s", base, wantBase)
	}
	// Signing again (a retry) replaces nops's signature and keeps the gateway's.
	if err := reqsig.Sign(r, body, key, t0.Add(1), "other"); err != nil {
		t.Fatal(err)
	}
	if got := r.Header.Get("Signature-Input"); strings.Count(got, "nops=") != 1 || !strings.HasPrefix(got, "gw=") {
		t.Errorf("after a second Sign: %s", got)
	}
}

// TestSignGETHasNoDigest: a request without body covers neither content-digest nor, without
// the header, content-type.
func TestSignGETHasNoDigest(t *testing.T) {
	_, priv := mustEd25519(t)
	r, _ := http.NewRequest(http.MethodGet, "http://api.example.com/v1/agents", nil)
	if err := reqsig.Sign(r, nil, reqsig.SignerKey{ID: "rk_x", Alg: reqsig.AlgEd25519, PrivateKey: priv}, t0, ""); err != nil {
		t.Fatal(err)
	}
	if r.Header.Get("Content-Digest") != "" || !strings.Contains(r.Header.Get("Signature-Input"), `nops=("@method" "@target-uri");`) {
		t.Fatalf("headers %v", r.Header)
	}
}

func TestNewNonce(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		n := reqsig.NewNonce()
		if !regexp.MustCompile(`^[A-Za-z0-9_-]{22}$`).MatchString(n) || seen[n] {
			t.Fatalf("nonce %q (seen before: %v)", n, seen[n])
		}
		seen[n] = true
	}
}
