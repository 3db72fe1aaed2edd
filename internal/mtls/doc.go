// Package mtls is the TLS side of the kernel's mTLS listener and of kernel → agent calls: a server
// configuration that requires an X.509-SVID of the kernel's trust domain from every client and
// verifies it with go-spiffe against a live bundle source, the revocation of SVIDs by serial or
// SPIFFE ID shared by all replicas through a store, the closing of open connections of a revoked
// identity, and the client configuration that checks an agent presents the SPIFFE ID it was
// registered with.
//
// Who may import it: internal/kernel (builds the Server, runs Run, serves the listener),
// internal/httpapi (PeerID/PeerOf to make the SPIFFE ID the principal), the kernel's egress to
// agents (ClientConfig) and tests. At its boundary it uses go-spiffe types only
// (x509svid.Source, x509bundle.Source, spiffeid.ID), so the built-in CA and SPIRE's Workload API
// plug in alike; it imports nothing of the project.
//
// # Usage
//
//	s, err := mtls.New(mtls.Config{TrustDomain: td}, svidSource, bundleSource,
//		mtls.Options{Store: revocationStore, Logger: l, MeterProvider: mp})
//	err = s.Refresh(ctx)              // read the revocations before accepting anyone
//	go s.Run(ctx)                     // re-read them every RefreshInterval
//	hs := &http.Server{Handler: h, ReadHeaderTimeout: …}
//	s.Configure(hs)                   // TLSConfig + ConnContext/ConnState hooks
//	err = hs.ServeTLS(ln, "", "")
//	// in handlers or middleware:
//	id, ok := mtls.PeerID(r)
//
// # Verification
//
// Every handshake, resumed ones included, runs Server.Verify in tls.Config.VerifyConnection,
// refusing with a distinct Reason: no certificate; a leaf with no URI SAN, with more than one, or
// with one that is not a SPIFFE ID; a SPIFFE ID of another trust domain; a leaf that is a CA or
// may sign certificates; a leaf not yet valid or expired; a chain that does not lead to a root of
// the bundle source's current bundle for the trust domain (x509svid.Verify), or an intermediate
// out of its validity period (reported as expired); a revoked serial (leaf or intermediate) or
// SPIFFE ID. VerifyConnection and not VerifyPeerCertificate, because the latter does not run when
// a client resumes a session with a ticket, which would let a revoked SVID back in.
//
// The client certificate is requested (tls.RequestClientCert) and its absence refused by Verify:
// with tls.RequireAnyClientCert crypto/tls refuses before any callback, and the refusal could
// not be counted. Only TLS 1.3 is offered: in TLS 1.2 the client certificate, and with it the
// tenant and agent IDs, crosses the network in clear text.
//
// In TLS 1.3 the server verifies the client certificate before the client's CertificateVerify
// proves it holds the key, so "accepted" counts certificates that passed; a client that then
// fails the proof is refused by crypto/tls without being counted here. No request is served
// before the handshake completes.
//
// # Server SVID rotation
//
// GetCertificate reads the SVID source at every handshake (tlsconfig.GetCertificate). A renewed
// SVID is served from the next handshake on; connections already open keep theirs. Nothing is
// restarted and no connection is dropped. CA rotation works the same way on the other side: the
// bundle source is read at every verification, so a bundle carrying the old and the new root
// accepts clients of both during the overlap.
//
// # Revocation
//
// A Revocation names a serial (any certificate of the presented chain) or a SPIFFE ID (every SVID
// of that ID with NotBefore at or before RevokedAt; SVIDs issued later are accepted, see the
// Revocation type). Revoke applies revocations on this replica at once; Run reads the
// RevocationStore every RefreshInterval (default 2 s) from the latest RevokedAt read minus
// RefreshOverlap, so every replica refuses a revoked SVID on new handshakes within about one
// interval. With a store, handshakes are refused (revocations_not_loaded) until the first
// successful Refresh, so a restarting replica never accepts an SVID revoked while it was down.
// When the store cannot be read, the revocations already read stay in force and the failure is
// logged, counted and visible in nops_mtls_revocations_age_seconds.
//
// Open connections: Configure's ConnContext hook records each accepted connection, the handshake
// records the verified peer on it, and the ConnState hook forgets it when it closes (or is
// hijacked). Whenever revocations change the set (Revoke, or a Refresh that read new ones), every
// tracked connection of a revoked peer is closed at once, in-flight requests included. An SVID
// that merely expires on an open connection is not cut: the client renews and reconnects at its
// own pace.
//
// # Metrics
//
//   - nops_mtls_handshakes_total{result="accepted"|"refused", reason} (counter)
//   - nops_mtls_svid_expiry_seconds{spiffe_id} (gauge): NotAfter of the served SVID minus now.
//   - nops_mtls_revoked_connections_closed_total (counter)
//   - nops_mtls_revocation_refreshes_total{result="success"|"failure"} (counter)
//   - nops_mtls_revocations_age_seconds (gauge, with a store): since the last successful read.
//   - nops_mtls_revocations (gauge): revocations in force.
//
// # Concurrency
//
// A Server is safe for concurrent use. Handshakes take the revocation set's read lock; the
// connection tracker's mutex is never held while calling out, and the two locks are never nested.
// A handshake stores its peer on the connection and then checks the revocations again, so a
// revocation applied during the handshake is seen either by that check or by the sweep.
//
// # Testing
//
// The tests run a real listener on 127.0.0.1:0 with real TLS clients, against throwaway CAs built
// with crypto/x509 (testca_test.go).
package mtls
