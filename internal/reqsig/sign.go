package reqsig

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/dunglas/httpsfv"
)

// Label is the label Sign gives its signature. Verify selects by tag, not by label, so a
// request may carry other signatures (of a gateway, say) under other labels.
const Label = "nops"

// SignerKey is the client's half of a request key: the key ID and, as its algorithm says, the
// HMAC secret (DecodeSecret of what Create or Rotate returned) or the Ed25519 private key.
type SignerKey struct {
	ID         string
	Alg        Algorithm
	Secret     []byte             // hmac-sha256
	PrivateKey ed25519.PrivateKey // ed25519
}

// String identifies the key only.
func (k SignerKey) String() string { return "request signer key " + k.ID }

// Format makes every fmt verb print String, so a SignerKey printed by mistake leaks nothing.
func (k SignerKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// NewNonce returns a random nonce: 16 bytes (128 bits) in unpadded base64url, 22 characters.
func NewNonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand never fails on supported platforms (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Sign signs r, whose body is body, as the kernel requires (see the package documentation):
// it sets Content-Digest (sha-256 of body) when body is not empty, then adds to Signature-Input
// and Signature a signature labelled Label covering @method, @target-uri, content-digest (with a
// body) and content-type (when r has that header), with parameters created (now), keyid, nonce
// (NewNonce when "") and tag=nops-request. r.Body is not read: the caller sets it to body. The
// @target-uri signed is r's URL with r.Host, if set, as authority; a client behind a proxy that
// rewrites either must sign the URL the kernel is configured to see.
func Sign(r *http.Request, body []byte, key SignerKey, now time.Time, nonce string) error {
	if err := key.validate(); err != nil {
		return err
	}
	if nonce == "" {
		nonce = NewNonce()
	}
	// Other signatures already in the request stay; a malformed one stops Sign before it changes
	// anything.
	inputs, err := dictionary(r.Header, "Signature-Input")
	if err != nil {
		return err
	}
	sigs, err := dictionary(r.Header, "Signature")
	if err != nil {
		return err
	}
	components := []string{"@method", "@target-uri"}
	if len(body) > 0 {
		sum := sha256.Sum256(body)
		digest := httpsfv.NewDictionary()
		digest.Add("sha-256", httpsfv.NewItem(sum[:]))
		value, err := httpsfv.Marshal(digest)
		if err != nil {
			return fmt.Errorf("sign request: content-digest: %w", err)
		}
		r.Header.Set("Content-Digest", value)
		components = append(components, "content-digest")
	}
	if r.Header.Get("Content-Type") != "" {
		components = append(components, "content-type")
	}
	list := httpsfv.InnerList{Params: httpsfv.NewParams()}
	for _, c := range components {
		list.Items = append(list.Items, httpsfv.NewItem(c))
	}
	list.Params.Add("created", now.Unix())
	list.Params.Add("keyid", key.ID)
	list.Params.Add("nonce", nonce)
	list.Params.Add("tag", Tag)

	inputs.Add(Label, list)
	sigs.Add(Label, httpsfv.NewItem(placeholder))
	if err := setDictionaries(r.Header, inputs, sigs); err != nil {
		return err
	}
	base, err := signatureBase(clientView(context.Background(), r, body), Label)
	if err != nil {
		return fmt.Errorf("sign request: signature base: %w", err)
	}
	var sig []byte
	switch key.Alg {
	case AlgHMACSHA256:
		mac := hmac.New(sha256.New, key.Secret)
		mac.Write([]byte(base))
		sig = mac.Sum(nil)
	case AlgEd25519:
		sig = ed25519.Sign(key.PrivateKey, []byte(base))
	}
	sigs.Add(Label, httpsfv.NewItem(sig))
	return setDictionaries(r.Header, inputs, sigs)
}

// SignatureBase returns the RFC 9421 signature base of the signature Sign put in r (body being
// r's body): the exact bytes that were signed. It is for clients debugging their own signer.
func SignatureBase(r *http.Request, body []byte) (string, error) {
	return signatureBase(clientView(context.Background(), r, body), Label)
}

func (k SignerKey) validate() error {
	switch {
	case k.ID == "":
		return errors.New("sign request: key id required")
	case k.Alg == AlgHMACSHA256 && len(k.Secret) < SecretLen:
		return fmt.Errorf("sign request: hmac-sha256 secret of %d bytes, want at least %d", len(k.Secret), SecretLen)
	case k.Alg == AlgEd25519 && len(k.PrivateKey) != ed25519.PrivateKeySize:
		return errors.New("sign request: ed25519 private key required")
	case !k.Alg.Valid():
		return fmt.Errorf("sign request: algorithm %q is neither %s nor %s", k.Alg, AlgHMACSHA256, AlgEd25519)
	}
	return nil
}

// dictionary parses the field name of h as a dictionary (empty when absent).
func dictionary(h http.Header, name string) (*httpsfv.Dictionary, error) {
	values := h.Values(name)
	if len(values) == 0 {
		return httpsfv.NewDictionary(), nil
	}
	d, err := httpsfv.UnmarshalDictionary(values)
	if err != nil {
		return nil, fmt.Errorf("sign request: existing %s: %w", name, err)
	}
	return d, nil
}

func setDictionaries(h http.Header, inputs, sigs *httpsfv.Dictionary) error {
	in, err := httpsfv.Marshal(inputs)
	if err != nil {
		return fmt.Errorf("sign request: signature-input: %w", err)
	}
	s, err := httpsfv.Marshal(sigs)
	if err != nil {
		return fmt.Errorf("sign request: signature: %w", err)
	}
	h.Set("Signature-Input", in)
	h.Set("Signature", s)
	return nil
}
