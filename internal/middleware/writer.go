package middleware

import (
	"bufio"
	"io"
	"net"
	"net/http"

	"github.com/felixge/httpsnoop"
)

// responseState is what a middleware learns about the response written through the writer
// returned by observe. It belongs to one request and is read only after the inner handler
// returned (or panicked) on the same goroutine, so it needs no lock.
type responseState struct {
	status   int   // final status code; 0 until headers are written
	bytes    int64 // body bytes written
	hijacked bool
}

// started reports whether anything reached the client, after which no error response can be
// written any more.
func (s *responseState) started() bool { return s.status != 0 || s.hijacked }

// statusOr returns the final status, or def when the handler wrote nothing.
func (s *responseState) statusOr(def int) int {
	if s.status == 0 {
		return def
	}
	return s.status
}

func (s *responseState) implicitOK() {
	if s.status == 0 {
		s.status = http.StatusOK
	}
}

// observeOnce is observe for the middleware that watch every response (Metrics, Logging,
// Recover): the first of them in a request wraps the writer and records the wrapper and its
// state in the request's route holder; the next ones, handed that very wrapper, share its state
// instead of wrapping it again. They are adjacent in the server's chain, so every write reaches
// the one wrapper exactly as it reached the three before, at a third of the cost: each
// httpsnoop wrapper is a score of allocations and a layer of calls on every write. A writer
// other than the recorded one (another middleware wrapped it in between, or no holder) is
// wrapped as before.
func observeOnce(r *http.Request, w http.ResponseWriter) (http.ResponseWriter, *responseState) {
	h, _ := r.Context().Value(routeHolderKey{}).(*routeHolder)
	// httpsnoop's wrappers are pointers, so == is identity; against another dynamic type it is
	// false without comparing values.
	if h != nil && h.observed != nil && h.observed == w {
		return w, h.observedState
	}
	s := new(responseState)
	ww := observe(w, s)
	if h != nil && h.observed == nil {
		h.observed, h.observedState = ww, s
	}
	return ww, s
}

// observe wraps w so that s tracks the status and size of the response. httpsnoop keeps the
// optional interfaces of w (Flusher, Hijacker, io.ReaderFrom, ...) and Unwrap for
// http.ResponseController, which a hand-written wrapper would silently drop.
func observe(w http.ResponseWriter, s *responseState) http.ResponseWriter {
	return httpsnoop.Wrap(w, httpsnoop.Hooks{
		WriteHeader: func(next httpsnoop.WriteHeaderFunc) httpsnoop.WriteHeaderFunc {
			return func(code int) {
				next(code)
				// 1xx other than 101 are informational; the final status comes later.
				if s.status == 0 && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
					s.status = code
				}
			}
		},
		Write: func(next httpsnoop.WriteFunc) httpsnoop.WriteFunc {
			return func(b []byte) (int, error) {
				s.implicitOK()
				n, err := next(b)
				s.bytes += int64(n)
				return n, err
			}
		},
		WriteString: func(next httpsnoop.WriteStringFunc) httpsnoop.WriteStringFunc {
			return func(str string) (int, error) {
				s.implicitOK()
				n, err := next(str)
				s.bytes += int64(n)
				return n, err
			}
		},
		ReadFrom: func(next httpsnoop.ReadFromFunc) httpsnoop.ReadFromFunc {
			return func(src io.Reader) (int64, error) {
				s.implicitOK()
				n, err := next(src)
				s.bytes += n
				return n, err
			}
		},
		Flush: func(next httpsnoop.FlushFunc) httpsnoop.FlushFunc {
			return func() {
				s.implicitOK()
				next()
			}
		},
		FlushError: func(next httpsnoop.FlushErrorFunc) httpsnoop.FlushErrorFunc {
			return func() error {
				s.implicitOK()
				return next()
			}
		},
		Hijack: func(next httpsnoop.HijackFunc) httpsnoop.HijackFunc {
			return func() (net.Conn, *bufio.ReadWriter, error) {
				c, rw, err := next()
				if err == nil {
					s.hijacked = true
				}
				return c, rw, err
			}
		},
	})
}
