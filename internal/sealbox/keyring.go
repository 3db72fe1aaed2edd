package sealbox

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Keyring is a Box that can be replaced while in use: its users (internal/reqsig, the identity
// CA) keep the one *Keyring and every Seal and Open uses the Box current at that moment. It
// implements the Sealer interfaces of its users.
//
// Concurrency: safe for concurrent use; Set is an atomic swap.
type Keyring struct {
	box atomic.Pointer[Box]
}

// NewKeyring returns a Keyring holding b, which must not be nil.
func NewKeyring(b *Box) *Keyring {
	r := &Keyring{}
	r.box.Store(b)
	return r
}

// Box returns the Box in use now.
func (r *Keyring) Box() *Box { return r.box.Load() }

// Set makes b the Box of every later Seal and Open.
func (r *Keyring) Set(b *Box) { r.box.Store(b) }

// Seal seals under the current KEK of the Box in use now.
func (r *Keyring) Seal(plaintext, aad []byte) ([]byte, error) { return r.Box().Seal(plaintext, aad) }

// Open opens with any KEK of the Box in use now.
func (r *Keyring) Open(sealed, aad []byte) ([]byte, error) { return r.Box().Open(sealed, aad) }

// Current returns the version of the KEK new seals use.
func (r *Keyring) Current() string { return r.Box().Current() }

// Versions returns the versions the Box in use holds, sorted.
func (r *Keyring) Versions() []string { return r.Box().Versions() }

// ReloadOptions are the optional settings of a FileKeyring; the zero value works.
type ReloadOptions struct {
	Logger *slog.Logger // nil: discard
	// OnReload is told the outcome of every reload that found the file changed: nil when the
	// new KEKs were applied, the error when the file was refused (metrics). It must not block.
	OnReload func(err error)
}

// FileKeyring is a Keyring kept in step with its key file: Reload (on SIGHUP) and Run (every
// interval) re-read the file and, when its content changed, apply the KEKs it holds. A file that
// cannot be read or is refused (permissions, format, no current key) leaves the KEKs in use as
// they were; the error is logged, handed to OnReload and kept for LastError until a reload
// succeeds.
//
// Concurrency: safe for concurrent use; reloads are serialised by a mutex never held by Seal or
// Open.
type FileKeyring struct {
	*Keyring
	path string
	opts ReloadOptions

	mu      sync.Mutex // serialises reloads; guards sum, info and lastErr
	sum     [sha256.Size]byte
	info    FileInfo // of the file in use
	lastErr error
}

// OpenFileKeyring opens the key file at path as LoadOrCreateFile does (creating it with one
// random KEK when there is none) and returns it as a FileKeyring.
func OpenFileKeyring(path string, opts ReloadOptions) (*FileKeyring, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.OnReload == nil {
		opts.OnReload = func(error) {}
	}
	if _, err := LoadOrCreateFile(path); err != nil {
		return nil, err
	}
	raw, kf, err := readFile(path)
	if err != nil {
		return nil, err
	}
	b, err := kf.box()
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return &FileKeyring{Keyring: NewKeyring(b), path: path, opts: opts, sum: sha256.Sum256(raw), info: kf.info()}, nil
}

// Info describes the key file in use: the last one applied.
func (f *FileKeyring) Info() FileInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.info
}

// Path returns the key file's path.
func (f *FileKeyring) Path() string { return f.path }

// LastError returns why the last reload failed, nil when it succeeded (or none has run).
func (f *FileKeyring) LastError() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastErr
}

// Reload re-reads the key file and applies it when its content changed since the last
// successful load. It reports whether new KEKs were applied; on error the KEKs in use stay.
func (f *FileKeyring) Reload() (changed bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	raw, kf, err := readFile(f.path)
	var b *Box
	if err == nil {
		if sha256.Sum256(raw) == f.sum && f.lastErr == nil {
			return false, nil
		}
		if b, err = kf.box(); err != nil {
			err = fmt.Errorf("key file %s: %w", f.path, err)
		}
	}
	if err != nil {
		if f.lastErr == nil || f.lastErr.Error() != err.Error() {
			f.opts.Logger.Error("key-encryption key file refused; the keys in use stay", "path", f.path, "error", err)
		}
		f.lastErr = err
		f.opts.OnReload(err)
		return false, err
	}
	prev := f.Box()
	f.Set(b)
	f.sum, f.info, f.lastErr = sha256.Sum256(raw), kf.info(), nil
	f.opts.Logger.Info("key-encryption keys reloaded", "path", f.path,
		"current", b.Current(), "versions", b.Versions(), "previous_current", prev.Current())
	f.opts.OnReload(nil)
	return true, nil
}

// Run reloads every interval until ctx ends; failures are logged by Reload, and Run returns nil
// when ctx ends.
func (f *FileKeyring) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return errors.New("key file reload: interval must be positive")
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_, _ = f.Reload()
		}
	}
}
