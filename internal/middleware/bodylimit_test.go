package middleware_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/middleware"
)

// countingReader fails the test's expectations if it is read when it must not be.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

func TestBodyLimit(t *testing.T) {
	const limit = 10
	tests := []struct {
		name          string
		body          string
		contentLength int64 // -1: unknown (chunked)
		wantStatus    int
		wantHandler   bool
		wantReadErr   bool
	}{
		{"declared length over the limit is refused unread", strings.Repeat("x", 11), 11, http.StatusRequestEntityTooLarge, false, false},
		{"exactly the limit", strings.Repeat("x", 10), 10, http.StatusOK, true, false},
		{"unknown length within the limit", "small", -1, http.StatusOK, true, false},
		{"unknown length over the limit fails on read", strings.Repeat("x", 50), -1, http.StatusOK, true, true},
		{"lying length fails on read", strings.Repeat("x", 50), 5, http.StatusOK, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ew errorRecorder
			called, readErr := false, error(nil)
			var read string
			h := middleware.BodyLimit(limit, ew.write)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				called = true
				b, err := io.ReadAll(r.Body)
				read, readErr = string(b), err
			}))
			body := &countingReader{r: strings.NewReader(tt.body)}
			req := httptest.NewRequest(http.MethodPost, "/", body)
			req.ContentLength = tt.contentLength
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			if rec.Code != tt.wantStatus || called != tt.wantHandler {
				t.Fatalf("status %d, handler called %v; want %d, %v", rec.Code, called, tt.wantStatus, tt.wantHandler)
			}
			if !tt.wantHandler {
				if body.reads != 0 {
					t.Errorf("body read %d times before refusing", body.reads)
				}
				if got := ew.got(); len(got) != 1 || !errs.Is(got[0], errs.TooLarge) {
					t.Errorf("ErrorWriter got %v, want one too_large error", got)
				}
				return
			}
			var mbe *http.MaxBytesError
			if tt.wantReadErr {
				if !errors.As(readErr, &mbe) || mbe.Limit != limit {
					t.Errorf("read error = %v, want *http.MaxBytesError with limit %d", readErr, limit)
				}
				return
			}
			if readErr != nil || read != tt.body {
				t.Errorf("read %q, %v; want %q", read, readErr, tt.body)
			}
		})
	}
}

func TestBodyLimitWithoutBody(t *testing.T) {
	var ew errorRecorder
	var body io.ReadCloser
	h := middleware.BodyLimit(1, ew.write)(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { body = r.Body }))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	if body != http.NoBody {
		t.Errorf("body = %T, want http.NoBody kept as is", body)
	}
}
