package reqsig_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/reqsig"
)

// verifyEnv is a SQLite store with ten_a's hmac-sha256 and ed25519 keys and a verifier on it.
type verifyEnv struct {
	store  keyStore
	keys   *reqsig.Keys
	clock  *clock
	v      *reqsig.Verifier
	hmac   reqsig.SignerKey
	ed     reqsig.SignerKey
	hmacID string
}

func newVerifyEnv(t testing.TB, cfg reqsig.Config) *verifyEnv {
	t.Helper()
	s := openSQLite(t, "")
	seed(t, s)
	c := newClock(t0)
	keys := newKeys(t, s, c, reqsig.KeysOptions{})
	hk, hs := createHMAC(t, keys, "")
	_, es := createEd25519(t, keys)
	return &verifyEnv{store: s, keys: keys, clock: c, v: newVerifier(t, keys, s, c, cfg), hmac: hs, ed: es, hmacID: hk.ID}
}

func (e *verifyEnv) verify(r *http.Request, body []byte) (reqsig.Result, error) {
	return e.v.Verify(context.Background(), r, body)
}

// setInput replaces the Signature-Input of r.
func setInput(r *http.Request, v string) { r.Header.Set("Signature-Input", v) }

// TestVerifyRefuses alters a validly signed request in one way per case; each must be refused
// with its own reason, which never quotes the expected signature or digest.
func TestVerifyRefuses(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})
	id := e.hmacID
	otherDigest := func(r *http.Request, body *[]byte) {
		*body = []byte(`{"hello":"mallory"}`)
		sum := sha256.Sum256(*body)
		r.Header.Set("Content-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":")
	}
	tests := []struct {
		name   string
		req    request
		alter  func(r *http.Request, body *[]byte)
		code   string
		reason string
	}{
		// Headers absent or unparsable.
		{"missing Signature-Input", postJSON, func(r *http.Request, _ *[]byte) { r.Header.Del("Signature-Input") }, reqsig.CodeMissing, "missing Signature-Input"},
		{"missing Signature", postJSON, func(r *http.Request, _ *[]byte) { r.Header.Del("Signature") }, reqsig.CodeMissing, "missing Signature"},
		{"empty Signature-Input", postJSON, func(r *http.Request, _ *[]byte) { setInput(r, "") }, reqsig.CodeMissing, "missing Signature-Input"},
		{"unterminated inner list", postJSON, func(r *http.Request, _ *[]byte) { setInput(r, `nops=("@method"`) }, reqsig.CodeMalformed, "malformed Signature-Input"},
		{"not a dictionary", postJSON, func(r *http.Request, _ *[]byte) { setInput(r, `"just a string"`) }, reqsig.CodeMalformed, "malformed Signature-Input"},
		{"member not an inner list", postJSON, func(r *http.Request, _ *[]byte) { setInput(r, `nops=1;tag="nops-request"`) }, reqsig.CodeMalformed, "nops is not an inner list"},
		{"signature not a byte sequence", postJSON, func(r *http.Request, _ *[]byte) { r.Header.Set("Signature", `nops="abc"`) }, reqsig.CodeMalformed, "nops is not a byte sequence"},
		{"signature unparsable", postJSON, func(r *http.Request, _ *[]byte) { r.Header.Set("Signature", `nops=:!!!:`) }, reqsig.CodeMalformed, "malformed Signature"},
		{"no signature for the label", postJSON, func(r *http.Request, _ *[]byte) { r.Header.Set("Signature", `other=:AAAA:`) }, reqsig.CodeMissing, "missing Signature for label nops"},
		{"headers too long", postJSON, func(r *http.Request, _ *[]byte) { r.Header.Add("Signature", "x="+strings.Repeat("1", 9000)) }, reqsig.CodeMalformed, "exceed"},
		// Parameters.
		{"created not an integer", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri");created="yesterday";keyid=%q;nonce="n";tag="nops-request"`, id))
		}, reqsig.CodeMalformed, "created must be an integer"},
		{"keyid a token", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, `nops=("@method" "@target-uri");created=1;keyid=rk_x;nonce="n";tag="nops-request"`)
		}, reqsig.CodeMalformed, "keyid must be a string"},
		{"nonce a byte sequence", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri");created=1;keyid=%q;nonce=:AAAA:;tag="nops-request"`, id))
		}, reqsig.CodeMalformed, "nonce must be a string"},
		{"expires a decimal", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri");created=1;expires=1.5;keyid=%q;nonce="n";tag="nops-request"`, id))
		}, reqsig.CodeMalformed, "expires must be an integer"},
		{"unknown parameter", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri");created=1;keyid=%q;nonce="n";tag="nops-request";colour="red"`, id))
		}, reqsig.CodeMalformed, "unknown parameter colour"},
		{"keyid missing", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, `nops=("@method" "@target-uri");created=1;nonce="n";tag="nops-request"`)
		}, reqsig.CodeParameter, "keyid missing"},
		{"created missing", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri");keyid=%q;nonce="n";tag="nops-request"`, id))
		}, reqsig.CodeParameter, "created missing"},
		{"nonce missing", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri");created=1;keyid=%q;tag="nops-request"`, id))
		}, reqsig.CodeParameter, "nonce missing"},
		{"nonce too long", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri");created=1;keyid=%q;nonce=%q;tag="nops-request"`, id, strings.Repeat("n", 129)))
		}, reqsig.CodeMalformed, "nonce longer than 128 bytes"},
		{"tag missing", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri");created=1;keyid=%q;nonce="n"`, id))
		}, reqsig.CodeTag, "tag must be nops-request"},
		{"other tag", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri");created=1;keyid=%q;nonce="n";tag="web-bot-auth"`, id))
		}, reqsig.CodeTag, "tag must be nops-request"},
		{"unknown alg", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri");created=1;keyid=%q;nonce="n";tag="nops-request";alg="rot13"`, id))
		}, reqsig.CodeMalformed, "unknown alg"},
		// Components.
		{"@method not covered", getPlain, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@target-uri");created=%d;keyid=%q;nonce="n";tag="nops-request"`, t0.Unix(), id))
		}, reqsig.CodeNotCovered, "component @method not covered"},
		{"no target", getPlain, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method");created=%d;keyid=%q;nonce="n";tag="nops-request"`, t0.Unix(), id))
		}, reqsig.CodeNotCovered, "component @target-uri not covered"},
		{"@path not covered", getPlain, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@authority" "@query");created=%d;keyid=%q;nonce="n";tag="nops-request"`, t0.Unix(), id))
		}, reqsig.CodeNotCovered, "component @path not covered"},
		{"@query not covered", getPlain, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@authority" "@path");created=%d;keyid=%q;nonce="n";tag="nops-request"`, t0.Unix(), id))
		}, reqsig.CodeNotCovered, "component @query not covered"},
		{"content-digest not covered", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri" "content-type");created=%d;keyid=%q;nonce="n";tag="nops-request"`, t0.Unix(), id))
		}, reqsig.CodeNotCovered, "component content-digest not covered"},
		{"content-type not covered", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri" "content-digest");created=%d;keyid=%q;nonce="n";tag="nops-request"`, t0.Unix(), id))
		}, reqsig.CodeNotCovered, "component content-type not covered"},
		{"body without Content-Digest", postJSON, func(r *http.Request, _ *[]byte) { r.Header.Del("Content-Digest") }, reqsig.CodeMalformed, "covered field content-digest is not in the request"},
		{"covered field absent", getPlain, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri" "x-tenant");created=%d;keyid=%q;nonce="n";tag="nops-request"`, t0.Unix(), id))
		}, reqsig.CodeMalformed, "covered field x-tenant is not in the request"},
		{"@scheme", getPlain, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri" "@scheme");created=%d;keyid=%q;nonce="n";tag="nops-request"`, t0.Unix(), id))
		}, reqsig.CodeUnsupported, `component "@scheme" is not supported`},
		{"@status in a request", getPlain, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri" "@status");created=%d;keyid=%q;nonce="n";tag="nops-request"`, t0.Unix(), id))
		}, reqsig.CodeUnsupported, `component "@status" is not supported`},
		{"component parameter", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri" "content-digest" "content-type";sf);created=%d;keyid=%q;nonce="n";tag="nops-request"`, t0.Unix(), id))
		}, reqsig.CodeUnsupported, "parameters (sf) are not supported"},
		{"upper-case component", postJSON, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri" "Content-Digest" "content-type");created=%d;keyid=%q;nonce="n";tag="nops-request"`, t0.Unix(), id))
		}, reqsig.CodeMalformed, "must be lower case"},
		{"component twice", getPlain, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" "@target-uri" "@method");created=%d;keyid=%q;nonce="n";tag="nops-request"`, t0.Unix(), id))
		}, reqsig.CodeMalformed, "covered twice"},
		{"component not a string", getPlain, func(r *http.Request, _ *[]byte) {
			setInput(r, fmt.Sprintf(`nops=("@method" target);created=%d;keyid=%q;nonce="n";tag="nops-request"`, t0.Unix(), id))
		}, reqsig.CodeMalformed, "must be strings"},
		// Key and algorithm.
		{"unknown keyid", getPlain, func(r *http.Request, _ *[]byte) {
			setInput(r, strings.Replace(r.Header.Get("Signature-Input"), id, "rk_01jpaz8kq3n3c0r7f4d6t0x9zz", 1))
		}, reqsig.CodeUnknownKey, "unknown keyid"},
		{"malformed keyid", getPlain, func(r *http.Request, _ *[]byte) {
			setInput(r, strings.Replace(r.Header.Get("Signature-Input"), id, "../../etc/passwd", 1))
		}, reqsig.CodeUnknownKey, "unknown keyid"},
		{"alg of another algorithm", getPlain, func(r *http.Request, _ *[]byte) {
			setInput(r, r.Header.Get("Signature-Input")+`;alg="ed25519"`)
		}, reqsig.CodeAlgMismatch, "algorithm ed25519 does not match key " + id},
		// Each covered component altered.
		{"@method altered", postJSON, func(r *http.Request, _ *[]byte) { r.Method = http.MethodPut }, reqsig.CodeBadSignature, "signature does not verify"},
		{"@target-uri path altered", postJSON, func(r *http.Request, _ *[]byte) { r.URL.Path = "/v1/invoke/rm" }, reqsig.CodeBadSignature, "signature does not verify"},
		{"@target-uri query altered", postJSON, func(r *http.Request, _ *[]byte) { r.URL.RawQuery = "mode=slow&x=1" }, reqsig.CodeBadSignature, "signature does not verify"},
		{"@target-uri query dropped", postJSON, func(r *http.Request, _ *[]byte) { r.URL.RawQuery = "" }, reqsig.CodeBadSignature, "signature does not verify"},
		{"@target-uri authority altered", postJSON, func(r *http.Request, _ *[]byte) { r.Host = "evil.example.com" }, reqsig.CodeBadSignature, "signature does not verify"},
		{"@target-uri port added", postJSON, func(r *http.Request, _ *[]byte) { r.Host = "api.example.com:8443" }, reqsig.CodeBadSignature, "signature does not verify"},
		{"content-type altered", postJSON, func(r *http.Request, _ *[]byte) { r.Header.Set("Content-Type", "text/plain") }, reqsig.CodeBadSignature, "signature does not verify"},
		{"content-digest and body altered together", postJSON, otherDigest, reqsig.CodeBadSignature, "signature does not verify"},
		{"signature bytes altered", postJSON, func(r *http.Request, _ *[]byte) {
			r.Header.Set("Signature", "nops=:"+base64.StdEncoding.EncodeToString(make([]byte, 32))+":")
		}, reqsig.CodeBadSignature, "signature does not verify"},
		{"signature truncated", postJSON, func(r *http.Request, _ *[]byte) {
			r.Header.Set("Signature", "nops=:AAAA:")
		}, reqsig.CodeBadSignature, "signature does not verify"},
		// Body.
		{"body altered", postJSON, func(_ *http.Request, body *[]byte) { *body = []byte(`{"hello":"mallory"}`) }, reqsig.CodeDigestMismatch, "content-digest does not match the body"},
		{"body appended", postJSON, func(_ *http.Request, body *[]byte) { *body = append(*body, ' ') }, reqsig.CodeDigestMismatch, "content-digest does not match the body"},
		{"body dropped", postJSON, func(_ *http.Request, body *[]byte) { *body = nil }, reqsig.CodeDigestMismatch, "content-digest does not match the body"},
		{"unsupported digest", postJSON, func(r *http.Request, _ *[]byte) { r.Header.Set("Content-Digest", "md5=:AAAA:") }, reqsig.CodeDigest, "no sha-256 or sha-512"},
		{"digest unparsable", postJSON, func(r *http.Request, _ *[]byte) { r.Header.Set("Content-Digest", "sha-256=:!!:") }, reqsig.CodeDigest, "malformed Content-Digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, body := sign(t, tt.req, e.hmac, t0, "")
			expectedSig := r.Header.Get("Signature")
			expectedSig = expectedSig[strings.Index(expectedSig, ":")+1 : len(expectedSig)-1]
			sum := sha256.Sum256(body)
			expectedDigest := base64.StdEncoding.EncodeToString(sum[:])
			tt.alter(r, &body)
			_, err := e.verify(r, body)
			wantRefusal(t, err, tt.code, tt.reason, expectedSig, expectedDigest)
		})
	}
}

