// Package identity is the kernel's workload identity: SPIFFE IDs for agents and kernels, and the
// built-in certificate authority that issues X.509-SVIDs for them and publishes the trust bundle.
//
// Who imports it: internal/httpapi (POST /v1/identity/svid, GET /v1/identity/bundle),
// internal/kernel (wiring; the kernel's own SVID), the mTLS listener (the bundle, through
// x509bundle.Source), internal/egress (the kernel's SVID for calls to agents), internal/control
// (revocations, rotation) and the storage adapters (they implement Store). identity imports errs,
// mtls (the Revocation type its listeners enforce) and pagecursor of the project.
//
// # SPIFFE IDs
//
// An agent is spiffe://<trust-domain>/tenant/<tenant>/agent/<agent>, a kernel node
// spiffe://<trust-domain>/kernel/<node> (AgentID, KernelID, ParseAgentID). The SPIFFE ID of an SVID
// always comes from who the kernel authenticated, never from the request: Sign ignores the subject,
// SANs and extensions of a CSR.
//
// # The CA
//
// A root and an intermediate, both ECDSA P-256, are created at first start (LoadOrCreate) and kept
// in the database, their private keys in PKCS #8 sealed with AES-256-GCM under the key-encryption
// key of signing.kek_file (internal/sealbox), each bound to its authority's ID. A database dump alone
// holds no CA key; a kernel started with another key file refuses to start, naming the authority
// it cannot open. Every authority carries the trust domain's ID (spiffe://<td>) as its one URI SAN,
// as SPIFFE asks of signing certificates; the root has path length 1, the intermediate 0.
//
// Leaves (Sign, IssueKernelSVID) follow the SPIFFE X509-SVID specification: exactly one URI SAN,
// CA false, key usage digitalSignature (plus keyEncipherment for RSA keys), extended key usage
// serverAuth and clientAuth, a random positive 128-bit serial, NotBefore Backdate in the past, and a
// lifetime of at most SVIDTTL and never past the intermediate's expiry. The chain handed out is the
// leaf and the intermediate; the roots are the bundle.
//
// Accepted CSR keys: ECDSA P-256 and P-384, Ed25519, and RSA of 2048 to 4096 bits (below is too
// weak, above only costs verification time). P-521 is refused: Go's TLS stack does not negotiate it
// for certificates. The CSR's signature must verify with its own key (proof of possession).
//
// # Rotation
//
// Refresh (run every RefreshInterval by Run) replaces an intermediate past half its lifetime with a
// new one under the newest root that is not retiring: SVIDs of the old one stay valid until they
// expire, and the bundle does not change, because it holds roots only. When every root has expired
// a new root is created (recovery, not rotation: SVIDs of the old roots are no longer trusted).
//
// Rotate is the planned root rotation (rotate.go): a new root, in the bundle at once, and an
// intermediate under it staged to issue RootRotationDelay later (Authority.ActivatesAt; every
// replica switches by its own clock, see snapshot.issuerAt); the other roots get a retirement
// (Authority.RetiresAt) at that activation + SVIDTTL + Backdate, when every SVID chaining to them
// has expired. Refresh then removes them and their intermediates (ChangeRetire). Config.OnChange
// is told the changes Refresh makes on its own, inside their transaction, for the audit trail.
//
// # Revocation
//
// A RevocationRecord (revocation.go) revokes one certificate by serial, or every SVID of one
// SPIFFE ID issued before the revocation (an SVID issued later, to a caller the kernel
// authenticated again, is not revoked). Records are kept in the database (Store's revocation
// methods) and read by every replica's mTLS listener every identity.revocation_refresh_interval: a
// handshake of a revoked certificate is refused from the next read on, and open connections of it
// are closed. An entry lasts until no certificate it matches can still be valid (the serial's
// expiry, or SVIDTTL + Backdate after an ID's revocation), then it is purged. Recording one is
// audited as AuditActionRevoke; internal/control decides who may (docs/rbac.md).
//
// # Concurrency and replicas
//
// Every change of the authorities is one compare-and-set transaction on the CA's sequence
// (Store.AddCAAuthorities): of replicas creating or rotating the CA at the same moment one wins,
// the others reload its result. The sequence is the bundle's spiffe_sequence. A CA is safe for
// concurrent use: Sign, Bundle and BundleJWKS read an immutable snapshot that Refresh swaps
// atomically.
//
// # Testing
//
// The storage adapters pass the conformance suite in internal/store/storetest (identity.go),
// including two concurrent LoadOrCreate on one database. This package's tests use the SQLite store.
package identity
