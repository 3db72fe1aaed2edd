package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/egress"
	"github.com/nops-kernel/nops/internal/kernel"
	"github.com/nops-kernel/nops/internal/kernel/kerneltest"
	"github.com/nops-kernel/nops/internal/telemetry"
)

// tcpCounter is an HTTP agent on 127.0.0.1:0 that counts the TCP connections it accepts, so a
// test can show a destination was never contacted (not even a connect).
type tcpCounter struct {
	port    int
	accepts atomic.Int64
}

func startTCPCounter(t *testing.T) *tcpCounter {
	t.Helper()
	return serveCounting(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
}

// serveCounting serves h on 127.0.0.1:0, counting the TCP connections it accepts.
func serveCounting(t *testing.T, h http.Handler) *tcpCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &tcpCounter{port: ln.Addr().(*net.TCPAddr).Port}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				c.accepts.Add(1)
			}
		},
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	t.Cleanup(func() { _ = srv.Close(); wg.Wait() })
	return c
}

func (c *tcpCounter) url() string { return "http://127.0.0.1:" + strconv.Itoa(c.port) }

// allowListKeys makes an allow-list signing key pair.
func allowListKeys(t *testing.T) (skey, vkey string) {
	t.Helper()
	skey, vkey, err := egress.GenerateAllowListKey("e2e-ops")
	if err != nil {
		t.Fatal(err)
	}
	return skey, vkey
}

