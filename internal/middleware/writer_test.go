package middleware

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// readerFromRecorder is a ResponseRecorder that also implements io.ReaderFrom, as the server's
// response writer does.
type readerFromRecorder struct{ *httptest.ResponseRecorder }

func (r readerFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	return io.Copy(r.ResponseRecorder, src)
}

func TestObserve(t *testing.T) {
	tests := []struct {
		name    string
		act     func(w http.ResponseWriter)
		want    responseState
		started bool
	}{
		{"nothing written", func(http.ResponseWriter) {}, responseState{}, false},
		{"explicit status", func(w http.ResponseWriter) { w.WriteHeader(http.StatusNotFound) }, responseState{status: 404}, true},
		{"first final status wins", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusConflict)
			w.WriteHeader(http.StatusOK)
		}, responseState{status: 409}, true},
		{"informational is not final", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusNoContent)
		}, responseState{status: 204}, true},
		{"switching protocols is final", func(w http.ResponseWriter) { w.WriteHeader(http.StatusSwitchingProtocols) }, responseState{status: 101}, true},
		{"write implies 200", func(w http.ResponseWriter) { _, _ = w.Write([]byte("abc")) }, responseState{status: 200, bytes: 3}, true},
		{"write string", func(w http.ResponseWriter) { _, _ = io.WriteString(w, "abcd") }, responseState{status: 200, bytes: 4}, true},
		{"read from", func(w http.ResponseWriter) {
			if _, ok := w.(io.ReaderFrom); !ok {
				panic("io.ReaderFrom lost")
			}
			_, _ = io.Copy(w, strings.NewReader("hello"))
		}, responseState{status: 200, bytes: 5}, true},
		{"flush implies 200", func(w http.ResponseWriter) { w.(http.Flusher).Flush() }, responseState{status: 200}, true},
		{"response controller flush", func(w http.ResponseWriter) {
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err)
			}
		}, responseState{status: 200}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s responseState
			tt.act(observe(readerFromRecorder{httptest.NewRecorder()}, &s))
			if diff := cmp.Diff(tt.want, s, cmp.AllowUnexported(responseState{})); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
			if s.started() != tt.started {
				t.Errorf("started = %v, want %v", s.started(), tt.started)
			}
		})
	}
}

func TestObserveHijack(t *testing.T) {
	result := make(chan responseState, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		var s responseState
		c, rw, err := observe(w, &s).(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		_, _ = rw.WriteString("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
		_ = rw.Flush()
		_ = c.Close()
		result <- s
	}))
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	s := <-result
	if !s.hijacked || !s.started() {
		t.Errorf("state %+v: want hijacked and started", s)
	}
}
