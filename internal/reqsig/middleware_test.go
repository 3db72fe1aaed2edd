package reqsig_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/reqsig"
)

// mwRecorder records what the middleware did.
type mwRecorder struct {
	errs    []error
	refused []string
	seen    *reqsig.Result
	body    []byte
}

func (m *mwRecorder) handler(t *testing.T, v *reqsig.Verifier, required func(*http.Request) bool) http.Handler {
	t.Helper()
	mw, err := v.Middleware(reqsig.MiddlewareOptions{
		WriteError: func(w http.ResponseWriter, _ *http.Request, err error) {
			m.errs = append(m.errs, err)
			w.WriteHeader(http.StatusUnauthorized)
		},
		Required: required,
		Refused:  func(_ *http.Request, err error) { m.refused = append(m.refused, reqsig.RefusalCode(err)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if res, ok := reqsig.FromContext(r.Context()); ok {
			m.seen = &res
		}
		m.body, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
}

func TestMiddleware(t *testing.T) {
	e := newVerifyEnv(t, reqsig.Config{})

	t.Run("refuses an unsigned request when required", func(t *testing.T) {
		var m mwRecorder
		w := httptest.NewRecorder()
		m.handler(t, e.v, nil).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://api.example.com/v1/agents", nil))
		if w.Code != http.StatusUnauthorized || len(m.errs) != 1 || reqsig.RefusalCode(m.errs[0]) != reqsig.CodeMissing ||
			len(m.refused) != 1 || m.seen != nil {
			t.Fatalf("code %d, errors %v, refused %v", w.Code, m.errs, m.refused)
		}
	})

	t.Run("refuses a bad signature even when not required", func(t *testing.T) {
		var m mwRecorder
		r, body := sign(t, postJSON, e.hmac, t0, "")
		r.Body = io.NopCloser(bytes.NewReader(append(body, '!')))
		w := httptest.NewRecorder()
		m.handler(t, e.v, func(*http.Request) bool { return false }).ServeHTTP(w, r)
		if w.Code != http.StatusUnauthorized || len(m.refused) != 1 || m.refused[0] != reqsig.CodeDigestMismatch {
			t.Fatalf("code %d, refused %v", w.Code, m.refused)
		}
	})

	t.Run("passes an unsigned request when not required", func(t *testing.T) {
		var m mwRecorder
		w := httptest.NewRecorder()
		m.handler(t, e.v, func(*http.Request) bool { return false }).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://api.example.com/", nil))
		if w.Code != http.StatusNoContent || m.seen != nil || len(m.errs) != 0 {
			t.Fatalf("code %d, seen %v, errors %v", w.Code, m.seen, m.errs)
		}
	})

	t.Run("hands the verified result and the whole body on", func(t *testing.T) {
		var m mwRecorder
		r, body := sign(t, postJSON, e.ed, t0, "")
		w := httptest.NewRecorder()
		m.handler(t, e.v, nil).ServeHTTP(w, r)
		if w.Code != http.StatusNoContent || m.seen == nil || m.seen.KeyID != e.ed.ID || !bytes.Equal(m.body, body) {
			t.Fatalf("code %d, result %+v, body %q, errors %v", w.Code, m.seen, m.body, m.errs)
		}
	})

	t.Run("an unreadable body is the body's error", func(t *testing.T) {
		var m mwRecorder
		r, _ := sign(t, postJSON, e.hmac, t0, "")
		r.Body = io.NopCloser(io.MultiReader(strings.NewReader("{"), errReader{}))
		w := httptest.NewRecorder()
		m.handler(t, e.v, nil).ServeHTTP(w, r)
		if len(m.errs) != 1 || !errors.Is(m.errs[0], errBroken) || len(m.refused) != 0 || errs.CodeOf(m.errs[0]) == errs.Unauthenticated {
			t.Fatalf("errors %v, refused %v", m.errs, m.refused)
		}
	})

	if _, err := e.v.Middleware(reqsig.MiddlewareOptions{}); err == nil {
		t.Fatal("Middleware without WriteError succeeded")
	}
}

var errBroken = errors.New("connection broken")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errBroken }
