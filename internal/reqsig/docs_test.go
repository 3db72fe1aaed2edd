package reqsig_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/reqsig"
)

// The worked example of docs/request-signing.md: fixed keys, time and nonces, so Sign makes the
// same headers every time (HMAC-SHA256 and Ed25519 are deterministic).
var (
	docCreated = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC) // 1773500966
	docHMAC    = reqsig.SignerKey{ID: "rk_01jq3v6y7m9k2x8p4t5w0zcd1h", Alg: reqsig.AlgHMACSHA256,
		Secret: []byte("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f")}
	docEd = reqsig.SignerKey{ID: "rk_01jq3v7a2b3c4d5e6f7g8h9j0k", Alg: reqsig.AlgEd25519,
		PrivateKey: ed25519.NewKeyFromSeed([]byte("nops worked example ed25519 seed"))}
	docNonces = map[reqsig.Algorithm]string{reqsig.AlgHMACSHA256: "q3Jx0dQvXb2yR7mLkP9sEw", reqsig.AlgEd25519: "Zk1f8wQe3TgYh5Rj2Lp0Xa"}
)

// docRequest is the example request, signed with key.
func docRequest(t *testing.T, key reqsig.SignerKey) (*http.Request, []byte) {
	t.Helper()
	body := []byte(`{"message":"hello"}`)
	r, err := http.NewRequest(http.MethodPost, "https://nops.example.com/v1/invoke/echo?mode=fast", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	if err := reqsig.Sign(r, body, key, docCreated, docNonces[key.Alg]); err != nil {
		t.Fatal(err)
	}
	return r, body
}

// TestDocsWorkedExample checks that docs/request-signing.md shows exactly what Sign makes for
// its example (headers and signature base), that the example keys it prints are the ones used,
// and that the examples verify. Run with NOPS_PRINT_EXAMPLE=1 -v to print the values.
func TestDocsWorkedExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/request-signing.md")
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(docEd.PrivateKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(docEd.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		base64.StdEncoding.EncodeToString(docHMAC.Secret),
		strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))),
		strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}))),
	}
	lookup := rfcLookup{
		docHMAC.ID: {Key: reqsig.Key{ID: docHMAC.ID, TenantID: "ten_doc", Alg: reqsig.AlgHMACSHA256, Generation: 1}, Secret: docHMAC.Secret},
		docEd.ID: {Key: reqsig.Key{ID: docEd.ID, TenantID: "ten_doc", Alg: reqsig.AlgEd25519, Generation: 1,
			PublicKey: docEd.PrivateKey.Public().(ed25519.PublicKey)}},
	}
	v := newVerifier(t, lookup, &reqsig.MemoryNonces{}, newClock(docCreated.Add(2*time.Second)), reqsig.Config{Scheme: "https"})
	for _, key := range []reqsig.SignerKey{docHMAC, docEd} {
		r, body := docRequest(t, key)
		base, err := reqsig.SignatureBase(r, body)
		if err != nil {
			t.Fatal(err)
		}
		lines := []string{
			"Content-Digest: " + r.Header.Get("Content-Digest"),
			"Signature-Input: " + r.Header.Get("Signature-Input"),
			"Signature: " + r.Header.Get("Signature"),
			base,
		}
		if os.Getenv("NOPS_PRINT_EXAMPLE") != "" {
			t.Logf("%s:\n%s\n\n%s", key.Alg, strings.Join(lines[:3], "\n"), base)
		}
		want = append(want, lines...)
		sr, sbody := received(t, r)
		if _, err := v.Verify(context.Background(), sr, sbody); err != nil {
			t.Fatalf("%s example does not verify: %v", key.Alg, err)
		}
	}
	if os.Getenv("NOPS_PRINT_EXAMPLE") != "" {
		t.Logf("keys:\n%s", strings.Join(want[:3], "\n"))
	}
	// Code blocks inside lists are indented: compare without leading blanks.
	doc = []byte(unindent(string(doc)))
	for _, w := range want {
		if !bytes.Contains(doc, []byte(unindent(w))) {
			t.Errorf("docs/request-signing.md does not show:\n%s", w)
		}
	}
	// Every refusal message in the doc's table is one Verify gives: spot-check the table lists
	// each code.
	for _, code := range []string{reqsig.CodeMissing, reqsig.CodeMalformed, reqsig.CodeTag, reqsig.CodeParameter,
		reqsig.CodeNotCovered, reqsig.CodeUnsupported, reqsig.CodeSkew, reqsig.CodeExpired, reqsig.CodeUnknownKey,
		reqsig.CodeKeyRevoked, reqsig.CodeKeyExpired, reqsig.CodeAlgMismatch, reqsig.CodeDigest, reqsig.CodeDigestMismatch,
		reqsig.CodeBadSignature, reqsig.CodeReplay} {
		if !bytes.Contains(doc, []byte("`"+code+"`")) {
			t.Errorf("docs/request-signing.md's table lacks the code %s", code)
		}
	}
}

// unindent drops the leading spaces of every line.
func unindent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimLeft(l, " ")
	}
	return strings.Join(lines, "\n")
}
