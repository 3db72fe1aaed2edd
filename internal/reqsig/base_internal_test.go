package reqsig

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestSignerReproducesRFC9421 builds the signature bases of RFC 9421 B.2.5 and B.2.6 with the
// signer's base builder (signatureBase over a client view) and signs them: bases and signatures
// must be the RFC's, byte for byte (HMAC-SHA256 and Ed25519 are deterministic). This pins the
// library's behaviour that Sign relies on, debug info included.
func TestSignerReproducesRFC9421(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile("testdata/rfc9421/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	secret, err := base64.StdEncoding.DecodeString(string(read("test-shared-secret")))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(read("test-key-ed25519.pem"))
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		label, file, base string
		sign              func(base []byte) []byte
	}{
		{"sig-b25", "b25_request_signed.txt", "b25_sigbase.txt", func(b []byte) []byte {
			m := hmac.New(sha256.New, secret)
			m.Write(b)
			return m.Sum(nil)
		}},
		{"sig-b26", "b26_request_signed.txt", "b26_sigbase.txt", func(b []byte) []byte {
			return ed25519.Sign(priv.(ed25519.PrivateKey), b)
		}},
	} {
		t.Run(tc.label, func(t *testing.T) {
			r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(read(tc.file))))
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(r.Body)
			if err != nil {
				t.Fatal(err)
			}
			want := r.Header.Get("Signature")
			base, err := signatureBase(clientView(context.Background(), r, body), tc.label)
			if err != nil {
				t.Fatalf("signatureBase: %v", err)
			}
			if wantBase := string(read(tc.base)); base != wantBase {
				t.Fatalf("signature base:\n%s\nwant:\n%s", base, wantBase)
			}
			got := tc.label + "=:" + base64.StdEncoding.EncodeToString(tc.sign([]byte(base))) + ":"
			if got != want {
				t.Fatalf("signature %s, want %s", got, want)
			}
		})
	}
}

// TestDerivedComponents pins how the view makes the library derive each component as RFC 9421
// §2.2 says (the RFC's own examples where it has one), on the client and the server side alike.
func TestDerivedComponents(t *testing.T) {
	const input = `x=("@method" "@target-uri" "@authority" "@path" "@query");created=1;keyid="k"`
	tests := []struct {
		name, url, host string
		want            []string
	}{
		{"RFC 2.2.2 example", "https://www.example.com/path?param=value", "", []string{
			`"@method": POST`, `"@target-uri": https://www.example.com/path?param=value`, `"@authority": www.example.com`,
			`"@path": /path`, `"@query": ?param=value`}},
		{"RFC 2.2.7 example", "https://www.example.com/path?param=value&foo=bar&baz=bat%2Dman", "", []string{
			`"@query": ?param=value&foo=bar&baz=bat%2Dman`}},
		{"no query", "http://www.example.com/path", "", []string{
			`"@target-uri": http://www.example.com/path`, `"@query": ?`}},
		{"empty query", "http://www.example.com/path?", "", []string{
			`"@target-uri": http://www.example.com/path?`, `"@query": ?`}},
		{"empty path", "https://www.example.com", "", []string{
			`"@target-uri": https://www.example.com/`, `"@path": /`}},
		{"escaped path", "https://www.example.com/a%2Fb%20c", "", []string{
			`"@target-uri": https://www.example.com/a%2Fb%20c`, `"@path": /a%2Fb%20c`}},
		{"default port and case", "https://WWW.Example.com:443/p", "", []string{
			`"@target-uri": https://www.example.com/p`, `"@authority": www.example.com`}},
		{"other port", "http://www.example.com:8080/p", "", []string{
			`"@target-uri": http://www.example.com:8080/p`, `"@authority": www.example.com:8080`}},
		{"Host header", "http://10.0.0.1/p", "api.example.com", []string{
			`"@target-uri": http://api.example.com/p`, `"@authority": api.example.com`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := http.NewRequest(http.MethodPost, tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.host != "" {
				r.Host = tt.host
			}
			r.Header.Set("Signature-Input", input)
			r.Header.Set("Signature", "x=:AA==:")
			client, err := signatureBase(clientView(context.Background(), r, nil), "x")
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range tt.want {
				if !strings.Contains(client+"\n", line+"\n") {
					t.Errorf("client base lacks %q:\n%s", line, client)
				}
			}
			// The server, receiving the request over the wire (TLS when the URL says https),
			// builds the same base.
			var wire bytes.Buffer
			if err := r.Write(&wire); err != nil {
				t.Fatal(err)
			}
			sr, err := http.ReadRequest(bufio.NewReader(&wire))
			if err != nil {
				t.Fatal(err)
			}
			server, err := signatureBase(serverView(context.Background(), sr, nil, strings.ToLower(r.URL.Scheme)), "x")
			if err != nil {
				t.Fatal(err)
			}
			if server != client {
				t.Errorf("server base:\n%s\nclient base:\n%s", server, client)
			}
		})
	}
}

// joined hands the library the request's own header when every field has one line (no copy per
// verification), and a joined copy, leaving the request alone, when a field has several.
func TestJoinedCopiesOnlyMultiLineHeaders(t *testing.T) {
	single := http.Header{"Content-Type": {"application/json"}, "X-Api-Key": {"k"}}
	if got := joined(single); reflect.ValueOf(got).Pointer() != reflect.ValueOf(single).Pointer() {
		t.Fatal("a header of single-line fields was copied")
	}
	multi := http.Header{"Accept": {"a/b", "c/d"}, "X-Api-Key": {"k"}}
	got := joined(multi)
	if reflect.ValueOf(got).Pointer() == reflect.ValueOf(multi).Pointer() {
		t.Fatal("a multi-line header was joined in place")
	}
	if got.Get("Accept") != "a/b, c/d" || len(multi["Accept"]) != 2 || got.Get("X-Api-Key") != "k" {
		t.Fatalf("joined %v from %v", got, multi)
	}
}