// TestVerifyTime checks the ±300 s window on created and the expires parameter.
func TestVerifyTime(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})
	for _, tt := range []struct {
		name   string
		offset time.Duration // verifier's clock minus created
		reason string
	}{
		{"301 s in the past", 301 * time.Second, "created is 301s in the past (allowed skew 300s)"},
		{"an hour in the past", time.Hour, "created is 3600s in the past (allowed skew 300s)"},
		{"301 s in the future", -301 * time.Second, "created is 301s in the future (allowed skew 300s)"},
		{"300.5 s in the past", 300*time.Second + 500*time.Millisecond, "created is 301s in the past"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, body := sign(t, postJSON, e.hmac, t0, "")
			e.clock.Set(t0.Add(tt.offset))
			_, err := e.verify(r, body)
			wantRefusal(t, err, reqsig.CodeSkew, tt.reason)
		})
	}
	for _, offset := range []time.Duration{299 * time.Second, 300 * time.Second, -299 * time.Second, -300 * time.Second, 0} {
		t.Run(fmt.Sprintf("accepted at %s", offset), func(t *testing.T) {
			r, body := sign(t, postJSON, e.hmac, t0, "")
			e.clock.Set(t0.Add(offset))
			if _, err := e.verify(r, body); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}

	t.Run("expires passed", func(t *testing.T) {
		e.clock.Set(t0)
		r, body := sign(t, getPlain, e.hmac, t0, "")
		r.Header.Set("Signature-Input", r.Header.Get("Signature-Input")+fmt.Sprintf(";expires=%d", t0.Add(-10*time.Second).Unix()))
		_, err := e.verify(r, body)
		wantRefusal(t, err, reqsig.CodeExpired, "the signature expired 10s ago")
	})
}

// TestVerifyKeyState refuses revoked and expired keys.
func TestVerifyKeyState(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})
	r, body := sign(t, getPlain, e.hmac, t0, "")
	if _, err := e.keys.Revoke(adminOf("ten_a"), e.hmac.ID); err != nil {
		t.Fatal(err)
	}
	_, err := e.verify(r, body)
	wantRefusal(t, err, reqsig.CodeKeyRevoked, "key "+e.hmac.ID+" is revoked")

	k, secret, err := e.keys.Create(adminOf("ten_a"), reqsig.CreateInput{Alg: reqsig.AlgHMACSHA256, ExpiresAt: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := reqsig.DecodeSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Set(t0.Add(2 * time.Minute))
	r, body = sign(t, getPlain, reqsig.SignerKey{ID: k.ID, Alg: reqsig.AlgHMACSHA256, Secret: raw}, t0.Add(2*time.Minute), "")
	_, err = e.verify(r, body)
	wantRefusal(t, err, reqsig.CodeKeyExpired, "key "+k.ID+" has expired")
}

// TestVerifyWrongKeyMaterial signs with material that is not the key's.
func TestVerifyWrongKeyMaterial(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})
	// The ed25519 key's ID with an HMAC secret: the key says ed25519, the signature is an HMAC.
	forged := reqsig.SignerKey{ID: e.ed.ID, Alg: reqsig.AlgHMACSHA256, Secret: e.hmac.Secret}
	r, body := sign(t, postJSON, forged, t0, "")
	_, err := e.verify(r, body)
	wantRefusal(t, err, reqsig.CodeBadSignature, "signature does not verify")
	// And it says so when the signer claims its algorithm.
	r, body = sign(t, postJSON, forged, t0, "")
	setInput(r, r.Header.Get("Signature-Input")+`;alg="hmac-sha256"`)
	_, err = e.verify(r, body)
	wantRefusal(t, err, reqsig.CodeAlgMismatch, "algorithm hmac-sha256 does not match key "+e.ed.ID)
	// Another key's secret under this key's ID.
	other := reqsig.SignerKey{ID: e.hmac.ID, Alg: reqsig.AlgHMACSHA256, Secret: bytes.Repeat([]byte{1}, 32)}
	r, body = sign(t, postJSON, other, t0, "")
	_, err = e.verify(r, body)
	wantRefusal(t, err, reqsig.CodeBadSignature, "signature does not verify")
}

