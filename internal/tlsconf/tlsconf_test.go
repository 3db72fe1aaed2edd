package tlsconf_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/nops-kernel/nops/internal/tlsconf"
)

func TestNewRefusesBadConfig(t *testing.T) {
	ca := newCA(t)
	good := ca.issue(t, leafOpts{})
	expired := ca.issue(t, leafOpts{notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)})
	other := ca.issue(t, leafOpts{})
	tests := []struct {
		name     string
		cfg      func(f files) tlsconf.Config
		setup    func(t *testing.T, f files)
		wantErr  string
		noOutput bool
	}{
		{"nothing configured", func(files) tlsconf.Config { return tlsconf.Config{} }, nil, "no certificate", false},
		{"cert without key", func(f files) tlsconf.Config { return tlsconf.Config{CertFile: f.cert} }, nil, "set together", false},
		{"key without cert", func(f files) tlsconf.Config { return tlsconf.Config{KeyFile: f.key} }, nil, "set together", false},
		{"dev cert without data dir", func(files) tlsconf.Config { return tlsconf.Config{DevCert: true} }, nil, "data directory", false},
		{"negative interval", func(f files) tlsconf.Config {
			return tlsconf.Config{CertFile: f.cert, KeyFile: f.key, ReloadInterval: -time.Second}
		}, nil, "negative", false},
		{"missing files", func(f files) tlsconf.Config { return tlsconf.Config{CertFile: f.cert, KeyFile: f.key} }, nil, "no such file", false},
		{"expired certificate", func(f files) tlsconf.Config { return tlsconf.Config{CertFile: f.cert, KeyFile: f.key} },
			func(t *testing.T, f files) { f.write(t, expired.certPEM, expired.keyPEM) }, "expired", false},
		{"mismatched key", func(f files) tlsconf.Config { return tlsconf.Config{CertFile: f.cert, KeyFile: f.key} },
			func(t *testing.T, f files) { f.write(t, good.certPEM, other.keyPEM) }, "does not match", false},
		{"garbage", func(f files) tlsconf.Config { return tlsconf.Config{CertFile: f.cert, KeyFile: f.key} },
			func(t *testing.T, f files) { f.write(t, []byte("not pem"), good.keyPEM) }, "parse", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFiles(t)
			if tt.setup != nil {
				tt.setup(t, f)
			}
			m, err := tlsconf.New(context.Background(), tt.cfg(f), tlsconf.Options{})
			if err == nil {
				_ = m.Close()
				t.Fatal("New succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error leaks key material: %q", err)
			}
		})
	}
}