func writeSignedList(t *testing.T, path, skey, text string) []byte {
	t.Helper()
	signed, err := egress.SignAllowList([]byte(text), skey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".tmp", signed, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	return signed
}

// TestEgressSignedAllowList runs a kernel under a signed egress allow-list: an agent endpoint on
// the list is called; one the list no longer names is never contacted (no TCP connection), the
// call gets a 502 problem, the refusal is audited and counted, and the configured rollback
// deregisters the agent; a tampered new version of the file is refused (audited) and the loaded
// list stays; a properly signed new version is loaded on its own within the reload interval.
func TestEgressSignedAllowList(t *testing.T) {
	inside, outside := startTCPCounter(t), startTCPCounter(t)
	skey, vkey := allowListKeys(t)
	path := filepath.Join(t.TempDir(), "egress.allowlist")
	list := func(serial int, ports ...int) string {
		var ps []string
		for _, p := range ports {
			ps = append(ps, strconv.Itoa(p))
		}
		return fmt.Sprintf("serial: %d\nservices:\n  agents:\n    class: D1\n    on_violation: deregister_agent\n    allow:\n      - cidr: 127.0.0.1/32\n        ports: [%s]\n", serial, strings.Join(ps, ", "))
	}
	writeSignedList(t, path, skey, list(1, inside.port, outside.port))
	f := newFixture(t, func(c *config.Config) {
		c.Egress.AllowlistFile = path
		c.Egress.AllowlistKeys = vkey
		c.Egress.AllowlistReloadPeriod = config.Duration(100 * time.Millisecond)
	})
	k, admin := f.k, f.keys["ADMIN"]

	invokeAgent(t, k, admin, "inside", inside.url(), "cap.inside", nil)
	outsideID := invokeAgent(t, k, admin, "outside", outside.url(), "cap.outside", nil)
	resp, body := k.Do(t, "POST", "/v1/invoke/cap.inside", map[string]string{}, admin)
	mustStatus(t, resp, body, http.StatusOK)

	// Registration is refused for a port the list does not name, naming the field.
	resp, body = k.Do(t, "POST", "/v1/agents", map[string]any{
		"name": "unlisted", "version": "1.0.0", "endpoint": "http://127.0.0.1:1",
		"capabilities": []any{map[string]any{"name": "cap.unlisted"}},
	}, admin)
	p := wantProblem(t, resp, body, http.StatusBadRequest, "invalid", "")
	if len(p.Errors) != 1 || p.Errors[0].Name != "body.endpoint" || !strings.Contains(p.Errors[0].Reason, "not on the allow-list") {
		t.Fatalf("registration problem %+v", p.Errors)
	}

	// Serial 2 drops the outside agent's port: loaded by the poller on its own.
	writeSignedList(t, path, skey, list(2, inside.port))
	kerneltest.WaitFor(t, 10*time.Second, "allow-list serial 2 loaded", func() bool {
		return metricValue(t, k, "nops_egress_allowlist_serial") == 2
	})
	resp, body = k.Do(t, "POST", "/v1/invoke/cap.outside", map[string]string{}, admin)
	wantProblem(t, resp, body, http.StatusBadGateway, "bad_gateway", "not on the allow-list")
	if n := outside.accepts.Load(); n != 0 {
		t.Fatalf("the destination outside the allow-list was contacted: %d connections", n)
	}
	if v := metricValue(t, k, "nops_egress_refused_total", `service="agents"`, `tenant="`+f.tenant+`"`, `reason="not on the allow-list"`); v < 1 {
		t.Fatalf("nops_egress_refused_total = %v", v)
	}
	recs := auditRecords(t, k, f.admin, "tenant="+f.tenant+"&action=invoke.egress_refused")
	if len(recs.Items) == 0 || !strings.Contains(recs.Items[0].Decision.Reason, "not on the allow-list") {
		t.Fatalf("audit of the refusal: %+v", recs.Items)
	}
	// The rollback action: the offending agent is deregistered by the kernel, audited.
	kerneltest.WaitFor(t, 10*time.Second, "the offending agent deregistered", func() bool {
		resp, _ := k.Do(t, "GET", "/v1/agents/"+outsideID, nil, admin)
		return resp.StatusCode == http.StatusNotFound
	})
	recs = auditRecords(t, k, f.admin, "tenant="+f.tenant+"&action=agent.deregister")
	found := false
	for _, r := range recs.Items {
		if r.Resource == "agents/"+outsideID && strings.HasPrefix(r.Decision.Reason, "egress rollback: ") && r.Actor.Principal == "system" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no rollback record for %s: %+v", outsideID, recs.Items)
	}

	// A tampered serial 3 (it would open the outside port again) is refused; serial 2 stays.
	signed := writeSignedList(t, path, skey, list(3, inside.port))
	tampered := bytes.Replace(signed, []byte("ports: ["+strconv.Itoa(inside.port)), []byte("ports: ["+strconv.Itoa(outside.port)+", "+strconv.Itoa(inside.port)), 1)
	if err := os.WriteFile(path, tampered, 0o600); err != nil {
		t.Fatal(err)
	}
	kerneltest.WaitFor(t, 10*time.Second, "the tampered allow-list refused", func() bool {
		return metricValue(t, k, "nops_egress_allowlist_loads_total", `result="refused"`) >= 1
	})
	if v := metricValue(t, k, "nops_egress_allowlist_serial"); v != 2 {
		t.Fatalf("serial %v after a tampered file, want 2", v)
	}
	recs = auditRecords(t, k, f.admin, "action=egress.allowlist_load")
	var refused, loaded int
	for _, r := range recs.Items {
		switch {
		case !r.Decision.Allowed && strings.Contains(r.Decision.Reason, "changed after it was signed"):
			refused++
		case r.Decision.Allowed && strings.Contains(r.Decision.Reason, "serial 2"):
			loaded++
		}
	}
	if refused != 1 || loaded != 1 {
		t.Fatalf("allow-list audit: %d refused, %d loaded: %+v", refused, loaded, recs.Items)
	}
	// The agent cannot come back at the same endpoint: its registration is refused now.
	resp, body = k.Do(t, "POST", "/v1/agents", map[string]any{
		"name": "outside", "version": "1.0.0", "endpoint": outside.url(),
		"capabilities": []any{map[string]any{"name": "cap.outside"}},
	}, admin)
	wantProblem(t, resp, body, http.StatusBadRequest, "invalid", "")
	resp, body = k.Do(t, "POST", "/v1/invoke/cap.inside", map[string]string{}, admin)
	mustStatus(t, resp, body, http.StatusOK)
	if n := outside.accepts.Load(); n != 0 {
		t.Fatalf("the destination outside the allow-list was contacted: %d connections", n)
	}
}

// TestEgressTamperedAllowListRefusedAtStart: a kernel whose signed allow-list was changed after
// signing, or signed by an unknown key, does not start, and says why.
func TestEgressTamperedAllowListRefusedAtStart(t *testing.T) {
	skey, vkey := allowListKeys(t)
	_, otherV := allowListKeys(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "egress.allowlist")
	signed := writeSignedList(t, path, skey, "serial: 1\nservices:\n  agents:\n    class: D1\n    allow:\n      - cidr: 127.0.0.1/32\n")
	for _, c := range []struct {
		name, keys string
		file       []byte
		want       string
	}{
		{"tampered", vkey, bytes.Replace(signed, []byte("class: D1"), []byte("class: D4"), 1), "changed after it was signed"},
		{"unknown key", otherV, signed, "not signed by a trusted key"},
		{"unsigned", vkey, []byte("serial: 1\nservices:\n  agents:\n    class: D4\n"), "not a signed allow-list"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(path, c.file, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := config.Default()
			cfg.DataDir = t.TempDir()
			cfg.HTTP.Addr = "127.0.0.1:0"
			cfg.Egress.AllowlistFile = path
			cfg.Egress.AllowlistKeys = c.keys
			k, err := kernel.New(context.Background(), cfg, kernel.Options{Logger: telemetry.NewLogger(io.Discard, slog.LevelError), Out: io.Discard})
			if err == nil {
				_ = k.Close()
				t.Fatal("the kernel started with a refused allow-list")
			}
			if !errors.Is(err, egress.ErrAllowListSignature) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("start error %q, want the file and %q", err, c.want)
			}
		})
	}
}

