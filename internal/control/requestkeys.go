package control

import (
	"context"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/reqsig"
)

// Audit actions of request-signing keys. Stable strings: auditors filter on them.
const (
	ActionRequestKeyCreate = "requestkey.create"
	ActionRequestKeyRotate = "requestkey.rotate"
	ActionRequestKeyRevoke = "requestkey.revoke"
)

// requestKeys returns the request key service, or an error when the kernel runs without one.
func (c *Control) requestKeys() (*reqsig.Keys, error) {
	if c.RequestKeys == nil {
		return nil, errs.New(errs.Unavailable, "request signing keys are not configured")
	}
	return c.RequestKeys, nil
}

// CreateRequestKey creates a request-signing key, audited in its tenant's tree. The HMAC secret
// (hmac-sha256 keys) is returned once and appears in no audit record, log or error.
func (c *Control) CreateRequestKey(ctx context.Context, in reqsig.CreateInput) (reqsig.Key, string, error) {
	keys, err := c.requestKeys()
	if err != nil {
		return reqsig.Key{}, "", err
	}
	var (
		k      reqsig.Key
		secret string
	)
	err = c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if k, secret, err = keys.Create(ctx, in); err != nil {
			return outcome{}, err
		}
		return outcome{tenant: k.TenantID, action: ActionRequestKeyCreate, resource: "request-keys/" + k.ID,
			reason: "allowed: " + string(k.Alg)}, nil
	})
	if err != nil {
		return reqsig.Key{}, "", err
	}
	return k, secret, nil
}

// RotateRequestKey replaces a key's secret (hmac-sha256, returned once) or public key
// (ed25519); the replaced one verifies for the grace period.
func (c *Control) RotateRequestKey(ctx context.Context, id string, in reqsig.RotateInput) (reqsig.Key, string, error) {
	keys, err := c.requestKeys()
	if err != nil {
		return reqsig.Key{}, "", err
	}
	var (
		k      reqsig.Key
		secret string
	)
	err = c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if k, secret, err = keys.Rotate(ctx, id, in); err != nil {
			return outcome{}, err
		}
		return outcome{tenant: k.TenantID, action: ActionRequestKeyRotate, resource: "request-keys/" + k.ID,
			reason: "allowed: previous valid until " + k.PrevValidUntil.UTC().Format(time.RFC3339)}, nil
	})
	// A lookup may have read the old row between the write and the commit: drop it again now
	// that the new one is visible.
	keys.Invalidate(id)
	if err != nil {
		return reqsig.Key{}, "", err
	}
	return k, secret, nil
}

// RevokeRequestKey revokes a key at once.
func (c *Control) RevokeRequestKey(ctx context.Context, id string) error {
	keys, err := c.requestKeys()
	if err != nil {
		return err
	}
	err = c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		k, err := keys.Revoke(ctx, id)
		if err != nil {
			return outcome{}, err
		}
		return outcome{tenant: k.TenantID, action: ActionRequestKeyRevoke, resource: "request-keys/" + k.ID}, nil
	})
	keys.Invalidate(id)
	return err
}
