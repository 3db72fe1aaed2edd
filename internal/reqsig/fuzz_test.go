package reqsig_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dunglas/httpsfv"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/reqsig"
)

// fuzzKeys are an hmac-sha256 and an ed25519 key in memory, so fuzzing runs without a database.
var (
	fuzzHMAC = reqsig.SignerKey{ID: "rk_01jpaz8kq3n3c0r7f4d6t0x9aa", Alg: reqsig.AlgHMACSHA256, Secret: bytes.Repeat([]byte{0x5a}, 32)}
	fuzzEd   = reqsig.SignerKey{ID: "rk_01jpaz8kq3n3c0r7f4d6t0x9bb", Alg: reqsig.AlgEd25519,
		PrivateKey: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x17}, ed25519.SeedSize))}
)

func fuzzLookup() rfcLookup {
	return rfcLookup{
		fuzzHMAC.ID: {Key: reqsig.Key{ID: fuzzHMAC.ID, TenantID: "ten_f", Alg: reqsig.AlgHMACSHA256, Generation: 1}, Secret: fuzzHMAC.Secret},
		fuzzEd.ID: {Key: reqsig.Key{ID: fuzzEd.ID, TenantID: "ten_f", Alg: reqsig.AlgEd25519, Generation: 1,
			PublicKey: fuzzEd.PrivateKey.Public().(ed25519.PublicKey)}},
	}
}

