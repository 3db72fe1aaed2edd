package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/config"
	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/sealbox"
)

// secretFiles are the kernel's own secrets that rotate without a restart (docs/operations.md,
// "Rotating keys"): the key-encryption key file sealing request-signing secrets, the CA's keys
// and the token signing keys, and the API-key pepper file (or the peppers of the configuration, which change only with
// a restart). The "secret files" job and Kernel.Reload (SIGHUP) re-read the files; a file that
// is refused keeps the keys in use and is logged and counted
// (nops_secret_reloads_total{result="error"}).
type secretFiles struct {
	kek    *sealbox.FileKeyring
	pepper *apikey.PepperFile // nil: peppers from api_keys.pepper and previous_peppers
	ring   apikey.PepperRing  // the peppers at start
	keys   atomic.Pointer[apikey.Service]
	logger *slog.Logger
}

// openSecretFiles loads both secrets. meter counts reloads by secret and result.
func openSecretFiles(cfg config.Config, meter metric.Meter, logger *slog.Logger) (*secretFiles, error) {
	reloads, err := meter.Int64Counter("nops_secret_reloads_total",
		metric.WithDescription("Reloads of the kernel's secret files that found them changed, by secret (api_key_pepper, kek) and result (applied, error: the file was refused and the keys in use stay)."))
	if err != nil {
		return nil, fmt.Errorf("secret reload metric: %w", err)
	}
	count := func(secret string) func(error) {
		return func(err error) {
			result := "applied"
			if err != nil {
				result = "error"
			}
			reloads.Add(context.Background(), 1, metric.WithAttributes(attribute.String("secret", secret), attribute.String("result", result)))
		}
	}
	s := &secretFiles{logger: logger}
	if s.kek, err = sealbox.OpenFileKeyring(cfg.KEKPath(), sealbox.ReloadOptions{Logger: logger, OnReload: count("kek")}); err != nil {
		return nil, fmt.Errorf("signing.kek_file: %w", err)
	}
	if cfg.APIKeys.Pepper != "" {
		ps, err := apikey.PeppersFromConfig(cfg.APIKeys.PepperVersion, cfg.APIKeys.Pepper, cfg.APIKeys.PreviousPeppers)
		if err != nil {
			return nil, fmt.Errorf("api_keys.pepper, api_keys.previous_peppers: %w", err)
		}
		s.ring = apikey.PepperRing{Peppers: ps}
		return s, nil
	}
	apply := func(r apikey.PepperRing) error {
		keys := s.keys.Load()
		if keys == nil {
			return errors.New("the api key service is not running yet")
		}
		return keys.SetPeppers(r.Peppers, r.Pending...)
	}
	if s.pepper, s.ring, err = apikey.OpenPepperFile(cfg.PepperFilePath(), apply, apikey.PepperReloadOptions{Logger: logger, OnReload: count("api_key_pepper")}); err != nil {
		return nil, fmt.Errorf("api key pepper file: %w", err)
	}
	return s, nil
}

// attach hands later pepper changes to keys, and the pending versions of the set it started with.
func (s *secretFiles) attach(keys *apikey.Service) error {
	s.keys.Store(keys)
	return keys.SetPeppers(s.ring.Peppers, s.ring.Pending...)
}

// reload re-reads both files now (SIGHUP); an error says which was refused.
func (s *secretFiles) reload() error {
	var errs []error
	if _, err := s.kek.Reload(); err != nil {
		errs = append(errs, fmt.Errorf("signing.kek_file: %w", err))
	}
	if s.pepper != nil {
		if _, err := s.pepper.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("api key pepper file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// jobs re-read the files every reload interval.
func (s *secretFiles) jobs(cfg config.Config) map[string]func(context.Context) error {
	jobs := map[string]func(context.Context) error{
		"kek file reload": func(ctx context.Context) error { return s.kek.Run(ctx, cfg.Signing.KEKReloadInterval.D()) },
	}
	if s.pepper != nil {
		jobs["pepper file reload"] = func(ctx context.Context) error { return s.pepper.Run(ctx, cfg.APIKeys.PepperReloadInterval.D()) }
	}
	return jobs
}

// source is what GET /v1/admin/secrets/status reports: the sets this kernel uses now, against
// the digests and sealed values of st.
func (s *secretFiles) source(st Store) control.SecretsSource {
	src := control.SecretsSource{
		Store:        st,
		PepperSource: "config",
		KEK:          func() (sealbox.FileInfo, error) { return s.kek.Info(), s.kek.LastError() },
	}
	src.Peppers = func() (apikey.PepperRing, map[string]time.Time, error) {
		var r apikey.PepperRing
		if keys := s.keys.Load(); keys != nil {
			r.Peppers, r.Pending = keys.Peppers()
		} else {
			r = s.ring
		}
		if s.pepper == nil {
			return r, nil, nil
		}
		created := map[string]time.Time{}
		for _, e := range s.pepper.Info().Peppers {
			created[e.Version] = e.CreatedAt
		}
		return r, created, s.pepper.LastError()
	}
	if s.pepper != nil {
		src.PepperSource = "file"
	}
	return src
}
