package reqsig

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	httpsig "github.com/remitly-oss/httpsig-go"
)

// The library (httpsig-go v1.2.0) derives some components from fields of *http.Request in ways
// that differ from RFC 9421. Rather than building signature bases by hand, both the signer and
// the verifier hand the library a view of the request whose fields make its derivations come out
// as the RFC says. What the view corrects (pinned by TestDerivedComponents):
//
//   - @target-uri: the library writes scheme "://" Host URL.RawPath URL.RawQuery, which drops the
//     path (RawPath is usually empty) and the "?". Left alone, a signature "covering"
//     @target-uri would not cover the path at all. The view's RawPath is the escaped path
//     followed by "?" when there is a query, so the library writes the RFC's absolute URI.
//   - scheme: the library says https only when req.TLS is set. The server's scheme comes from
//     Config.Scheme (a kernel behind a TLS-terminating proxy is reached over https) or the
//     connection; the client's from its URL.
//   - @path: the library writes URL.Path, which Go has percent-decoded; the RFC wants the path as
//     sent. The view's Path is the escaped path ("/" when empty).
//   - @authority: the RFC wants it lower case without the scheme's default port (RFC 9110
//     §4.2.3); the view's Host is normalised so.
//   - field lines: the library refuses a covered field sent on several lines; the RFC joins
//     them with ", " (RFC 9421 §2.1), and so does the view. Signature-Input and Signature,
//     which the library reads with Header.Get (first line only), are joined the same way, which
//     is how RFC 9651 combines the lines of a structured field.

// view returns the request the library is given. header is not modified.
func view(ctx context.Context, method, scheme, host, escapedPath, rawQuery string, forceQuery bool, header http.Header, body []byte) *http.Request {
	if escapedPath == "" {
		escapedPath = "/"
	}
	raw := escapedPath
	if rawQuery != "" || forceQuery {
		raw += "?"
	}
	v := &http.Request{
		Method: method,
		Host:   authority(host, scheme),
		URL:    &url.URL{Path: escapedPath, RawPath: raw, RawQuery: rawQuery},
		Header: joined(header),
		Body:   http.NoBody,
	}
	if len(body) > 0 {
		v.Body = io.NopCloser(bytes.NewReader(body))
	}
	if scheme == "https" {
		v.TLS = &tls.ConnectionState{}
	}
	return v.WithContext(ctx)
}

// serverView is the view of a request the server received.
func serverView(ctx context.Context, r *http.Request, body []byte, scheme string) *http.Request {
	if scheme == "" {
		scheme = "http"
		if r.TLS != nil {
			scheme = "https"
		}
	}
	return view(ctx, r.Method, scheme, r.Host, r.URL.EscapedPath(), r.URL.RawQuery, r.URL.ForceQuery, r.Header, body)
}

// clientView is the view of a request a client is about to send.
func clientView(ctx context.Context, r *http.Request, body []byte) *http.Request {
	scheme := strings.ToLower(r.URL.Scheme)
	if scheme == "" {
		scheme = "http"
	}
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	return view(ctx, r.Method, scheme, host, r.URL.EscapedPath(), r.URL.RawQuery, r.URL.ForceQuery, r.Header, body)
}

// authority lower-cases host and drops the scheme's default port.
func authority(host, scheme string) string {
	h := strings.ToLower(host)
	switch {
	case scheme == "https" && strings.HasSuffix(h, ":443"):
		return strings.TrimSuffix(h, ":443")
	case scheme == "http" && strings.HasSuffix(h, ":80"):
		return strings.TrimSuffix(h, ":80")
	}
	return h
}

// joined returns h with the lines of every field joined by ", ": h itself when no field has
// several lines (the common case, which so costs no copy of every header; the library only
// reads the view's header), otherwise a copy.
func joined(h http.Header) http.Header {
	multi := false
	for _, vs := range h {
		if len(vs) > 1 {
			multi = true
			break
		}
	}
	if !multi {
		return h
	}
	out := make(http.Header, len(h))
	for k, vs := range h {
		if len(vs) > 1 {
			vs = []string{strings.Join(vs, ", ")}
		}
		out[k] = vs
	}
	return out
}

// fixedKey is the library's KeyFetcher for a key already looked up.
type fixedKey httpsig.KeySpec

func (k fixedKey) FetchByKeyID(context.Context, http.Header, string) (httpsig.KeySpecer, error) {
	return httpsig.KeySpec(k), nil
}

func (k fixedKey) Fetch(context.Context, http.Header, httpsig.MetadataProvider) (httpsig.KeySpecer, error) {
	return nil, errors.New("a signature without keyid is refused before the library sees it")
}

// allowedAlgorithms are the algorithms the library may verify: those of request keys.
var allowedAlgorithms = []httpsig.Algorithm{httpsig.Algo_HMAC_SHA256, httpsig.Algo_ED25519}

// libVerify has the library check the Content-Digest (when present) and the signature labelled
// label of the view v against spec. Everything else (coverage, parameters, time, nonce) is
// checked by Verify before; the library's own time checks are off (its clock cannot be set).
func libVerify(v *http.Request, label string, spec httpsig.KeySpec) error {
	ver, err := httpsig.NewVerifier(fixedKey(spec), httpsig.VerifyProfile{
		SignatureLabel:         label,
		AllowedAlgorithms:      allowedAlgorithms,
		DisableTimeEnforcement: true,
	})
	if err != nil {
		return err
	}
	_, err = ver.Verify(v)
	return err
}

// placeholder is the signature a signer puts under its label while asking the library for the
// signature base, and the secret it "verifies" it with.
var placeholder = []byte{0}

// signatureBase returns the signature base the library builds for the signature labelled label
// in the view v, the one it would verify. The library's Signer cannot be given the created time
// and the nonce (it reads the clock and draws its own), so a signer asks the verifier instead: in
// debug mode it reports the base it computed even when, as here, the placeholder signature does
// not verify. Signer and verifier thus build bases with the very same code.
func signatureBase(v *http.Request, label string) (string, error) {
	v = v.WithContext(httpsig.SetAddDebugInfo(v.Context()))
	ver, err := httpsig.NewVerifier(fixedKey{Algo: httpsig.Algo_HMAC_SHA256, Secret: placeholder}, httpsig.VerifyProfile{
		SignatureLabel:         label,
		DisableTimeEnforcement: true,
	})
	if err != nil {
		return "", err
	}
	res, err := ver.Verify(v)
	var se *httpsig.SignatureError
	if err != nil && !(errors.As(err, &se) && se.Code == httpsig.ErrSigVerification) {
		return "", err
	}
	if res.DebugInfo.SignatureBase == "" {
		return "", errors.New("the signature library did not report the signature base")
	}
	return res.DebugInfo.SignatureBase, nil
}