// TestVerifyReplay: the same request twice is refused the second time, for both algorithms.
func TestVerifyReplay(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})
	for _, key := range []reqsig.SignerKey{e.hmac, e.ed} {
		t.Run(string(key.Alg), func(t *testing.T) {
			r, body := sign(t, postJSON, key, t0, "once-"+string(key.Alg))
			if _, err := e.verify(r, body); err != nil {
				t.Fatalf("first Verify: %v", err)
			}
			r2, body2 := sign(t, postJSON, key, t0, "once-"+string(key.Alg))
			_, err := e.verify(r2, body2)
			wantRefusal(t, err, reqsig.CodeReplay, "nonce already used")
			// Another nonce is another request.
			r3, body3 := sign(t, postJSON, key, t0, "twice-"+string(key.Alg))
			if _, err := e.verify(r3, body3); err != nil {
				t.Fatalf("Verify with a new nonce: %v", err)
			}
		})
	}
}

// TestVerifyRefusalsKeepNonces: a request refused before its nonce is claimed (here: a bad
// signature with someone else's nonce) leaves that nonce usable.
func TestVerifyRefusalsKeepNonces(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})
	forged := reqsig.SignerKey{ID: e.hmac.ID, Alg: reqsig.AlgHMACSHA256, Secret: bytes.Repeat([]byte{9}, 32)}
	r, body := sign(t, getPlain, forged, t0, "victim-nonce")
	_, err := e.verify(r, body)
	wantRefusal(t, err, reqsig.CodeBadSignature, "signature does not verify")
	r, body = sign(t, getPlain, e.hmac, t0, "victim-nonce")
	if _, err := e.verify(r, body); err != nil {
		t.Fatalf("the genuine request with the nonce a forgery carried: %v", err)
	}
}