// collector is an OTLP/HTTP collector stand-in: it counts TCP connections and trace exports.
type collector struct {
	*tcpCounter
	exports atomic.Int64
}

func startCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{}
	c.tcpCounter = serveCounting(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Method == http.MethodPost && r.URL.Path == "/v1/traces" {
			c.exports.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	return c
}

// TestEgressOTLPExporter: the trace exporter dials through the egress gate. Without a signed
// list it reaches the endpoint the operator configured; under a signed list that does not name
// the collector it never contacts it, and the refusals are counted and audited (once a minute).
// Not parallel: it sets the process's OTEL_* variables.
func TestEgressOTLPExporter(t *testing.T) {
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100") // export every 100 ms
	traffic := func(k *kerneltest.Kernel, auth string) {
		resp, body := k.Do(t, "GET", "/v1/agents", nil, auth)
		mustStatus(t, resp, body, http.StatusOK)
	}

	t.Run("configured endpoint", func(t *testing.T) {
		col := startCollector(t)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", col.url())
		f := newFixture(t)
		kerneltest.WaitFor(t, 20*time.Second, "spans exported to the configured collector", func() bool {
			traffic(f.k, f.keys["ADMIN"])
			return col.exports.Load() > 0
		})
	})

	t.Run("collector outside the signed list", func(t *testing.T) {
		col := startCollector(t)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", col.url())
		skey, vkey := allowListKeys(t)
		path := filepath.Join(t.TempDir(), "egress.allowlist")
		writeSignedList(t, path, skey, "serial: 1\nservices:\n  agents:\n    class: D1\n    allow:\n      - cidr: 127.0.0.0/8\n")
		f := newFixture(t, func(c *config.Config) {
			c.Egress.AllowlistFile, c.Egress.AllowlistKeys = path, vkey
		})
		kerneltest.WaitFor(t, 20*time.Second, "the exporter's connections refused", func() bool {
			traffic(f.k, f.keys["ADMIN"])
			return metricValue(t, f.k, "nops_egress_refused_total", `service="otlp"`, `reason="class not allowed"`) >= 2
		})
		if n := col.accepts.Load(); n != 0 {
			t.Fatalf("the collector outside the allow-list was contacted: %d connections", n)
		}
		recs := auditRecords(t, f.k, f.admin, "action=egress.refused")
		if len(recs.Items) != 1 || recs.Items[0].Decision.Allowed || recs.Items[0].Resource != "egress/otlp" {
			t.Fatalf("egress.refused audit (one per destination and minute): %+v", recs.Items)
		}
	})
}