// FuzzVerify feeds Verify arbitrary Signature-Input, Signature and Content-Digest values on a
// fixed request: it never panics (the library asserts parameter types and would), never
// accepts what our Signer did not make for this very request, and refuses only with
// Unauthenticated errors whose message never quotes the body's digest. Seeds:
// testdata/fuzz/FuzzVerify and the values below (a genuine signature among them).
func FuzzVerify(f *testing.F) {
	body := []byte(`{"op":"transfer","amount":100}`)
	build := func() *http.Request {
		r, _ := http.NewRequest(http.MethodPost, "http://api.example.com/v1/invoke/pay?x=1", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		return r
	}
	genuine := build()
	if err := reqsig.Sign(genuine, body, fuzzHMAC, t0, "seed-nonce"); err != nil {
		f.Fatal(err)
	}
	f.Add(genuine.Header.Get("Signature-Input"), genuine.Header.Get("Signature"), genuine.Header.Get("Content-Digest"))
	edSigned := build()
	if err := reqsig.Sign(edSigned, body, fuzzEd, t0, "seed-nonce-ed"); err != nil { // fixed: every fuzzing worker must make the same seed
		f.Fatal(err)
	}
	f.Add(edSigned.Header.Get("Signature-Input"), edSigned.Header.Get("Signature"), edSigned.Header.Get("Content-Digest"))
	in := genuine.Header.Get("Signature-Input")
	for _, s := range []string{
		strings.Replace(in, fmt.Sprint(t0.Unix()), `"x"`, 1),
		strings.Replace(in, `keyid="`+fuzzHMAC.ID+`"`, "keyid=rk", 1),
		strings.Replace(in, `nonce="seed-nonce"`, "nonce=?1", 1),
		strings.Replace(in, `tag="nops-request"`, `tag=:AAAA:`, 1),
		in + `;alg=1`, in + `;expires="soon"`, in + `;alg="ed25519"`,
		`nops=("@query-param";name="x" "@method" "@target-uri" "content-digest" "content-type");created=` + fmt.Sprint(t0.Unix()) + `;keyid="` + fuzzHMAC.ID + `";nonce="n";tag="nops-request"`,
		`nops=("@query-param";name=1);created=1;keyid="k";nonce="n";tag="nops-request"`,
		`nops=();created=1;keyid="k";nonce="n";tag="nops-request"`,
		`nops=(("a"));tag="nops-request"`, `nops=?0`, `a=(), b=()`, "", ",", `nops=("@method";req);tag="nops-request"`,
	} {
		f.Add(s, genuine.Header.Get("Signature"), genuine.Header.Get("Content-Digest"))
	}
	f.Add(in, `nops=:`, "sha-256=:")
	f.Add(in, `nops=("x")`, `sha-256=1`)
	f.Add(in, genuine.Header.Get("Signature"), `sha-512=:AAAA:, sha-256=:AAAA:`)

	v, err := reqsig.NewVerifier(fuzzLookup(), &reqsig.MemoryNonces{}, reqsig.Config{Now: func() time.Time { return t0 }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, sigInput, sig, digest string) {
		r := build()
		r.Header.Set("Signature-Input", sigInput)
		r.Header.Set("Signature", sig)
		r.Header.Set("Content-Digest", digest)
		var wire bytes.Buffer
		if err := r.Write(&wire); err != nil {
			return
		}
		sr, rbody, ok := readBack(&wire)
		if !ok || !bytes.Equal(rbody, body) {
			return // the fuzzed headers do not survive HTTP framing
		}
		_, err := v.Verify(context.Background(), sr, rbody)
		if err == nil {
			// Only a signature Sign made for this request verifies (and each nonce once).
			if !carriesSignatureOf(sr, genuine, edSigned) {
				t.Fatalf("accepted a signature Sign did not make:\nSignature-Input: %s\nSignature: %s", sigInput, sig)
			}
			return
		}
		e := errs.As(err)
		if e == nil || e.Code != errs.Unauthenticated {
			t.Fatalf("Verify error %v: want an unauthenticated refusal", err)
		}
	})
}

// carriesSignatureOf reports whether r's Signature holds the signature bytes of one of the
// genuine requests: a fuzzer cannot forge a signature, only move a genuine one around.
func carriesSignatureOf(r *http.Request, genuine ...*http.Request) bool {
	got, err := httpsfv.UnmarshalDictionary(r.Header.Values("Signature"))
	if err != nil {
		return false
	}
	for _, g := range genuine {
		want, _ := httpsfv.UnmarshalDictionary(g.Header.Values("Signature"))
		w, _ := want.Get(reqsig.Label)
		for _, name := range got.Names() {
			m, _ := got.Get(name)
			if item, ok := m.(httpsfv.Item); ok && bytes.Equal(toBytes(item.Value), toBytes(w.(httpsfv.Item).Value)) {
				return true
			}
		}
	}
	return false
}

func toBytes(v any) []byte {
	b, _ := v.([]byte)
	return b
}

// readBack reads a request from the wire as a server would, or reports that it cannot.
func readBack(wire *bytes.Buffer) (*http.Request, []byte, bool) {
	r, err := http.ReadRequest(bufio.NewReader(wire))
	if err != nil {
		return nil, nil, false
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, nil, false
	}
	return r, body, true
}

// FuzzSignVerify signs requests of arbitrary method, path, query, content type, body and
// nonce with the kernel's Signer, sends them over the wire and verifies them: whatever Sign
// accepts and HTTP carries must verify (the signer's and the verifier's views of the
// components agree), and must verify only once. It exercises the library's base builder on
// both sides. Seeds: testdata/fuzz/FuzzSignVerify and the values below.
func FuzzSignVerify(f *testing.F) {
	f.Add("POST", "/v1/invoke/echo", "a=1&b=2", "application/json", []byte(`{"a":1}`), "n-1", false)
	f.Add("GET", "/", "", "", []byte{}, "", true)
	f.Add("DELETE", "/a%2Fb/%20c", "q=%2F&&x", "text/plain; charset=utf-8", []byte("x"), "a b:\"c\"", false)
	f.Add("PATCH", "", "?", "", []byte("\x00\xff"), "~", true)
	f.Fuzz(func(t *testing.T, method, path, query, contentType string, body []byte, nonce string, ed bool) {
		target := "http://api.example.com" + path
		if query != "" {
			target += "?" + query
		}
		r, err := http.NewRequest(method, target, bytes.NewReader(body))
		if err != nil {
			return
		}
		if contentType != "" {
			r.Header.Set("Content-Type", contentType)
		}
		key := fuzzHMAC
		if ed {
			key = fuzzEd
		}
		if len(nonce) > reqsig.DefaultMaxNonceLen {
			nonce = nonce[:reqsig.DefaultMaxNonceLen]
		}
		if err := reqsig.Sign(r, body, key, t0, nonce); err != nil {
			return // e.g. a nonce that is not a structured-field string
		}
		var wire bytes.Buffer
		if err := r.Write(&wire); err != nil {
			return
		}
		sr, rbody, ok := readBack(&wire)
		if !ok || !bytes.Equal(rbody, body) || sr.Method != method || sr.Header.Get("Content-Type") != r.Header.Get("Content-Type") ||
			sr.Host != r.Host || sr.RequestURI != r.URL.RequestURI() {
			// net/http did not carry the request as signed (it cleans hosts, for one): what
			// arrives is another request, which must not verify.
			return
		}
		v, err := reqsig.NewVerifier(fuzzLookup(), &reqsig.MemoryNonces{}, reqsig.Config{Now: func() time.Time { return t0 }})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(context.Background(), sr, rbody); err != nil {
			t.Fatalf("Verify of a signed request: %v\n%s %s\nHost: %s\nSignature-Input: %s", err, sr.Method, sr.RequestURI, sr.Host, sr.Header.Get("Signature-Input"))
		}
		if _, err := v.Verify(context.Background(), sr, rbody); reqsig.RefusalCode(err) != reqsig.CodeReplay {
			t.Fatalf("second Verify: %v, want a replay refusal", err)
		}
	})
}

// FuzzParsePublicKey feeds ParsePublicKey arbitrary client text: it never panics, returns a
// 32-byte non-zero key or an invalid error naming the field, and never quotes the input.
// Seeds: testdata/fuzz/FuzzParsePublicKey.
func FuzzParsePublicKey(f *testing.F) {
	pub := fuzzEd.PrivateKey.Public().(ed25519.PublicKey)
	f.Add(base64.StdEncoding.EncodeToString(pub))
	f.Add("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=\n-----END PUBLIC KEY-----\n")
	f.Add("")
	// Every message ParsePublicKey can give: input that happens to be part of one is not quoted.
	var messages strings.Builder
	for _, text := range []string{"", strings.Repeat("A", 2000), "-----BEGIN", "-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----",
		"AAAA", base64.StdEncoding.EncodeToString(make([]byte, 32))} {
		_, err := reqsig.ParsePublicKey(text, "body.public_key")
		messages.WriteString(err.Error() + "\n")
	}
	f.Fuzz(func(t *testing.T, text string) {
		k, err := reqsig.ParsePublicKey(text, "body.public_key")
		if err != nil {
			e := errs.As(err)
			if e == nil || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Name != "body.public_key" {
				t.Fatalf("error %v: want an invalid error naming body.public_key", err)
			}
			if trimmed := strings.TrimSpace(text); len(trimmed) >= 4 && strings.Contains(e.Error(), trimmed) && !strings.Contains(messages.String(), trimmed) {
				t.Fatalf("error %q quotes the input", e.Error())
			}
			return
		}
		if len(k) != ed25519.PublicKeySize || bytes.Equal(k, make([]byte, ed25519.PublicKeySize)) {
			t.Fatalf("ParsePublicKey = %x", k)
		}
	})
}