// TestVerifyConcurrentReplay sends one signed request 16 times at once: exactly one passes.
func TestVerifyConcurrentReplay(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})
	r, body := sign(t, postJSON, e.ed, t0, "")
	var (
		wg       sync.WaitGroup
		accepted atomic.Int32
	)
	for range 16 {
		clone := r.Clone(context.Background())
		wg.Go(func() {
			_, err := e.verify(clone, body)
			switch {
			case err == nil:
				accepted.Add(1)
			case reqsig.RefusalCode(err) != reqsig.CodeReplay:
				t.Errorf("Verify: %v", err)
			}
		})
	}
	wg.Wait()
	if accepted.Load() != 1 {
		t.Fatalf("%d of 16 copies accepted, want 1", accepted.Load())
	}
}

// TestVerifyAccepts: what the kernel's own signer makes verifies, and the result names the key.
func TestVerifyAccepts(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})
	agentKey, agentSigner := createHMAC(t, e.keys, "agt_a")
	tests := []struct {
		name  string
		req   request
		key   reqsig.SignerKey
		agent string
	}{
		{"hmac POST with body", postJSON, e.hmac, ""},
		{"hmac GET", getPlain, e.hmac, ""},
		{"ed25519 POST with body", postJSON, e.ed, ""},
		{"ed25519 GET", getPlain, e.ed, ""},
		{"agent key", postJSON, agentSigner, agentKey.AgentID},
		{"POST without body", request{http.MethodPost, "http://api.example.com/v1/agents/agt_a/heartbeat", "", nil}, e.ed, ""},
		{"no query, root path", request{http.MethodGet, "http://api.example.com/", "", nil}, e.hmac, ""},
		{"empty query", request{http.MethodGet, "http://api.example.com/v1/agents?", "", nil}, e.hmac, ""},
		{"escaped path", request{http.MethodDelete, "http://api.example.com/v1/objects/a%2Fb%20c", "", nil}, e.hmac, ""},
		{"default port and upper-case host", request{http.MethodGet, "http://API.Example.COM:80/v1/agents", "", nil}, e.ed, ""},
		{"other port", request{http.MethodGet, "http://api.example.com:8080/v1/agents", "", nil}, e.ed, ""},
		{"IPv6 host", request{http.MethodGet, "http://[::1]:8080/v1/agents", "", nil}, e.ed, ""},
		{"unicode body", request{http.MethodPut, "http://api.example.com/v1/x", "application/json; charset=utf-8", []byte(`{"name":"déploiement ✓"}`)}, e.hmac, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, body := sign(t, tt.req, tt.key, t0, "")
			res, err := e.verify(r, body)
			if err != nil {
				t.Fatalf("Verify: %v\nSignature-Input: %s", err, r.Header.Get("Signature-Input"))
			}
			if res.KeyID != tt.key.ID || res.TenantID != "ten_a" || res.AgentID != tt.agent || res.Alg != tt.key.Alg ||
				!res.Created.Equal(t0) || res.Nonce == "" || res.Label != reqsig.Label || res.Previous {
				t.Fatalf("Result = %+v", res)
			}
		})
	}
}

