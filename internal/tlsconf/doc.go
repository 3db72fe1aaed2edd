// Package tlsconf serves the kernel's HTTPS listener: the server-side *tls.Config (TLS 1.2 minimum,
// AEAD cipher suites only, HTTP/2 and HTTP/1.1 over ALPN) and the certificate behind it, loaded
// from PEM files and reloaded while the server runs, or generated for development.
//
// Who may import it: internal/kernel (which builds the Manager from config, runs Manager.Run as a
// background job, calls Manager.Reload on SIGHUP and hands TLSConfig to the http.Server) and its
// tests. It imports nothing of the project.
//
// # Usage
//
//	m, err := tlsconf.New(ctx, tlsconf.Config{CertFile: c, KeyFile: k}, tlsconf.Options{Logger: l, MeterProvider: mp})
//	go m.Run(ctx)                       // polls the files every ReloadInterval
//	srv.TLSConfig = m.TLSConfig()
//	err = srv.ServeTLS(ln, "", "")      // "" "": the certificate comes from GetCertificate
//
// # Policy
//
//   - MinVersion TLS 1.2. TLS 1.3 suites are all AEAD and are not configurable in Go; the TLS 1.2
//     suites are restricted to ECDHE with AES-GCM or ChaCha20-Poly1305 (forward secrecy, no CBC,
//     no RSA key exchange, no 3DES).
//   - Key exchanges: X25519 and P-256, plus the hybrid post-quantum X25519MLKEM768 and
//     SecP256r1MLKEM768 wherever Go enables them by default (CurvePreferences filters Go's default
//     list, so GODEBUG=tlsmlkem=0 still turns the hybrids off).
//   - ALPN: h2, http/1.1.
//
// # Reload
//
// The certificate in use sits behind an atomic pointer read by GetCertificate at every handshake.
// A reload builds and checks the new pair completely (it parses, the key matches the certificate,
// the certificate is valid now) before swapping the pointer, so a handshake sees either the old or
// the new pair, never a mix. Connections already established keep the certificate they were
// handshaked with; nothing is restarted and no connection is dropped. A pair that fails a check is
// logged and counted (nops_tls_reloads_total{result="failure"}) and the old pair keeps being
// served; the same broken content is reported once, not at every poll.
//
// Two triggers, serialised by one mutex: Run polls the files' modification time and size every
// ReloadInterval and, once they changed and then held still for one more interval, compares the
// files' SHA-256 with the content tried last; Reload (SIGHUP) reads and compares the content at
// once. Waiting for the stamps to settle means a rotation that writes the key and then the
// certificate is read as a whole, not rejected half-way; a rotation slower than the interval may
// still be rejected half-way, and is then loaded at the poll after its last write. Write each file
// atomically (write a temporary file, rename it over the old one) so no read sees half a file. A
// change that keeps both files' modification time and size is only seen by Reload.
//
// # Development certificate
//
// With Config.DevCert and no files, New uses an ECDSA P-256 self-signed certificate for localhost,
// 127.0.0.1 and ::1, valid 90 days, kept in DataDir/tls (key file mode 0600). It is reused across
// restarts while more than 7 days of validity remain, and regenerated otherwise. Its SHA-256
// fingerprint is logged so a client can pin it (curl --pinnedpubkey, or compare with
// `openssl x509 -fingerprint -sha256`).
//
// # Metrics
//
//   - nops_tls_cert_expiry_seconds (gauge): NotAfter of the certificate in use minus now.
//   - nops_tls_reloads_total{result="success"|"failure"} (counter): reload attempts of new content.
//
// # Concurrency
//
// A Manager is safe for concurrent use. GetCertificate takes no lock (one atomic load). Reload,
// the poll of Run, and the state they share (the last file stamps and the last content tried) are
// serialised by Manager.mu; the swap itself is the atomic store.
package tlsconf