// The protocol policy, refusals first: old versions, CBC suites and static RSA key exchange are
// refused; TLS 1.2 AEAD suites with ECDHE and TLS 1.3 are accepted. Each refusal has an accepted
// twin differing only in the refused parameter, so the refusal is the policy's and not an
// accident of the test.
func TestProtocolPolicy(t *testing.T) {
	ca := newCA(t)
	for _, keyType := range []string{"ecdsa", "rsa"} {
		t.Run(keyType, func(t *testing.T) {
			l := ca.issue(t, leafOpts{rsa: keyType == "rsa"})
			f := newFiles(t)
			f.write(t, l.certPEM, l.keyPEM)
			m, err := tlsconf.New(context.Background(), tlsconf.Config{CertFile: f.cert, KeyFile: f.key}, tlsconf.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = m.Close() })
			addr := serve(t, m)

			gcm128, gcm256, chacha := tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
			cbc := []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}
			if keyType == "rsa" {
				gcm128, gcm256, chacha = tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
				cbc = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256}
			}
			refused := []struct {
				name string
				cfg  *tls.Config
			}{
				{"TLS 1.0", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10}},
				{"TLS 1.1", &tls.Config{MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11}},
				{"TLS 1.1 with an AEAD suite offered", &tls.Config{MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11, CipherSuites: []uint16{gcm128}}},
				{"TLS 1.2 CBC suites", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: cbc}},
			}
			if keyType == "rsa" {
				refused = append(refused, struct {
					name string
					cfg  *tls.Config
				}{"TLS 1.2 static RSA key exchange with GCM", &tls.Config{MaxVersion: tls.VersionTLS12,
					CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_GCM_SHA384}}})
			}
			for _, tc := range refused {
				t.Run("refused/"+tc.name, func(t *testing.T) {
					st, err := handshake(t, addr, ca.pool, tc.cfg)
					if err == nil {
						t.Fatalf("handshake succeeded with version %x suite %s, want it refused",
							st.Version, tls.CipherSuiteName(st.CipherSuite))
					}
					t.Logf("refused: %v", err)
				})
			}

			accepted := []struct {
				name        string
				cfg         *tls.Config
				wantVersion uint16
				wantSuite   uint16 // 0: any
			}{
				{"TLS 1.2 AES-128-GCM", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{gcm128}}, tls.VersionTLS12, gcm128},
				{"TLS 1.2 AES-256-GCM", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{gcm256}}, tls.VersionTLS12, gcm256},
				{"TLS 1.2 ChaCha20-Poly1305", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{chacha}}, tls.VersionTLS12, chacha},
				{"TLS 1.2 with CBC offered too picks AEAD", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: append(append([]uint16(nil), cbc...), gcm128)}, tls.VersionTLS12, gcm128},
				{"TLS 1.2 over P-256", &tls.Config{MaxVersion: tls.VersionTLS12, CurvePreferences: []tls.CurveID{tls.CurveP256}}, tls.VersionTLS12, 0},
				{"TLS 1.3", &tls.Config{MinVersion: tls.VersionTLS13}, tls.VersionTLS13, 0},
				{"client defaults", &tls.Config{}, tls.VersionTLS13, 0},
			}
			for _, tc := range accepted {
				t.Run("accepted/"+tc.name, func(t *testing.T) {
					st, err := handshake(t, addr, ca.pool, tc.cfg)
					if err != nil {
						t.Fatalf("handshake: %v", err)
					}
					if st.Version != tc.wantVersion || (tc.wantSuite != 0 && st.CipherSuite != tc.wantSuite) {
						t.Errorf("negotiated version %x suite %s, want %x %s", st.Version, tls.CipherSuiteName(st.CipherSuite),
							tc.wantVersion, tls.CipherSuiteName(tc.wantSuite))
					}
				})
			}

			t.Run("refused/TLS 1.2 over P-384 only", func(t *testing.T) {
				if _, err := handshake(t, addr, ca.pool, &tls.Config{MaxVersion: tls.VersionTLS12, CurvePreferences: []tls.CurveID{tls.CurveP384}}); err == nil {
					t.Error("handshake over P-384 succeeded, want it refused (X25519 and P-256 only)")
				}
			})
			t.Run("accepted/ALPN h2", func(t *testing.T) {
				st, err := handshake(t, addr, ca.pool, &tls.Config{NextProtos: []string{"h2", "http/1.1"}})
				if err != nil || st.NegotiatedProtocol != "h2" {
					t.Errorf("ALPN %q, err %v; want h2", st.NegotiatedProtocol, err)
				}
			})
		})
	}
}

func TestTLSConfigPolicy(t *testing.T) {
	f := newFiles(t)
	l := newCA(t).issue(t, leafOpts{})
	f.write(t, l.certPEM, l.keyPEM)
	m, err := tlsconf.New(context.Background(), tlsconf.Config{CertFile: f.cert, KeyFile: f.key}, tlsconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.TLSConfig()
	if c.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x, want TLS 1.2", c.MinVersion)
	}
	insecure := map[uint16]bool{}
	for _, s := range tls.InsecureCipherSuites() {
		insecure[s.ID] = true
	}
	for _, id := range c.CipherSuites {
		name := tls.CipherSuiteName(id)
		if insecure[id] || !strings.HasPrefix(name, "TLS_ECDHE_") || !(strings.Contains(name, "_GCM_") || strings.Contains(name, "CHACHA20_POLY1305")) {
			t.Errorf("cipher suite %s is not an ECDHE AEAD suite", name)
		}
	}
	if len(c.CipherSuites) != 6 {
		t.Errorf("got %d suites, want the 6 ECDHE AEAD suites", len(c.CipherSuites))
	}
	if got := strings.Join(c.NextProtos, ","); got != "h2,http/1.1" {
		t.Errorf("NextProtos %q", got)
	}
	// Each call is a fresh value the caller may modify.
	c.MinVersion = tls.VersionTLS10
	if m.TLSConfig().MinVersion != tls.VersionTLS12 {
		t.Error("modifying one TLSConfig changed the next")
	}
}

