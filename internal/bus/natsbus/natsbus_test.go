package natsbus

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/testutil/faultproxy"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// syncBuffer collects log output written from the client's callback goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func open(t *testing.T, cfg Config) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// roundTrip creates a stream named by UniqueName, publishes one message, reads it back with a
// consumer and returns the stream name; the stream is deleted at cleanup unless keep is set.
func roundTrip(t *testing.T, js jetstream.JetStream, keep bool) string {
	t.Helper()
	ctx := ctxT(t)
	name := services.UniqueName("natsbus_test_")
	subject := name + ".events"
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if !keep {
		t.Cleanup(func() {
			if err := js.DeleteStream(context.Background(), name); err != nil {
				t.Errorf("delete stream %s: %v", name, err)
			}
		})
	}
	if _, err := js.Publish(ctx, subject, []byte("hello")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatalf("next message: %v", err)
	}
	if diff := cmp.Diff("hello", string(msg.Data())); diff != "" {
		t.Fatalf("message (-want +got):\n%s", diff)
	}
	if err := msg.Ack(); err != nil {
		t.Fatalf("ack: %v", err)
	}
	return name
}

func TestEmbeddedPingAndClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, Config{StoreDir: t.TempDir()}, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Ping(ctx); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Ping after Close = %v, want an unavailable error", err)
	}
	if b.srv.Running() {
		t.Fatal("embedded server still running after Close")
	}
}

func TestEmbeddedJetStream(t *testing.T) {
	b := open(t, Config{StoreDir: t.TempDir()})
	roundTrip(t, b.JetStream(), false)
}

func TestEmbeddedRestartKeepsStream(t *testing.T) {
	dir := t.TempDir()
	ctx := ctxT(t)
	first, err := Open(ctx, Config{StoreDir: dir}, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	name := roundTrip(t, first.JetStream(), true)
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	second := open(t, Config{StoreDir: dir})
	stream, err := second.JetStream().Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s after restart: %v", name, err)
	}
	msg, err := stream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatalf("message 1 after restart: %v", err)
	}
	if diff := cmp.Diff("hello", string(msg.Data)); diff != "" {
		t.Fatalf("message after restart (-want +got):\n%s", diff)
	}
}

func TestEmbeddedWithoutListenHasNoTCPPort(t *testing.T) {
	b := open(t, Config{StoreDir: t.TempDir()})
	if addr := b.srv.Addr(); addr != nil {
		t.Fatalf("embedded server listens on %s", addr)
	}
	if got := b.ClientURL(); got != "" {
		t.Fatalf("ClientURL = %q, want empty", got)
	}
}

func TestEmbeddedListenAcceptsTCPClients(t *testing.T) {
	b := open(t, Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	u := b.ClientURL()
	if u == "" || strings.HasSuffix(u, ":0") || strings.HasSuffix(u, ":4222") {
		t.Fatalf("ClientURL = %q, want a nats:// URL with the picked port", u)
	}
	tcp, err := nats.Connect(u, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("tcp client: %v", err)
	}
	defer tcp.Close()
	subject := services.UniqueName("natsbus_test.")
	sub, err := b.Conn().SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if err := tcp.Publish(subject, []byte("over tcp")); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("in-process subscriber: %v", err)
	}
	if string(msg.Data) != "over tcp" {
		t.Fatalf("got %q", msg.Data)
	}
}

func TestEmbeddedStartFailures(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no store dir", Config{}, "no store directory"},
		{"store dir is a file", Config{StoreDir: file}, "JetStream"},
		{"port taken", Config{StoreDir: t.TempDir(), Listen: taken.Addr().String()}, "listening"},
		{"bad listen address", Config{StoreDir: t.TempDir(), Listen: "127.0.0.1"}, "listen address"},
		{"bad listen port", Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:http"}, "invalid port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A long timeout: each failure must be reported as it happens, not after waiting.
			tt.cfg.ConnectTimeout = 30 * time.Second
			start := time.Now()
			b, err := Open(context.Background(), tt.cfg, testLogger(t))
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("failure took %s", d)
			}
		})
	}
}

func TestExternal(t *testing.T) {
	url, ns := services.NATSNamespace(t)
	b := open(t, Config{URL: url, Namespace: ns, Name: "natsbus-test", ConnectTimeout: 5 * time.Second})
	if err := b.Ping(ctxT(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if b.ClientURL() != "" {
		t.Fatalf("external bus ClientURL = %q, want empty", b.ClientURL())
	}
	roundTrip(t, b.JetStream(), false)
}

func TestExternalUnreachableFailsWithinTimeout(t *testing.T) {
	t.Parallel()
	for _, url := range []string{
		"nats://127.0.0.1:1",
		"nats://alice:s3cr3t-pw@127.0.0.1:1",
		"nats://t0k3n-secret@127.0.0.1:1",
	} {
		t.Run(url, func(t *testing.T) {
			t.Parallel()
			const timeout = time.Second
			start := time.Now()
			b, err := Open(context.Background(), Config{URL: url, ConnectTimeout: timeout}, testLogger(t))
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			d := time.Since(start)
			if d > timeout+2*time.Second {
				t.Fatalf("Open took %s, timeout %s", d, timeout)
			}
			for _, secret := range []string{"s3cr3t-pw", "t0k3n-secret"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error leaks a credential: %v", err)
				}
			}
			if !strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), "attempts") {
				t.Fatalf("error %q does not say what it tried", err)
			}
		})
	}
}

func TestExternalCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b, err := Open(ctx, Config{URL: "nats://127.0.0.1:1", ConnectTimeout: time.Minute}, testLogger(t))
	if err == nil {
		b.Close()
		t.Fatal("Open succeeded")
	}
}

// privateServer starts a NATS server owned by the test on a random port.
func privateServer(t *testing.T, opts server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(&opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("private server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

func TestExternalAuthFailureIsFastAndRedacted(t *testing.T) {
	srv := privateServer(t, server.Options{Username: "alice", Password: "right-password"})
	url := "nats://alice:wrong-password@" + srv.Addr().String()
	start := time.Now()
	b, err := Open(context.Background(), Config{URL: url, ConnectTimeout: 30 * time.Second}, testLogger(t))
	if err == nil {
		b.Close()
		t.Fatal("Open succeeded with a wrong password")
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("error %v is not an authorization error", err)
	}
	if strings.Contains(err.Error(), "wrong-password") {
		t.Fatalf("error leaks the password: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("authorization failure retried for %s", d)
	}
}

func TestExternalWithoutJetStreamFails(t *testing.T) {
	srv := privateServer(t, server.Options{})
	b, err := Open(context.Background(), Config{URL: "nats://" + srv.Addr().String(), ConnectTimeout: 5 * time.Second}, testLogger(t))
	if err == nil {
		b.Close()
		t.Fatal("Open succeeded against a server without JetStream")
	}
	if !strings.Contains(err.Error(), "jetstream is not usable") {
		t.Fatalf("error %q does not name JetStream", err)
	}
}

func TestExternalMalformedURLIsRedacted(t *testing.T) {
	for _, url := range []string{"nats://alice:pa%zzword@127.0.0.1:4222", "nats://", " , "} {
		t.Run(url, func(t *testing.T) {
			b, err := Open(context.Background(), Config{URL: url, ConnectTimeout: time.Second}, testLogger(t))
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if strings.Contains(err.Error(), "pa%zzword") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func TestReconnectsAndLogs(t *testing.T) {
	srv := privateServer(t, server.Options{JetStream: true, StoreDir: t.TempDir()})
	proxy := faultproxy.New(t, srv.Addr().String())
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	b, err := Open(context.Background(), Config{URL: "nats://" + proxy.Addr(), ConnectTimeout: 5 * time.Second}, logger)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()

	proxy.Cut()
	// A request in flight when the connection drops waits for its deadline, as in the readiness
	// checker: each Ping is bounded.
	waitFor(t, "Ping to fail", func() bool { return ping(b) != nil })
	// Not connected: Ping answers at once instead of waiting for a JetStream timeout.
	start := time.Now()
	if err := b.Ping(context.Background()); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("Ping during outage = %v, want unavailable", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("Ping during outage took %s", d)
	}
	waitFor(t, "disconnect log", func() bool { return strings.Contains(logs.String(), "level=WARN msg=\"nats connection lost\"") })

	proxy.Restore()
	waitFor(t, "Ping to succeed", func() bool { return ping(b) == nil })
	waitFor(t, "reconnect log", func() bool { return strings.Contains(logs.String(), "level=INFO msg=\"nats connection restored\"") })
}

func ping(b *Bus) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return b.Ping(ctx)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRedact(t *testing.T) {
	s, err := parseURLs("nats://alice:p%40ss@h1:4222, tok@h2:4222,h3")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("h1:4222,h2:4222,h3", s.display); diff != "" {
		t.Fatalf("display (-want +got):\n%s", diff)
	}
	cause := errors.New("failed nats://alice:p@ss@h1:4222 nats://alice:p%40ss@h1 nats://tok@h2")
	got := s.redact(cause)
	if diff := cmp.Diff("failed nats://alice:[redacted]@h1:4222 nats://alice:[redacted]@h1 nats://[redacted]@h2", got.Error()); diff != "" {
		t.Fatalf("redacted (-want +got):\n%s", diff)
	}
	if !errors.Is(got, cause) {
		t.Fatal("redacted error lost its cause")
	}
	plain := errors.New("nothing to hide")
	if s.redact(plain) != plain {
		t.Fatal("an error without secrets was rewrapped")
	}
}

// warnLogger logs warnings and errors to the test's output.
func warnLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}
