// Package audit is the kernel's verifiable audit log. Every mutation, authentication failure and
// authorization denial becomes a Record, appended in the same transaction as the change it
// describes to the Merkle tree of its tenant (or GlobalTree), with RFC 6962 hashing done by
// golang.org/x/mod/sumdb/tlog. The kernel signs checkpoints of each tree (C2SP tlog-checkpoint
// notes, golang.org/x/mod/sumdb/note, Ed25519 key in a file outside the database), so any record
// can be proved included and any two checkpoints proved consistent by someone who has neither
// the database nor the kernel.
//
// Who imports it: the store adapters (they implement Appender and Store), internal/httpapi
// (GET /v1/audit, /checkpoint, /proof/inclusion, /proof/consistency, /verify), internal/kernel
// (loads the key, runs the Checkpointer) and cmd/nops (audit verify, audit check-proof). It
// imports internal/errs only, of the project.
//
// # Canonical record encoding
//
// A record's leaf is the SHA-256 of 0x00 followed by its canonical encoding (tlog.RecordHash);
// an auditor re-computes it from this description. The encoding is one JSON object, no
// whitespace anywhere, members always present and always in this order:
//
//	{"v":1,"tree":T,"seq":N,"time":TS,
//	 "actor":{"principal":S,"ip":S,"request_id":S},
//	 "action":S,"resource":S,
//	 "decision":{"allowed":B,"reason":S},
//	 "request_digest":S}
//
// (shown on several lines here; the encoding is a single line with no newline at the end).
//
//   - v is the encoding version, 1.
//   - N is the seq in decimal: no sign, no leading zeros, no fraction or exponent.
//   - TS is the time in UTC as "YYYY-MM-DDTHH:MM:SS.fffffffffZ", always exactly nine fractional
//     digits (2025-01-02T03:04:05.000000000Z).
//   - B is true or false.
//   - T and S are JSON strings escaped as RFC 8785 (JCS) does: '"' as \" and '\' as \\;
//     U+0008, U+0009, U+000A, U+000C, U+000D as \b, \t, \n, \f, \r; other code points below
//     U+0020 as \u00xx with lowercase hex digits; every other code point as its raw UTF-8 bytes
//     (no \u escapes, no escaped '/', '<', '>', '&', U+007F, U+2028 or U+2029).
//   - An absent value is the empty string, never null or a missing member.
//
// Field rules (Record.Validate): tree is 1 to 128 of [A-Za-z0-9_-]; action 1 to 64 of
// [a-z0-9._-]; time has a year from 1 to 9999; actor.ip is empty or an address in Go netip
// canonical form; request_digest is empty or "sha256:" and 64 lowercase hex digits; every string
// is valid UTF-8 within a byte limit. ParseCanonical accepts exactly these bytes and nothing
// else, so Canonical(ParseCanonical(b)) == b. The seq and tree are inside the leaf, so a record
// cannot be moved to another position or tree without changing its hash.
//
// # Storage
//
// Interior hashes are stored with the records, at tlog.StoredHashIndex positions: Append writes
// tlog.StoredHashes for each new record. A tree head (its size) is kept apart from the records,
// so a deleted record does not shrink it. Proofs are read from the stored hashes; Verify trusts
// none of them.
//
// # Checkpoints
//
// A checkpoint is a signed note whose text is
//
//	<key name>/<tree>
//	<size in decimal>
//	<root hash, padded standard base64>
//
// each line ending in a newline, followed by the note signature lines. The key name is the name
// given to LoadOrCreateSigner ("nops-kernel" or the kernel's host name); the verifier key
// ("<name>+<hash>+<key>") is published for auditors. SignCheckpoint refuses to sign a tree that
// does not extend the previous checkpoint; Checkpointer decides when to sign (every N records or
// T seconds).
//
// # Verification
//
// Verify walks a tree's rows in seq order and, for each, checks that a row exists at every seq
// below the expected size (the larger of the tree head and the verified checkpoint's size) and
// only one, that the bytes are a canonical record naming that seq and tree, and that the
// recomputed leaf and interior hashes equal the stored ones; when the walk reaches the
// checkpoint's size, the recomputed root must equal the signed root. It then checks that no row
// lies outside the tree and that the tree head is not below the checkpoint. The Report (JSON):
//
//	{"tree":"ten_…","ok":false,"first_bad_seq":17,"tree_size":120,"records_verified":17,
//	 "checkpoint":{"size":100,"hash":"…","verified":true,"signers":["nops-kernel+1a2b3c4d"],"matches":false},
//	 "problems":[{"kind":"leaf_hash_mismatch","seq":17,"detail":"…"}]}
//
// first_bad_seq is -1 when no seq of the tree is blamed (ok, checkpoint_invalid,
// checkpoint_mismatch, a row at a negative seq); problems holds at most a checkpoint_invalid entry
// and the first problem of the walk, their kinds listed by Kind. records_verified counts the
// leading records that check out (0 on checkpoint_mismatch: the bad record is unknown). An outside auditor uses CheckInclusion, CheckConsistency and
// proof bundles (Bundle, MarshalBundle, ParseBundle, CheckBundle) with only the verifier key.
//
// What a checkpoint protects: records below its size. Records appended since the latest
// checkpoint are protected against an attacker who changes records but not hashes; one who
// rewrites both is caught only once those records are below a checkpoint signed before the
// rewrite. Checkpointer's policy bounds that window. Deleting checkpoint rows removes their
// protection from Verify, so checkpoints should also be kept outside the database (auditors,
// witnesses) and checked with CheckConsistency.
//
// # Concurrency
//
// Append must be serialised per tree by the caller (in practice the adapter, by locking the
// tree's head row, e.g. SELECT … FOR UPDATE on audit_trees in PostgreSQL; SQLite serialises
// writers): it reads the tree size and the frontier hashes, computes the new record's seq and
// hashes from them, and writes them. Two unserialised appends would both take the same seq and
// build on the same frontier; with a primary key one fails with errs.Conflict, without one the
// tree is corrupt. The lock is held until the audited transaction commits, so appends of one
// tree, and thus the audited writes of one tenant, are serialised: take it as the last write of
// the transaction to keep it short and to keep the lock order (domain rows, then audit head)
// the same everywhere. Different trees never contend. SignCheckpoint, proofs and Verify take no
// lock: the hashes of a tree of a given size never change. Checkpointer is safe for concurrent
// use. The package starts no goroutine.
package audit