// getOverConn does a GET with client and reports whether it reused a connection, and the
// serial of the certificate that connection was handshaked with.
func getOverConn(t *testing.T, client *http.Client, url string) (reused bool, serial string) {
	t.Helper()
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET over the open connection: %v", err)
	}
	defer resp.Body.Close()
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "ok" {
		t.Fatalf("body %q, %v", b, err)
	}
	return reused, resp.TLS.PeerCertificates[0].SerialNumber.String()
}

func newClient(t *testing.T, pool *x509.CertPool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// Hot reload through Reload (SIGHUP): an open connection keeps working with its certificate, a
// new handshake gets the new one; broken replacements are refused and the good one keeps being
// served.
func TestReload(t *testing.T) {
	ca := newCA(t)
	a, b := ca.issue(t, leafOpts{}), ca.issue(t, leafOpts{})
	f := newFiles(t)
	f.write(t, a.certPEM, a.keyPEM)
	tel := newTelemetry(t)
	ctx := context.Background()
	m, err := tlsconf.New(ctx, tlsconf.Config{CertFile: f.cert, KeyFile: f.key}, tel.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	addr := serve(t, m)
	url := "https://" + addr + "/"

	open := newClient(t, ca.pool)
	if _, serial := getOverConn(t, open, url); serial != a.serial.String() {
		t.Fatalf("served serial %s, want %s", serial, a.serial)
	}

	// Unchanged content: nothing happens.
	if err := m.Reload(ctx); err != nil {
		t.Fatalf("Reload of unchanged files: %v", err)
	}
	if got := tel.reloads(t); len(got) != 0 {
		t.Errorf("reloads %v after an unchanged reload, want none", got)
	}

	f.write(t, b.certPEM, b.keyPEM)
	if err := m.Reload(ctx); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	reused, serial := getOverConn(t, open, url)
	if !reused || serial != a.serial.String() {
		t.Errorf("open connection: reused %v serial %s; want the same connection with serial %s", reused, serial, a.serial)
	}
	if got := servedSerial(t, addr, ca.pool); got.Cmp(b.serial) != 0 {
		t.Errorf("new handshake got serial %s, want %s", got, b.serial)
	}
	if _, serial := getOverConn(t, newClient(t, ca.pool), url); serial != b.serial.String() {
		t.Errorf("new HTTP client got serial %s, want %s", serial, b.serial)
	}
	if m.Certificate().SerialNumber.Cmp(b.serial) != 0 {
		t.Errorf("Certificate() serial %s, want %s", m.Certificate().SerialNumber, b.serial)
	}

	c := ca.issue(t, leafOpts{})
	expired := ca.issue(t, leafOpts{notBefore: time.Now().Add(-3 * time.Hour), notAfter: time.Now().Add(-time.Minute)})
	future := ca.issue(t, leafOpts{notBefore: time.Now().Add(time.Hour), notAfter: time.Now().Add(2 * time.Hour)})
	broken := []struct {
		name          string
		certPEM, key  []byte
		removeKeyFile bool
		wantErr       string
	}{
		{"mismatched key", c.certPEM, a.keyPEM, false, "does not match"},
		{"unparsable certificate", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), c.keyPEM, false, "parse"},
		{"unparsable key", c.certPEM, []byte("garbage"), false, "parse"},
		{"expired", expired.certPEM, expired.keyPEM, false, "expired"},
		{"not yet valid", future.certPEM, future.keyPEM, false, "not valid before"},
		{"key file missing", c.certPEM, c.keyPEM, true, "read key"},
	}
	failures := int64(0)
	for _, tc := range broken {
		t.Run(tc.name, func(t *testing.T) {
			f.write(t, tc.certPEM, tc.key)
			if tc.removeKeyFile {
				if err := os.Remove(f.key); err != nil {
					t.Fatal(err)
				}
			}
			err := m.Reload(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Reload = %v, want an error mentioning %q", err, tc.wantErr)
			}
			failures++
			if got := servedSerial(t, addr, ca.pool); got.Cmp(b.serial) != 0 {
				t.Errorf("after a rejected reload a new handshake got serial %s, want the old %s", got, b.serial)
			}
			if got := tel.reloads(t)["failure"]; got != failures {
				t.Errorf("failure reloads = %d, want %d", got, failures)
			}
		})
	}
	if !strings.Contains(tel.logs.String(), "reload rejected") {
		t.Errorf("rejections not logged: %s", tel.logs)
	}
	if strings.Contains(tel.logs.String(), "PRIVATE KEY") {
		t.Errorf("logs contain key material")
	}

	// A good pair after the broken ones is taken.
	f.write(t, c.certPEM, c.keyPEM)
	if err := m.Reload(ctx); err != nil {
		t.Fatalf("Reload of a good pair after broken ones: %v", err)
	}
	if got := servedSerial(t, addr, ca.pool); got.Cmp(c.serial) != 0 {
		t.Errorf("new handshake got serial %s, want %s", got, c.serial)
	}
	if got := tel.reloads(t)["success"]; got != 2 {
		t.Errorf("successful reloads = %d, want 2", got)
	}
}

// Run polls the files: a replacement is picked up without Reload; a broken one is rejected once
// (not at every poll), and the certificate in use stays.
func TestRunPollsTheFiles(t *testing.T) {
	ca := newCA(t)
	a, b, c := ca.issue(t, leafOpts{}), ca.issue(t, leafOpts{}), ca.issue(t, leafOpts{})
	f := newFiles(t)
	f.write(t, a.certPEM, a.keyPEM)
	tel := newTelemetry(t)
	ctx, cancel := context.WithCancel(context.Background())
	m, err := tlsconf.New(ctx, tlsconf.Config{CertFile: f.cert, KeyFile: f.key, ReloadInterval: 10 * time.Millisecond}, tel.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	addr := serve(t, m)

	f.write(t, b.certPEM, b.keyPEM)
	eventually(t, "the poll to load the new pair", func() bool { return servedSerial(t, addr, ca.pool).Cmp(b.serial) == 0 })

	// Every intermediate state of the two writes below is a mismatched pair, rejected if a poll
	// happens to read it; only the counts' lower bounds and the successes are exact here
	// (TestPoll* checks the exact counts one poll at a time).
	failures := tel.reloads(t)["failure"]
	f.write(t, c.certPEM, a.keyPEM) // mismatched
	eventually(t, "the poll to reject the broken pair", func() bool { return tel.reloads(t)["failure"] > failures })
	if got := servedSerial(t, addr, ca.pool); got.Cmp(b.serial) != 0 {
		t.Errorf("after a rejected poll a new handshake got serial %s, want %s", got, b.serial)
	}

	f.write(t, c.certPEM, c.keyPEM)
	eventually(t, "the poll to load the repaired pair", func() bool { return servedSerial(t, addr, ca.pool).Cmp(c.serial) == 0 })
	if got := tel.reloads(t); got["success"] != 2 {
		t.Errorf("reloads %v, want 2 successes", got)
	}
}

// A broken pair is reported once: a poll seeing new stamps over the same broken content does not
// count or log it again; Reload (an explicit request) does.
func TestPollReportsABrokenPairOnce(t *testing.T) {
	ca := newCA(t)
	a, c := ca.issue(t, leafOpts{}), ca.issue(t, leafOpts{})
	f := newFiles(t)
	f.write(t, a.certPEM, a.keyPEM)
	tel := newTelemetry(t)
	ctx := context.Background()
	m, err := tlsconf.New(ctx, tlsconf.Config{CertFile: f.cert, KeyFile: f.key}, tel.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	m.Poll(ctx) // nothing changed
	if got := tel.reloads(t); len(got) != 0 {
		t.Fatalf("reloads %v after an idle poll", got)
	}
	f.write(t, c.certPEM, a.keyPEM)
	m.Poll(ctx) // the stamps changed: wait for them to settle
	if got := tel.reloads(t); len(got) != 0 {
		t.Fatalf("reloads %v at the poll that saw the change, want none before the files settle", got)
	}
	m.Poll(ctx) // settled: read, rejected
	if got := tel.reloads(t)["failure"]; got != 1 {
		t.Fatalf("failures = %d after the files settled on a broken pair, want 1", got)
	}
	later := time.Now().Add(time.Minute)
	for _, p := range []string{f.cert, f.key} {
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	m.Poll(ctx)
	m.Poll(ctx)
	m.Poll(ctx)
	if got := tel.reloads(t)["failure"]; got != 1 {
		t.Errorf("failures = %d after polls of the same broken content, want 1", got)
	}
	if err := m.Reload(ctx); err == nil {
		t.Error("Reload of the broken pair succeeded")
	}
	if got := tel.reloads(t)["failure"]; got != 2 {
		t.Errorf("failures = %d after an explicit Reload, want 2", got)
	}
	if m.Certificate().SerialNumber.Cmp(a.serial) != 0 {
		t.Errorf("certificate in use %s, want %s", m.Certificate().SerialNumber, a.serial)
	}
}

// A rotation seen half-way (new key, old certificate) is not read until the files hold still, so
// it is loaded whole and nothing is rejected.
func TestPollWaitsForARotationToSettle(t *testing.T) {
	ca := newCA(t)
	a, b := ca.issue(t, leafOpts{}), ca.issue(t, leafOpts{})
	f := newFiles(t)
	f.write(t, a.certPEM, a.keyPEM)
	tel := newTelemetry(t)
	ctx := context.Background()
	m, err := tlsconf.New(ctx, tlsconf.Config{CertFile: f.cert, KeyFile: f.key}, tel.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	writeAtomic(t, f.key, b.keyPEM, 0o600) // half-way: b's key with a's certificate
	m.Poll(ctx)
	writeAtomic(t, f.cert, b.certPEM, 0o644)
	m.Poll(ctx) // changed again: still settling
	m.Poll(ctx)
	if got := tel.reloads(t); got["failure"] != 0 || got["success"] != 1 {
		t.Errorf("reloads %v, want one success and no failure", got)
	}
	if m.Certificate().SerialNumber.Cmp(b.serial) != 0 {
		t.Errorf("certificate in use %s, want %s", m.Certificate().SerialNumber, b.serial)
	}
}

func TestExpiryGauge(t *testing.T) {
	notAfter := time.Now().Add(10 * time.Hour).Truncate(time.Second)
	l := newCA(t).issue(t, leafOpts{notAfter: notAfter})
	f := newFiles(t)
	f.write(t, l.certPEM, l.keyPEM)
	tel := newTelemetry(t)
	now := notAfter.Add(-3 * time.Hour)
	tel.opts.Now = func() time.Time { return now }
	m, err := tlsconf.New(context.Background(), tlsconf.Config{CertFile: f.cert, KeyFile: f.key}, tel.opts)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := tel.metric(t, "nops_tls_cert_expiry_seconds")
	if !ok {
		t.Fatal("nops_tls_cert_expiry_seconds not collected")
	}
	dps := got.Data.(metricdata.Gauge[float64]).DataPoints
	if len(dps) != 1 || math.Abs(dps[0].Value-3*3600) > 0.001 {
		t.Errorf("expiry gauge %v, want one point of %v", dps, 3*3600)
	}
	if got.Unit != "s" {
		t.Errorf("unit %q, want s", got.Unit)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := tel.metric(t, "nops_tls_cert_expiry_seconds"); ok {
		t.Error("expiry gauge still observed after Close")
	}
}

func TestWarnsAboutAReadableKey(t *testing.T) {
	l := newCA(t).issue(t, leafOpts{})
	f := newFiles(t)
	f.write(t, l.certPEM, l.keyPEM)
	tel := newTelemetry(t)
	for _, mode := range []os.FileMode{0o600, 0o644} {
		if err := os.Chmod(f.key, mode); err != nil {
			t.Fatal(err)
		}
		m, err := tlsconf.New(context.Background(), tlsconf.Config{CertFile: f.cert, KeyFile: f.key}, tel.opts)
		if err != nil {
			t.Fatal(err)
		}
		_ = m.Close()
		warned := strings.Contains(tel.logs.String(), "readable by group or others")
		if warned != (mode == 0o644) {
			t.Errorf("key mode %v: warned %v", mode, warned)
		}
	}
}
