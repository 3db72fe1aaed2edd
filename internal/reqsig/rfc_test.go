package reqsig_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/reqsig"
)

// rfcCreated is the created parameter of every RFC 9421 Appendix B signature.
var rfcCreated = time.Unix(1618884473, 0).UTC()

func readRFC(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/rfc9421/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rfcRequest reads a signed request of Appendix B as a server receives it, with its body.
func rfcRequest(t testing.TB, name string) (*http.Request, []byte) {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(readRFC(t, name))))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return r, body
}

func rfcSharedSecret(t testing.TB) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(string(readRFC(t, "test-shared-secret")))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rfcEd25519(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	block, _ := pem.Decode(readRFC(t, "test-key-ed25519.pub"))
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	block, _ = pem.Decode(readRFC(t, "test-key-ed25519.pem"))
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub.(ed25519.PublicKey), priv.(ed25519.PrivateKey)
}

// rfcLookup knows the RFC's two keys under their RFC key IDs.
type rfcLookup map[string]reqsig.Material

func (l rfcLookup) Lookup(_ context.Context, keyID string) (reqsig.Material, error) {
	m, ok := l[keyID]
	if !ok {
		return reqsig.Material{}, errs.New(errs.NotFound, "no such key")
	}
	return m, nil
}

func newRFCLookup(t testing.TB) rfcLookup {
	pub, _ := rfcEd25519(t)
	return rfcLookup{
		"test-shared-secret": {Key: reqsig.Key{ID: "test-shared-secret", TenantID: "ten_rfc", Alg: reqsig.AlgHMACSHA256, Generation: 1}, Secret: rfcSharedSecret(t)},
		"test-key-ed25519":   {Key: reqsig.Key{ID: "test-key-ed25519", TenantID: "ten_rfc", Alg: reqsig.AlgEd25519, PublicKey: pub, Generation: 1}},
	}
}

// rfcVerifier verifies the RFC's examples: they carry neither tag nor nonce and cover neither
// @method nor @target-uri, so the policy is relaxed; the cryptographic check is the real one,
// at the RFC's created time.
func rfcVerifier(t testing.TB) *reqsig.Verifier {
	return newVerifier(t, newRFCLookup(t), &reqsig.MemoryNonces{}, newClock(rfcCreated.Add(time.Minute)), reqsig.Config{
		InsecureSkipTag: true, InsecureSkipNonce: true, InsecureSkipCoverage: true,
	})
}

// TestRFC9421AppendixB verifies B.2.5 (hmac-sha256) and B.2.6 (ed25519) through Verify, and
// refuses each with one covered component, the body or the signature altered.
func TestRFC9421AppendixB(t *testing.T) {
	v := rfcVerifier(t)
	verify := func(r *http.Request, body []byte) (reqsig.Result, error) {
		return v.Verify(context.Background(), r, body)
	}
	type alteration struct {
		name   string
		alter  func(r *http.Request, body *[]byte)
		code   string
		reason string
	}
	common := []alteration{
		{"date", func(r *http.Request, _ *[]byte) { r.Header.Set("Date", "Tue, 20 Apr 2021 02:07:56 GMT") }, reqsig.CodeBadSignature, "signature does not verify"},
		{"@authority", func(r *http.Request, _ *[]byte) { r.Host = "example.org" }, reqsig.CodeBadSignature, "signature does not verify"},
		{"content-type", func(r *http.Request, _ *[]byte) { r.Header.Set("Content-Type", "application/xml") }, reqsig.CodeBadSignature, "signature does not verify"},
		{"body", func(_ *http.Request, body *[]byte) { *body = []byte(`{"hello": "World"}`) }, reqsig.CodeDigestMismatch, "content-digest does not match the body"},
		{"signature", func(r *http.Request, _ *[]byte) {
			sig := r.Header.Get("Signature")
			r.Header.Set("Signature", sig[:len(sig)-4]+"AA=:")
		}, reqsig.CodeBadSignature, "signature does not verify"},
		{"created", func(r *http.Request, _ *[]byte) {
			in := r.Header.Get("Signature-Input")
			r.Header.Set("Signature-Input", string(bytes.Replace([]byte(in), []byte("1618884473"), []byte("1618884474"), 1)))
		}, reqsig.CodeBadSignature, "signature does not verify"},
	}
	b26Only := []alteration{
		{"@method", func(r *http.Request, _ *[]byte) { r.Method = http.MethodPut }, reqsig.CodeBadSignature, "signature does not verify"},
		{"@path", func(r *http.Request, _ *[]byte) { r.URL.Path = "/bar" }, reqsig.CodeBadSignature, "signature does not verify"},
		{"content-length", func(r *http.Request, _ *[]byte) { r.Header.Set("Content-Length", "19") }, reqsig.CodeBadSignature, "signature does not verify"},
	}
	for _, tc := range []struct {
		file, keyID string
		alg         reqsig.Algorithm
		alterations []alteration
	}{
		{"b25_request_signed.txt", "test-shared-secret", reqsig.AlgHMACSHA256, common},
		{"b26_request_signed.txt", "test-key-ed25519", reqsig.AlgEd25519, append(common, b26Only...)},
	} {
		t.Run(tc.file, func(t *testing.T) {
			for _, a := range tc.alterations {
				t.Run("altered "+a.name, func(t *testing.T) {
					r, body := rfcRequest(t, tc.file)
					a.alter(r, &body)
					_, err := verify(r, body)
					wantRefusal(t, err, a.code, a.reason)
				})
			}
			r, body := rfcRequest(t, tc.file)
			res, err := verify(r, body)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if res.KeyID != tc.keyID || res.Alg != tc.alg || !res.Created.Equal(rfcCreated) {
				t.Fatalf("Result = %+v", res)
			}
		})
	}
}

// TestRFC9421StrictPolicy: the RFC's examples are genuine signatures, but the kernel's policy
// (no relaxation) refuses them for what they lack.
func TestRFC9421StrictPolicy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    reqsig.Config
		code   string
		reason string
	}{
		{"tag", reqsig.Config{}, reqsig.CodeTag, "tag must be nops-request"},
		{"nonce", reqsig.Config{InsecureSkipTag: true}, reqsig.CodeParameter, "nonce missing"},
		{"coverage", reqsig.Config{InsecureSkipNonce: true, InsecureSkipTag: true}, reqsig.CodeNotCovered, "component @method not covered"},
		{"created", reqsig.Config{InsecureSkipNonce: true, InsecureSkipTag: true, InsecureSkipCoverage: true, MaxSkew: 30 * time.Second},
			reqsig.CodeSkew, "created is 60s in the past (allowed skew 30s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t, newRFCLookup(t), &reqsig.MemoryNonces{}, newClock(rfcCreated.Add(time.Minute)), tc.cfg)
			r, body := rfcRequest(t, "b25_request_signed.txt")
			_, err := v.Verify(context.Background(), r, body)
			wantRefusal(t, err, tc.code, tc.reason)
		})
	}
}
