package middleware_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/errs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// errorRecorder is the ErrorWriter the tests inject: it writes the status of the error's code
// and a small JSON body, and remembers every error it was given.
type errorRecorder struct {
	mu   sync.Mutex
	errs []error
}

var statusOf = map[errs.Code]int{
	errs.NotFound: http.StatusNotFound,
	errs.TooLarge: http.StatusRequestEntityTooLarge,
	errs.Internal: http.StatusInternalServerError,
}

func (e *errorRecorder) write(w http.ResponseWriter, _ *http.Request, err error) {
	e.mu.Lock()
	e.errs = append(e.errs, err)
	e.mu.Unlock()
	status, ok := statusOf[errs.CodeOf(err)]
	if !ok {
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": string(errs.CodeOf(err))})
}

func (e *errorRecorder) got() []error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]error(nil), e.errs...)
}

// logBuffer is a JSON slog logger writing to a buffer, and the decoded lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(b.buf.Bytes()), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		delete(m, "time")
		out = append(out, m)
	}
	return out
}
