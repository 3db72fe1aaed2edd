package httpapi

import (
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/idempotency"
)

// idempotencyLockMargin is added to the HTTP write timeout to make the in-flight lock of an
// Idempotency-Key: a handler still running past the write timeout has no client left to answer,
// and the margin covers storing its response. After the lock, a retry may take the key over.
const idempotencyLockMargin = 5 * time.Second

// idempotencyMiddleware returns the Idempotency-Key middleware of the generated routes (see
// internal/idempotency), or nil when Deps has no idempotency store. It runs inside admission:
// the principal is known and the request was found valid, so it applies exactly to the POST and
// PATCH operations that require authentication (POST /v1/auth/token has no principal and passes
// through), and a request refused by admission is not recorded under its key.
func idempotencyMiddleware(deps Deps, errw errorWriter) (gen.MiddlewareFunc, error) {
	if deps.Idempotency == nil {
		return nil, nil
	}
	mw, err := idempotency.Middleware(deps.Idempotency, idempotency.Options{
		TTL:        deps.Config.Idempotency.TTL.D(),
		LockTTL:    deps.Config.HTTP.WriteTimeout.D() + idempotencyLockMargin,
		WriteError: errw.Write,
		Logger:     deps.Logger,
		Now:        deps.now,
	})
	if err != nil {
		return nil, fmt.Errorf("idempotency: %w", err)
	}
	return mw, nil
}
