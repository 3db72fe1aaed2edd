package httpapi

import (
	"context"

	"github.com/nops-kernel/nops/internal/degrade"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
)

// GetStatus is the status board: the degraded modes of this replica and its dependency checks.
func (h *handlers) GetStatus(ctx context.Context, _ gen.GetStatusRequestObject) (gen.GetStatusResponseObject, error) {
	if h.deps.Degrade == nil {
		return nil, errs.New(errs.Unavailable, "degraded modes are not enabled on this kernel")
	}
	st := h.deps.Degrade.Status()
	body := gen.Status{
		Status: gen.StatusStatusNormal,
		Modes:  degradedModes(st, false),
		Checks: checkResults(h.deps.Health.Check(ctx)),
	}
	if st.Degraded() {
		body.Status = gen.StatusStatusDegraded
	}
	if !st.CheckedAt.IsZero() {
		at := st.CheckedAt.UTC()
		body.CheckedAt = &at
	}
	ra := int(h.deps.Degrade.RetryAfter().Seconds())
	body.RetryAfterSeconds = &ra
	return gen.GetStatus200JSONResponse(body), nil
}

// degradedModes converts st's modes, only the active ones when activeOnly.
func degradedModes(st degrade.Status, activeOnly bool) []gen.DegradedMode {
	out := make([]gen.DegradedMode, 0, len(st.Modes))
	for _, m := range st.Modes {
		if activeOnly && !m.Active {
			continue
		}
		d := gen.DegradedMode{Mode: gen.DegradedModeMode(m.Mode), Active: m.Active}
		if m.Active {
			tr := gen.DegradedModeTrigger(m.Trigger)
			reason := m.Reason
			d.Trigger, d.Reason = &tr, &reason
		}
		if !m.Since.IsZero() {
			since := m.Since.UTC()
			d.Since = &since
		}
		out = append(out, d)
	}
	return out
}
