package apikey

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// PepperReloadOptions are the optional settings of a PepperFile; the zero value works.
type PepperReloadOptions struct {
	Logger *slog.Logger // nil: discard
	// OnReload is told the outcome of every reload that found the file changed: nil when the
	// new set was applied, the error when the file was refused (metrics). It must not block.
	OnReload func(err error)
}

// PepperFile keeps a Service's peppers in step with a pepper file: Reload (on SIGHUP) and Run
// (every interval) re-read the file and, when its content changed, hand the new set to the
// Service (SetPeppers). A file that cannot be read or is refused leaves the peppers in use as
// they were; the error is logged, handed to OnReload and kept for LastError until a reload
// succeeds.
//
// Concurrency: safe for concurrent use; reloads are serialised by a mutex Verify never takes.
type PepperFile struct {
	path  string
	apply func(PepperRing) error
	opts  PepperReloadOptions

	mu      sync.Mutex // serialises reloads; guards sum, info and lastErr
	sum     [sha256.Size]byte
	info    PepperFileInfo // of the file in use
	lastErr error
}

// OpenPepperFile reads the pepper file at path as LoadOrCreatePepper does (creating it on first
// start) and returns its set with a PepperFile that hands later changes to apply.
func OpenPepperFile(path string, apply func(PepperRing) error, opts PepperReloadOptions) (*PepperFile, PepperRing, error) {
	if apply == nil {
		return nil, PepperRing{}, errors.New("pepper file: nil apply function")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.OnReload == nil {
		opts.OnReload = func(error) {}
	}
	if _, err := LoadOrCreatePepper(path); err != nil {
		return nil, PepperRing{}, err
	}
	raw, pf, err := readPepperFile(path)
	if err != nil {
		return nil, PepperRing{}, err
	}
	r, err := pf.ring()
	if err != nil {
		return nil, PepperRing{}, fmt.Errorf("pepper file %s: %w", path, err)
	}
	return &PepperFile{path: path, apply: apply, opts: opts, sum: sha256.Sum256(raw), info: pf.info()}, r, nil
}

// Info describes the pepper file in use: the last one applied.
func (f *PepperFile) Info() PepperFileInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.info
}

// Path returns the pepper file's path.
func (f *PepperFile) Path() string { return f.path }

// LastError returns why the last reload failed, nil when it succeeded (or none has run).
func (f *PepperFile) LastError() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastErr
}

// Reload re-reads the pepper file and applies it when its content changed since the last
// successful load. It reports whether a new set was applied; on error the set in use stays.
func (f *PepperFile) Reload() (changed bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	raw, pf, err := readPepperFile(f.path)
	var r PepperRing
	if err == nil {
		if sha256.Sum256(raw) == f.sum && f.lastErr == nil {
			return false, nil
		}
		if r, err = pf.ring(); err != nil {
			err = fmt.Errorf("pepper file %s: %w", f.path, err)
		} else if err = f.apply(r); err != nil {
			err = fmt.Errorf("pepper file %s: %w", f.path, err)
		}
	}
	if err != nil {
		if f.lastErr == nil || f.lastErr.Error() != err.Error() {
			f.opts.Logger.Error("api key pepper file refused; the peppers in use stay", "path", f.path, "error", err)
		}
		f.lastErr = err
		f.opts.OnReload(err)
		return false, err
	}
	f.sum, f.info, f.lastErr = sha256.Sum256(raw), pf.info(), nil
	f.opts.Logger.Info("api key peppers reloaded", "path", f.path, "peppers", r.Peppers, "pending", r.Pending)
	f.opts.OnReload(nil)
	return true, nil
}

// Run reloads every interval until ctx ends; failures are logged by Reload, and Run returns nil
// when ctx ends.
func (f *PepperFile) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return errors.New("pepper file reload: interval must be positive")
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