// TestVerifyEscapedPathIsCovered: a path whose escaping differs decodes to the same path in Go;
// the signature covers the path as sent, so the other spelling is refused.
func TestVerifyEscapedPathIsCovered(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})
	r, body := sign(t, request{http.MethodDelete, "http://api.example.com/v1/objects/a%2Fb", "", nil}, e.hmac, t0, "")
	r.URL.RawPath = "" // "/v1/objects/a/b": same r.URL.Path
	if r.URL.Path != "/v1/objects/a/b" {
		t.Fatalf("decoded path %q", r.URL.Path)
	}
	_, err := e.verify(r, body)
	wantRefusal(t, err, reqsig.CodeBadSignature, "signature does not verify")
}

// TestVerifySelectsTaggedSignature: with other signatures in the request, the one tagged
// nops-request is verified, wherever it is; a request whose only signature is untagged is
// refused for its tag.
func TestVerifySelectsTaggedSignature(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})
	r, body := sign(t, postJSON, e.hmac, t0, "")
	// A gateway's signature first, on its own header lines.
	r.Header["Signature-Input"] = append([]string{`gw=("@method");created=1;keyid="gateway"`}, r.Header["Signature-Input"]...)
	r.Header["Signature"] = append([]string{`gw=:AAAA:`}, r.Header["Signature"]...)
	res, err := e.verify(r, body)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if res.Label != reqsig.Label {
		t.Fatalf("verified label %q", res.Label)
	}
	r, body = sign(t, postJSON, e.hmac, t0, "")
	r.Header.Set("Signature-Input", `gw=("@method");created=1;keyid="gateway"`)
	r.Header.Set("Signature", `gw=:AAAA:`)
	_, err = e.verify(r, body)
	wantRefusal(t, err, reqsig.CodeTag, "tag must be nops-request")
}

