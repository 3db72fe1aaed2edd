package httpapi

import (
	"context"

	"github.com/nops-kernel/nops/internal/control"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
)

// SecretsReporter reports where rotations of the kernel's own secrets stand (control.SecretsSource).
type SecretsReporter interface {
	Status(ctx context.Context) (control.SecretsStatus, error)
}

// GetSecretsStatus serves GET /v1/admin/secrets/status (system:read: SUPER_ADMIN).
func (h *handlers) GetSecretsStatus(ctx context.Context, _ gen.GetSecretsStatusRequestObject) (gen.GetSecretsStatusResponseObject, error) {
	if h.deps.Secrets == nil {
		return nil, errs.New(errs.Unavailable, "secret rotation status is not available on this kernel")
	}
	st, err := h.deps.Secrets.Status(ctx)
	if err != nil {
		return nil, err
	}
	return gen.GetSecretsStatus200JSONResponse(secretsStatusOut(st)), nil
}

func secretsStatusOut(st control.SecretsStatus) gen.SecretsStatus {
	out := gen.SecretsStatus{
		CheckedAt: st.CheckedAt,
		ApiKeyPepper: gen.PepperRotationStatus{
			Source:      gen.PepperRotationStatusSource(st.Pepper.Source),
			Current:     st.Pepper.Current,
			ReloadError: optString(st.Pepper.ReloadError),
			Versions:    make([]gen.PepperVersionStatus, 0, len(st.Pepper.Versions)),
		},
		Kek: gen.KEKRotationStatus{
			Current:     st.KEK.Current,
			ReloadError: optString(st.KEK.ReloadError),
			Versions:    make([]gen.KEKVersionStatus, 0, len(st.KEK.Versions)),
		},
	}
	for _, v := range st.Pepper.Versions {
		out.ApiKeyPepper.Versions = append(out.ApiKeyPepper.Versions, gen.PepperVersionStatus{
			Version: v.Version, State: gen.SecretVersionState(v.State), CreatedAt: optTime(v.CreatedAt),
			InUse: v.InUse(), ApiKeys: v.Keys, PreviousSecrets: v.PreviousSecrets, Inactive: v.Inactive,
		})
	}
	for _, v := range st.KEK.Versions {
		out.Kek.Versions = append(out.Kek.Versions, gen.KEKVersionStatus{
			Version: v.Version, State: gen.SecretVersionState(v.State), CreatedAt: optTime(v.CreatedAt),
			InUse: v.InUse(), RequestKeySecrets: v.RequestKeySecrets, CaKeys: v.CAKeys, SigningKeys: v.SigningKeys,
		})
	}
	return out
}
