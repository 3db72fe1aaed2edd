package netguard_test

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nops-kernel/nops/internal/netguard"
)

func TestRecommendedTimeouts(t *testing.T) {
	got, err := netguard.RecommendedTimeouts(netguard.TimeoutConfig{})
	if err != nil {
		t.Fatal(err)
	}
	want := netguard.Timeouts{
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 0,
		IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10, MaxConcurrentStreams: 100,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	got, err = netguard.RecommendedTimeouts(netguard.TimeoutConfig{ReadHeaderTimeout: time.Second, ReadTimeout: 2 * time.Second, IdleTimeout: 3 * time.Second, MaxHeaderBytes: 1000, MaxConcurrentStreams: 10})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{WriteTimeout: time.Minute}
	got.Apply(srv)
	if srv.ReadHeaderTimeout != time.Second || srv.ReadTimeout != 2*time.Second || srv.WriteTimeout != 0 ||
		srv.IdleTimeout != 3*time.Second || srv.MaxHeaderBytes != 1000 || srv.HTTP2 == nil || srv.HTTP2.MaxConcurrentStreams != 10 {
		t.Errorf("Apply set %+v (HTTP2 %+v)", srv, srv.HTTP2)
	}

	for name, bad := range map[string]netguard.TimeoutConfig{
		"negative header timeout":       {ReadHeaderTimeout: -1},
		"negative header bytes":         {MaxHeaderBytes: -1},
		"read shorter than read header": {ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Second},
	} {
		if _, err := netguard.RecommendedTimeouts(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// guardedServer serves h on a guarded listener with the timeouts of cfg and returns the listener.
func guardedServer(t testing.TB, h http.Handler, lcfg netguard.Config, tcfg netguard.TimeoutConfig, m *meter) *netguard.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl, err := netguard.NewListener(ln, lcfg, netguard.Options{MeterProvider: m.mp})
	if err != nil {
		t.Fatal(err)
	}
	to, err := netguard.RecommendedTimeouts(tcfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	to.Apply(srv)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(gl) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return gl
}

// trickle writes s to c one byte per tick until s is exhausted, a write fails or stop closes,
// and returns how many bytes it wrote.
func trickle(c net.Conn, s string, every time.Duration, stop <-chan struct{}) (written int) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := range len(s) {
		select {
		case <-stop:
			return written
		case <-tick.C:
		}
		if _, err := c.Write([]byte{s[i]}); err != nil {
			return written
		}
		written++
	}
	return written
}

// waitClosed waits until the server closes c, failing on a timeout.
func waitClosed(t *testing.T, c net.Conn) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server did not close the connection (read %q)", b)
	}
	return b
}

// A slowloris client (request line at once, then a header byte every 20 ms, each arriving well
// within any per-read timeout) is cut at ReadHeaderTimeout, counted from the start of the
// request: trickling does not extend it. The handler never runs, and the slot is released.
func TestSlowlorisIsCutAtReadHeaderTimeout(t *testing.T) {
	const readHeaderTimeout = 300 * time.Millisecond
	var called atomic.Bool
	gl := guardedServer(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called.Store(true) }),
		netguard.Config{}, netguard.TimeoutConfig{ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: 10 * time.Second}, newMeter(t))

	c := dialFrom(t, "127.0.0.1", gl.Addr().String())
	start := time.Now()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: nops\r\nX"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the server to accept", func() bool { return gl.Open() == 1 })
	stop := make(chan struct{})
	var written int
	var wg sync.WaitGroup
	wg.Go(func() {
		written = trickle(c, "-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", 20*time.Millisecond, stop)
	})
	resp := waitClosed(t, c)
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	t.Logf("cut after %s, %d bytes trickled, response %q", elapsed, written, resp)
	if elapsed < readHeaderTimeout {
		t.Errorf("cut after %s, before ReadHeaderTimeout %s", elapsed, readHeaderTimeout)
	}
	if called.Load() {
		t.Error("the handler ran for an incomplete request")
	}
	eventually(t, "the cut connection's slot to be released", func() bool { return gl.Open() == 0 })
}

// A slow body (headers at once, then a body byte every 20 ms) is cut at ReadTimeout: the
// handler's read fails with a timeout.
func TestSlowBodyIsCutAtReadTimeout(t *testing.T) {
	readErr := make(chan error, 1)
	gl := guardedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
		w.WriteHeader(http.StatusRequestTimeout)
	}), netguard.Config{}, netguard.TimeoutConfig{ReadHeaderTimeout: 100 * time.Millisecond, ReadTimeout: 400 * time.Millisecond}, newMeter(t))

	c := dialFrom(t, "127.0.0.1", gl.Addr().String())
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: nops\r\nContent-Length: 1000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { trickle(c, string(make([]byte, 1000)), 20*time.Millisecond, stop) })
	defer func() { close(stop); wg.Wait() }()
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("body read error %v, want a deadline exceeded", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the slow body was never cut")
	}
	waitClosed(t, c)
}