// TestVerifyMultiLineFields: a covered field sent on two lines is covered as RFC 9421 §2.1 says
// (joined with ", "), and so is the signature header split over lines.
func TestVerifyMultiLineFields(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})
	c, err := http.NewRequest(http.MethodGet, "http://api.example.com/v1/agents", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Header.Set("Content-Type", "text/plain")
	if err := reqsig.Sign(c, nil, e.hmac, t0, ""); err != nil {
		t.Fatal(err)
	}
	r, body := received(t, c)
	// Adding a second Content-Type line changes the covered value: refused.
	r.Header.Add("Content-Type", "text/html")
	_, err = e.verify(r, body)
	wantRefusal(t, err, reqsig.CodeBadSignature, "signature does not verify")
}

// TestVerifySchemeBehindProxy: a client signs https://…; the kernel behind a TLS-terminating
// proxy receives plain HTTP and must be told its scheme.
func TestVerifySchemeBehindProxy(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})
	behind := newVerifier(t, e.keys, e.store, e.clock, reqsig.Config{Scheme: "https"})
	req := request{http.MethodGet, "https://api.example.com/v1/agents", "", nil}
	r, body := sign(t, req, e.hmac, t0, "")
	_, err := e.verify(r, body)
	wantRefusal(t, err, reqsig.CodeBadSignature, "signature does not verify")
	if _, err := behind.Verify(context.Background(), r, body); err != nil {
		t.Fatalf("Verify with Scheme https: %v", err)
	}
	if _, err := reqsig.NewVerifier(e.keys, e.store, reqsig.Config{Scheme: "ftp"}); err == nil {
		t.Fatal("NewVerifier accepted scheme ftp")
	}
}

