package tlsconf_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nops-kernel/nops/internal/tlsconf"
)

// logRecords decodes the JSON log lines with message msg.
func logRecords(t *testing.T, logs string, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		if l == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

const (
	generatedMsg = "generated a self-signed development TLS certificate; do not use it in production"
	reusedMsg    = "using the development TLS certificate; do not use it in production"
)

func newDevManager(t *testing.T, dataDir string, now time.Time) (*tlsconf.Manager, *telemetry) {
	t.Helper()
	tel := newTelemetry(t)
	tel.opts.Now = func() time.Time { return now }
	m, err := tlsconf.New(context.Background(), tlsconf.Config{DevCert: true, DataDir: dataDir}, tel.opts)
	if err != nil {
		t.Fatalf("New with the development certificate: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m, tel
}

func TestDevCertGeneratedAndReused(t *testing.T) {
	dataDir := t.TempDir()
	now := time.Now()
	m, tel := newDevManager(t, dataDir, now)

	certFile, keyFile := m.Files()
	if want := filepath.Join(dataDir, "tls", tlsconf.DevCertFile); certFile != want {
		t.Errorf("cert file %s, want %s", certFile, want)
	}
	for path, want := range map[string]os.FileMode{keyFile: 0o600, filepath.Dir(keyFile): 0o700} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	leaf := m.Certificate()
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if !slices.Equal(leaf.DNSNames, []string{"localhost"}) || len(leaf.IPAddresses) != 2 ||
		!leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !leaf.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("names %v %v, want localhost, 127.0.0.1, ::1", leaf.DNSNames, leaf.IPAddresses)
	}
	if d := leaf.NotAfter.Sub(now); d < 90*24*time.Hour-time.Second || d > 90*24*time.Hour+time.Second {
		t.Errorf("valid for %s after now, want 90 days", d)
	}
	gen := logRecords(t, tel.logs.String(), generatedMsg)
	if len(gen) != 1 || gen[0]["fingerprint_sha256"] != tlsconf.Fingerprint(leaf) || gen[0]["level"] != "WARN" {
		t.Errorf("generation log %v, want one warning with fingerprint %s", gen, tlsconf.Fingerprint(leaf))
	}
	if fp := tlsconf.Fingerprint(leaf); len(fp) != 95 || strings.ToUpper(fp) != fp {
		t.Errorf("fingerprint %q is not 32 upper-case hex pairs", fp)
	}

	// A client trusting exactly this certificate verifies it under each of its names.
	addr := serve(t, m)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	for _, name := range []string{"localhost", "127.0.0.1"} {
		if _, err := handshake(t, addr, pool, &tls.Config{ServerName: name}); err != nil {
			t.Errorf("handshake verifying %s: %v", name, err)
		}
	}

	// Restart: the stored certificate is reused.
	m2, tel2 := newDevManager(t, dataDir, now.Add(24*time.Hour))
	if m2.Certificate().SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("restart generated serial %s, want the stored %s reused", m2.Certificate().SerialNumber, leaf.SerialNumber)
	}
	if got := logRecords(t, tel2.logs.String(), reusedMsg); len(got) != 1 || got[0]["fingerprint_sha256"] != tlsconf.Fingerprint(leaf) {
		t.Errorf("reuse log %v, want one line with the fingerprint", got)
	}
	if got := logRecords(t, tel2.logs.String(), generatedMsg); len(got) != 0 {
		t.Errorf("restart logged a generation: %v", got)
	}
}

func TestDevCertReplaced(t *testing.T) {
	tests := []struct {
		name    string
		restart func(t *testing.T, dataDir string) time.Time // returns the clock of the restart
	}{
		{"7 days or less of validity left", func(_ *testing.T, _ string) time.Time {
			return time.Now().Add(83 * 24 * time.Hour)
		}},
		{"corrupted certificate", func(t *testing.T, dataDir string) time.Time {
			if err := os.WriteFile(filepath.Join(dataDir, "tls", tlsconf.DevCertFile), []byte("junk"), 0o644); err != nil {
				t.Fatal(err)
			}
			return time.Now()
		}},
		{"key removed", func(t *testing.T, dataDir string) time.Time {
			if err := os.Remove(filepath.Join(dataDir, "tls", tlsconf.DevKeyFile)); err != nil {
				t.Fatal(err)
			}
			return time.Now()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			m, _ := newDevManager(t, dataDir, time.Now())
			old := m.Certificate()
			now := tt.restart(t, dataDir)
			m2, tel := newDevManager(t, dataDir, now)
			if m2.Certificate().SerialNumber.Cmp(old.SerialNumber) == 0 {
				t.Fatal("the stored certificate was reused, want a new one")
			}
			if got := logRecords(t, tel.logs.String(), generatedMsg); len(got) != 1 {
				t.Errorf("generation logs %v, want one", got)
			}
			if got := logRecords(t, tel.logs.String(), "replacing the development TLS certificate"); len(got) != 1 || got[0]["reason"] == "" {
				t.Errorf("replacement logs %v, want one with a reason", got)
			}
		})
	}
}

// Named files win over DevCert: no development certificate is generated.
func TestFilesWinOverDevCert(t *testing.T) {
	l := newCA(t).issue(t, leafOpts{})
	f := newFiles(t)
	f.write(t, l.certPEM, l.keyPEM)
	dataDir := t.TempDir()
	m, err := tlsconf.New(context.Background(), tlsconf.Config{CertFile: f.cert, KeyFile: f.key, DevCert: true, DataDir: dataDir}, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Certificate().SerialNumber.Cmp(l.serial) != 0 {
		t.Errorf("serving serial %s, want the file's %s", m.Certificate().SerialNumber, l.serial)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "tls")); !os.IsNotExist(err) {
		t.Errorf("a development certificate directory was created: %v", err)
	}
}
