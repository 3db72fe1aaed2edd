package telemetry

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// promhttp reports collection failures through its ErrorLog; they must reach the kernel's log.
func TestPromLoggerWritesToSlog(t *testing.T) {
	var buf bytes.Buffer
	promLogger{slog.New(slog.NewJSONHandler(&buf, nil))}.Println("error gathering metrics:", "collector failed")
	out := buf.String()
	for _, want := range []string{`"level":"WARN"`, `"msg":"serve metrics"`, `"error":"error gathering metrics: collector failed"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %s", out, want)
		}
	}
}