// TestVerifyRotation: the old secret or public key verifies during the grace period only.
func TestVerifyRotation(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})
	ctx := adminOf("ten_a")

	k, secret, err := e.keys.Rotate(ctx, e.hmac.ID, reqsig.RotateInput{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	newRaw, err := reqsig.DecodeSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(newRaw, e.hmac.Secret) || k.Generation != 2 {
		t.Fatalf("rotation kept the secret or generation %d", k.Generation)
	}
	newKey := reqsig.SignerKey{ID: k.ID, Alg: reqsig.AlgHMACSHA256, Secret: newRaw}

	edPub, edPriv := mustEd25519(t)
	if _, s, err := e.keys.Rotate(ctx, e.ed.ID, reqsig.RotateInput{Grace: time.Hour, PublicKey: edPub}); err != nil || s != "" {
		t.Fatalf("Rotate ed25519 = %q, %v", s, err)
	}
	newEd := reqsig.SignerKey{ID: e.ed.ID, Alg: reqsig.AlgEd25519, PrivateKey: edPriv}

	for _, tc := range []struct {
		name     string
		old, cur reqsig.SignerKey
	}{{"hmac-sha256", e.hmac, newKey}, {"ed25519", e.ed, newEd}} {
		t.Run(tc.name, func(t *testing.T) {
			// During the grace period: both work, the old one flagged.
			at := t0.Add(59 * time.Minute)
			e.clock.Set(at)
			r, body := sign(t, postJSON, tc.old, at, "")
			res, err := e.verify(r, body)
			if err != nil || !res.Previous {
				t.Fatalf("old material during grace: %+v, %v", res, err)
			}
			r, body = sign(t, postJSON, tc.cur, at, "")
			if res, err := e.verify(r, body); err != nil || res.Previous {
				t.Fatalf("new material: %+v, %v", res, err)
			}
			// After it: only the new one.
			at = t0.Add(61 * time.Minute)
			e.clock.Set(at)
			r, body = sign(t, postJSON, tc.old, at, "")
			_, err = e.verify(r, body)
			wantRefusal(t, err, reqsig.CodeBadSignature, "signature does not verify")
			r, body = sign(t, postJSON, tc.cur, at, "")
			if _, err := e.verify(r, body); err != nil {
				t.Fatalf("new material after grace: %v", err)
			}
		})
	}
}

// TestVerifyUnavailableStores: a failing key lookup or nonce store is not a refusal and not an
// acceptance.
func TestVerifyUnavailableStores(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})
	down := newVerifier(t, failingLookup{}, e.store, e.clock, reqsig.Config{})
	r, body := sign(t, getPlain, e.hmac, t0, "")
	if _, err := down.Verify(context.Background(), r, body); errs.CodeOf(err) != errs.Unavailable {
		t.Fatalf("Verify with a failing lookup: %v, want unavailable", err)
	}
	noNonces := newVerifier(t, e.keys, failingNonces{}, e.clock, reqsig.Config{})
	if _, err := noNonces.Verify(context.Background(), r, body); errs.CodeOf(err) != errs.Unavailable {
		t.Fatalf("Verify with a failing nonce store: %v, want unavailable", err)
	}
}

type failingLookup struct{}

func (failingLookup) Lookup(context.Context, string) (reqsig.Material, error) {
	return reqsig.Material{}, io.ErrUnexpectedEOF
}

type failingNonces struct{}

func (failingNonces) ClaimNonce(context.Context, string, string, time.Time, time.Time) (bool, error) {
	return false, io.ErrUnexpectedEOF
}

// TestVerifyMetrics: each verification is counted by outcome and reason.
func TestVerifyMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	e := newVerifyEnv(t, reqsig.Config{})
	v := newVerifier(t, e.keys, e.store, e.clock, reqsig.Config{MeterProvider: mp})
	r, body := sign(t, getPlain, e.hmac, t0, "")
	for range 2 { // accepted, then refused as a replay
		_, _ = v.Verify(context.Background(), r, body)
	}
	_, _ = newVerifier(t, failingLookup{}, e.store, e.clock, reqsig.Config{MeterProvider: mp}).Verify(context.Background(), r, body)

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "nops.reqsig.verifications" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				o, _ := dp.Attributes.Value("outcome")
				rs, _ := dp.Attributes.Value("reason")
				got[o.AsString()+"/"+rs.AsString()] += dp.Value
			}
		}
	}
	want := map[string]int64{"accepted/": 1, "refused/replay": 1, "error/internal_failure": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("verifications %v, want %v", got, want)
	}
}
