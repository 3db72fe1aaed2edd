// Package sealbox encrypts small secrets the kernel must be able to read back (HMAC secrets of
// request-signing keys, the private keys of the built-in CA, the token signing keys) before they
// are stored: AES-256-GCM under a key-encryption key (KEK) that never enters the database. A
// database dump alone gives no secret, and a sealed value copied onto another row does not open
// there, because every Seal binds associated data (the row's ID) that Open must be given again.
//
// It imports nothing of the project. internal/reqsig uses a *Box through its Sealer interface;
// internal/kernel opens the Box (LoadOrCreateFile) and hands it over.
//
// # Format
//
// A sealed value is
//
//	0x01 | len(version) | version | nonce (12 bytes) | ciphertext | tag (16 bytes)
//
// where version names the KEK it was sealed with. The GCM additional data is the header (the
// first 2+len(version) bytes) followed by the caller's associated data, so neither the header nor
// the row it belongs to can be changed without Open failing. Nonces are random: with 96-bit random
// nonces one KEK stays far below the 2^-32 collision bound for up to 2^32 seals, orders of
// magnitude more secrets than a kernel stores; rotate the KEK (RotateFile) long before that.
//
// # Key file
//
// LoadOrCreateFile reads the KEKs from a JSON file, or generates one with a single random KEK on
// first start (mode 0600, written under a temporary name and linked into place, so concurrent
// starters agree on one file). A file readable or writable by group or others is refused:
//
//	{
//	  "current": "k2",
//	  "keys": [
//	    {"version": "k1", "key": "<standard base64 of 32 bytes>", "created_at": "2026-01-02T03:04:05Z"},
//	    {"version": "k2", "key": "...", "created_at": "..."}
//	  ]
//	}
//
// RotateFile adds a generated KEK and makes it current: new seals use it, values sealed under
// the older ones keep opening. Replicas sharing a database must share the file's content.
// Losing the file loses every secret sealed under it.
//
// # Staged rotation
//
// With several replicas a rotation is staged (docs/operations.md, "Rotating keys"): AddFile adds
// a pending KEK (every replica that loads the file opens what it seals; nothing is sealed with it
// yet), PromoteFile makes it current, Rewrap re-seals every stored value (Store, implemented by
// the storage adapters) under the current KEK, and RetireFile removes an older KEK once
// CheckRetire finds nothing sealed under it. The list's order is the order of introduction: a
// key after the current one is pending (FileInfo). Updates take a flock on the file's directory
// and replace the file atomically. A FileKeyring is a Keyring (a Box swapped atomically while in
// use) that re-reads its file every interval and on Reload; a broken file keeps the keys in use.
//
// # Concurrency
//
// A Box is immutable after New and safe for concurrent use. A Keyring swaps whole Boxes
// atomically; FileKeyring serialises its reloads with a mutex Seal and Open never take.
package sealbox
