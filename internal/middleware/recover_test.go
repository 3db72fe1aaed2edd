package middleware_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/middleware"
)

func TestRecoverBeforeWrite(t *testing.T) {
	var logs logBuffer
	var ew errorRecorder
	h := middleware.Chain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		middleware.SetRoute(r.Context(), "/v1/boom")
		w.Header().Set("Content-Length", "5")
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Kept", "1")
		panic("database exploded: secret detail")
	}), middleware.RequestID(), middleware.WithRouteHolder(), middleware.Recover(logs.logger(), ew.write))

	req := httptest.NewRequest(http.MethodGet, "/v1/boom", nil)
	req.Header.Set("X-Request-ID", "rid-1")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)

	if rec.Code != http.StatusInternalServerError {
		t.Errorf("status = %d, want 500", rec.Code)
	}
	if strings.Contains(rec.Body.String(), "secret detail") {
		t.Errorf("panic value leaked to the client: %s", rec.Body)
	}
	got := ew.got()
	if len(got) != 1 {
		t.Fatalf("ErrorWriter called %d times, want 1", len(got))
	}
	e := errs.As(got[0])
	if e == nil || e.Code != errs.Internal || e.Message != "internal error" || e.Err != nil {
		t.Errorf("ErrorWriter got %#v, want a plain internal error", got[0])
	}
	wantHeaders := map[string]string{"Content-Length": "", "Content-Type": "application/problem+json", "X-Kept": "1"}
	gotHeaders := map[string]string{}
	for k := range wantHeaders {
		gotHeaders[k] = rec.Header().Get(k)
	}
	if diff := cmp.Diff(wantHeaders, gotHeaders); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}

	lines := logs.lines(t)
	if len(lines) != 1 {
		t.Fatalf("got %d log lines, want 1: %s", len(lines), logs.String())
	}
	l := lines[0]
	stack, _ := l["stack"].(string)
	delete(l, "stack")
	want := map[string]any{
		"level": "ERROR", "msg": "panic recovered", "request_id": "rid-1", "route": "/v1/boom",
		"panic": "database exploded: secret detail", "response_started": false,
	}
	if diff := cmp.Diff(want, l); diff != "" {
		t.Errorf("log line (-want +got):\n%s", diff)
	}
	if !strings.Contains(stack, "recover_test.go") {
		t.Errorf("stack does not show the panicking handler:\n%s", stack)
	}
}

func TestRecoverUnmatchedRoute(t *testing.T) {
	var logs logBuffer
	var ew errorRecorder
	h := middleware.Chain(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(errors.New("x")) }),
		middleware.WithRouteHolder(), middleware.Recover(logs.logger(), ew.write))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	if lines := logs.lines(t); len(lines) != 1 || lines[0]["route"] != "unmatched" || lines[0]["panic"] != "x" {
		t.Errorf("log = %s, want route unmatched and panic x", logs.String())
	}
}

func TestRecoverPassesThroughWithoutPanic(t *testing.T) {
	var logs logBuffer
	var ew errorRecorder
	h := middleware.Recover(logs.logger(), ew.write)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusTeapot || len(ew.got()) != 0 || logs.String() != "" {
		t.Errorf("status %d, errors %v, logs %q: want 418, none, none", rec.Code, ew.got(), logs.String())
	}
}

// servePanicking calls h and returns the value it panicked with.
func servePanicking(h http.Handler, w http.ResponseWriter, r *http.Request) (v any) {
	defer func() { v = recover() }()
	h.ServeHTTP(w, r)
	return nil
}

func TestRecoverAbortCases(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		logged  bool
	}{
		{"ErrAbortHandler is re-panicked untouched", func(http.ResponseWriter, *http.Request) {
			panic(http.ErrAbortHandler)
		}, false},
		{"wrapped ErrAbortHandler too", func(http.ResponseWriter, *http.Request) {
			panic(errors.Join(errors.New("client gone"), http.ErrAbortHandler))
		}, false},
		{"panic after the response started aborts it", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "partial")
			panic("late")
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logBuffer
			var ew errorRecorder
			h := middleware.Recover(logs.logger(), ew.write)(tt.handler)
			v := servePanicking(h, httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
			if err, ok := v.(error); !ok || !errors.Is(err, http.ErrAbortHandler) {
				t.Errorf("panicked with %v, want http.ErrAbortHandler", v)
			}
			if len(ew.got()) != 0 {
				t.Errorf("ErrorWriter called: %v", ew.got())
			}
			lines := logs.lines(t)
			if tt.logged != (len(lines) == 1) || (tt.logged && lines[0]["response_started"] != true) {
				t.Errorf("logs = %s, want logged=%v with response_started", logs.String(), tt.logged)
			}
		})
	}
}

// Over a real connection, a panic after the body started must not look like a complete response.
func TestRecoverLatePanicBreaksTheResponse(t *testing.T) {
	var logs logBuffer
	var ew errorRecorder
	srv := httptest.NewServer(middleware.Recover(logs.logger(), ew.write)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic("late")
	})))
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("reading the body of an aborted response succeeded; want an error")
	}
}
