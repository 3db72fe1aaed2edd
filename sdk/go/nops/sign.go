package nops

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	httpsig "github.com/remitly-oss/httpsig-go"
)

// Request-key algorithms.
const (
	AlgHMACSHA256 = "hmac-sha256"
	AlgEd25519    = "ed25519"
)

// signatureTag is the tag of the signature the kernel checks; signatureLabel is the label this
// SDK gives it (the kernel selects by tag, not by label).
const (
	signatureTag   = "nops-request"
	signatureLabel = "nops"
)

// RequestKey is the client's half of a kernel request key (/v1/request-keys): its ID (`rk_…`,
// the signature's keyid) and, as Alg says, the HMAC secret or the Ed25519 private key.
type RequestKey struct {
	ID         string
	Alg        string             // AlgHMACSHA256 or AlgEd25519
	Secret     []byte             // hmac-sha256: the decoded 32 bytes (DecodeRequestSecret)
	PrivateKey ed25519.PrivateKey // ed25519
}

// String identifies the key only, so a key printed by mistake leaks nothing.
func (k RequestKey) String() string { return "request key " + k.ID }

// Format makes every fmt verb print String.
func (k RequestKey) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// DecodeRequestSecret decodes the HMAC secret the kernel returns (standard base64 of 32 bytes)
// into the key bytes. The HMAC key is the decoded bytes, never the text.
func DecodeRequestSecret(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("request key secret: %w", err)
	}
	if len(b) < 32 {
		return nil, fmt.Errorf("request key secret: %d bytes, want 32", len(b))
	}
	return b, nil
}

// signer signs requests with one request key through httpsig-go.
type signer struct{ key RequestKey }

func newSigner(k RequestKey) (*signer, error) {
	switch {
	case k.ID == "":
		return nil, errors.New("request key: ID required")
	case k.Alg == AlgHMACSHA256 && len(k.Secret) < 32:
		return nil, fmt.Errorf("request key %s: hmac-sha256 secret of %d bytes, want 32", k.ID, len(k.Secret))
	case k.Alg == AlgEd25519 && len(k.PrivateKey) != ed25519.PrivateKeySize:
		return nil, fmt.Errorf("request key %s: ed25519 private key required", k.ID)
	case k.Alg != AlgHMACSHA256 && k.Alg != AlgEd25519:
		return nil, fmt.Errorf("request key %s: algorithm %q is neither %s nor %s", k.ID, k.Alg, AlgHMACSHA256, AlgEd25519)
	}
	return &signer{key: k}, nil
}

// sign adds Content-Digest (with a body), Signature-Input and Signature to r, whose body is
// body. Each call draws a fresh nonce and takes created from the clock, so a retry is a new
// signature.
func (s *signer) sign(r *http.Request, body []byte) error {
	fields := []string{"@method", "@target-uri"}
	if len(body) > 0 {
		fields = append(fields, "content-digest")
	}
	if r.Header.Get("Content-Type") != "" {
		fields = append(fields, "content-type")
	}
	profile := httpsig.SigningProfile{
		Algorithm: httpsig.Algorithm(s.key.Alg),
		Digest:    httpsig.DigestSHA256,
		Fields:    httpsig.Fields(fields...),
		Metadata:  []httpsig.Metadata{httpsig.MetaCreated, httpsig.MetaKeyID, httpsig.MetaNonce, httpsig.MetaTag},
		Label:     signatureLabel,
		Nonce:     httpsig.NonceRandom32,
	}
	skey := httpsig.SigningKey{MetaKeyID: s.key.ID, MetaTag: signatureTag}
	switch s.key.Alg {
	case AlgHMACSHA256:
		skey.Secret = s.key.Secret
	case AlgEd25519:
		skey.Key = s.key.PrivateKey
	}
	v := signingView(r, body)
	if err := httpsig.Sign(v, profile, skey); err != nil {
		return fmt.Errorf("sign request with %s: %w", s.key.ID, err)
	}
	for _, h := range []string{"Content-Digest", "Signature-Input", "Signature"} {
		if val := v.Header.Get(h); val != "" {
			r.Header.Set(h, val)
		}
	}
	return nil
}

// signingView is the request handed to httpsig-go. The library (v1.2.0) derives @target-uri as
// scheme "://" Host URL.RawPath URL.RawQuery, so the view's RawPath is the escaped path followed
// by "?" when there is a query, which makes that the RFC's absolute URI; its scheme is https only
// with a TLS state, and the authority is lower case without the scheme's default port (RFC 9110
// §4.2.3), as the kernel reconstructs it.
func signingView(r *http.Request, body []byte) *http.Request {
	scheme := strings.ToLower(r.URL.Scheme)
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	host = strings.ToLower(host)
	switch {
	case scheme == "https":
		host = strings.TrimSuffix(host, ":443")
	case scheme == "http":
		host = strings.TrimSuffix(host, ":80")
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	raw := path
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		raw += "?"
	}
	v := &http.Request{
		Method: r.Method,
		Host:   host,
		URL:    &url.URL{Path: path, RawPath: raw, RawQuery: r.URL.RawQuery},
		Header: r.Header.Clone(),
		Body:   io.NopCloser(bytes.NewReader(body)),
	}
	if scheme == "https" {
		v.TLS = &tls.ConnectionState{}
	}
	return v.WithContext(context.Background())
}
