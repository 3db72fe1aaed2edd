package middleware

import (
	"io"
	"log/slog"
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

// In one request under a route holder, Metrics, Logging and Recover wrap the writer once: the
// handler writes to the very writer the first of them made, and all three see its writes.
func TestObserveOnceSharesOneWrapper(t *testing.T) {
	var seen []http.ResponseWriter
	probe := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen = append(seen, w)
			next.ServeHTTP(w, r)
		})
	}
	var got responseState
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, w)
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, "short and stout")
		h, _ := r.Context().Value(routeHolderKey{}).(*routeHolder)
		got = *h.observedState
	})
	first := func(next http.Handler) http.Handler { // the first observer, as Metrics is
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ow, _ := observeOnce(r, w)
			next.ServeHTTP(ow, r)
		})
	}
	h := Chain(handler, WithRouteHolder(), first, probe, Logging(slog.New(slog.DiscardHandler)), probe, Recover(slog.New(slog.DiscardHandler), nil))
	h.ServeHTTP(readerFromRecorder{httptest.NewRecorder()}, httptest.NewRequest(http.MethodGet, "/", nil))
	if len(seen) != 3 || seen[0] != seen[1] || seen[1] != seen[2] {
		t.Fatalf("the writer was wrapped again after the first observer (%d writers seen)", len(seen))
	}
	if want := (responseState{status: http.StatusTeapot, bytes: 15}); got != want {
		t.Fatalf("shared state %+v, want %+v", got, want)
	}
}

// A writer other than the recorded wrapper (a middleware in between wrapped it), or no holder,
// is wrapped anew, so each observer still sees what reaches it.
func TestObserveOnceWrapsAForeignWriter(t *testing.T) {
	rewrap := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(struct{ http.ResponseWriter }{w}, r)
		})
	}
	for _, withHolder := range []bool{true, false} {
		var outer, inner *responseState
		var outerW, innerW http.ResponseWriter
		obs := func(dst *http.ResponseWriter, st **responseState) func(http.Handler) http.Handler {
			return func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					ow, s := observeOnce(r, w)
					*dst, *st = ow, s
					next.ServeHTTP(ow, r)
				})
			}
		}
		mws := []func(http.Handler) http.Handler{obs(&outerW, &outer), rewrap, obs(&innerW, &inner)}
		if withHolder {
			mws = append([]func(http.Handler) http.Handler{WithRouteHolder()}, mws...)
		}
		h := Chain(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) }), mws...)
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
		if outer == inner || outerW == innerW {
			t.Fatalf("holder %v: a foreign writer shared the first wrapper", withHolder)
		}
		if outer.status != http.StatusAccepted || inner.status != http.StatusAccepted {
			t.Fatalf("holder %v: statuses %d and %d, want 202 both", withHolder, outer.status, inner.status)
		}
	}
}
