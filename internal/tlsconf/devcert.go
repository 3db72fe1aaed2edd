package tlsconf

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Development certificate parameters.
const (
	DevCertFile     = "dev-cert.pem"
	DevKeyFile      = "dev-key.pem"
	devCertValidity = 90 * 24 * time.Hour
	// devCertMinLeft: a stored development certificate with less validity left is replaced, so
	// a kernel restarted now does not stop serving a week later.
	devCertMinLeft = 7 * 24 * time.Hour
	// devCertBackdate covers clients whose clock is slightly behind.
	devCertBackdate = time.Hour
)

// ensureDevCert returns the development certificate and key files in dir, generating them when
// they are missing, broken or have devCertMinLeft or less of validity left.
func ensureDevCert(ctx context.Context, dir string, now time.Time, logger *slog.Logger) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, DevCertFile), filepath.Join(dir, DevKeyFile)
	c, reason := reusableDevCert(certFile, keyFile, now)
	if c != nil {
		logger.InfoContext(ctx, "using the development TLS certificate; do not use it in production",
			"cert_file", certFile, "not_after", c.NotAfter.UTC().Format(time.RFC3339),
			"fingerprint_sha256", Fingerprint(c))
		return certFile, keyFile, nil
	}
	if reason != "" {
		logger.InfoContext(ctx, "replacing the development TLS certificate", "reason", reason)
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("tls: create %s: %w", dir, err)
	}
	certPEM, keyPEM, leaf, err := generateDevCert(now)
	if err != nil {
		return "", "", err
	}
	// Key first: a reader seeing the new certificate with the old key would reject the pair.
	if err := writeAtomic(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeAtomic(certFile, certPEM, 0o644); err != nil {
		return "", "", err
	}
	logger.WarnContext(ctx, "generated a self-signed development TLS certificate; do not use it in production",
		"cert_file", certFile, "dns_names", leaf.DNSNames, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
		"fingerprint_sha256", Fingerprint(leaf))
	return certFile, keyFile, nil
}

// reusableDevCert returns the stored development certificate when it can be used, or the reason
// it cannot ("" when there is none).
func reusableDevCert(certFile, keyFile string, now time.Time) (*x509.Certificate, string) {
	certPEM, err := os.ReadFile(certFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ""
	}
	if err != nil {
		return nil, err.Error()
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err.Error()
	}
	cert, err := parsePair(certPEM, keyPEM, now)
	if err != nil {
		return nil, err.Error()
	}
	if left := cert.Leaf.NotAfter.Sub(now); left <= devCertMinLeft {
		return nil, fmt.Sprintf("expires in %s", left.Round(time.Minute))
	}
	return cert.Leaf, ""
}

// generateDevCert makes an ECDSA P-256 self-signed server certificate for the loopback names.
func generateDevCert(now time.Time) (certPEM, keyPEM []byte, leaf *x509.Certificate, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tls: generate development key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tls: generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"NOPS Kernel development"}},
		NotBefore:             now.Add(-devCertBackdate),
		NotAfter:              now.Add(devCertValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tls: create development certificate: %w", err)
	}
	if leaf, err = x509.ParseCertificate(der); err != nil {
		return nil, nil, nil, fmt.Errorf("tls: parse development certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tls: encode development key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, leaf, nil
}

// writeAtomic writes data to a temporary file in path's directory with mode perm and renames it
// over path, so no reader ever sees a partial file and the key is never readable by others, not
// even briefly.
func writeAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("tls: chmod %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("tls: sync %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("tls: close %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("tls: rename into %s: %w", path, err)
	}
	return nil
}
