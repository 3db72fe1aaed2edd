package control

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/token"
)

// Audit actions of key rotations. Stable strings: auditors filter on them. The CA's automatic
// changes are recorded as identity.ChangeKind.AuditAction: identity.ca.create, .recover, .renew and
// .retire.
const (
	ActionSigningKeyRotate = "token.signing_key.rotate"
	ActionCARotate         = "identity.ca.rotate"
)

// SigningKeys is the token service as rotations use it; *token.Service implements it.
type SigningKeys interface {
	Rotate(ctx context.Context, alg string) (token.Rotation, error)
	Reload(ctx context.Context) error
	Keys(ctx context.Context) ([]token.KeyInfo, error)
}

// CARotator is the built-in CA as rotations use it; *identity.CA implements it.
type CARotator interface {
	Rotate(ctx context.Context) (identity.Change, error)
	Refresh(ctx context.Context) error
}

// ListSigningKeys lists the token signing keys with their state (never their material).
func (c *Control) ListSigningKeys(ctx context.Context) ([]token.KeyInfo, error) {
	if c.SigningKeys == nil {
		return nil, errs.New(errs.Unavailable, "token signing keys are not managed on this kernel")
	}
	return c.SigningKeys.Keys(ctx)
}

// RotateSigningKey rotates the token signing key of alg ("" for the configured one), recorded in
// the global tree with resource "signing-keys/<new kid>". This replica reloads its keys once the
// rotation has committed; the others within their reload interval, before the key activates.
func (c *Control) RotateSigningKey(ctx context.Context, alg string) (token.Rotation, error) {
	if c.SigningKeys == nil {
		return token.Rotation{}, errs.New(errs.Unavailable, "token signing keys are not managed on this kernel")
	}
	var r token.Rotation
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if r, err = c.SigningKeys.Rotate(ctx, alg); err != nil {
			return outcome{}, err
		}
		reason := fmt.Sprintf("allowed: %s key activates %s", r.Key.Algorithm, r.Key.ActivatesAt.UTC().Format(time.RFC3339))
		if len(r.Superseded) > 0 {
			reason += fmt.Sprintf("; supersedes %s, retiring %s", strings.Join(r.Superseded, ", "), r.RetiresAt.UTC().Format(time.RFC3339))
		}
		return outcome{action: ActionSigningKeyRotate, resource: "signing-keys/" + r.Key.ID, reason: truncateUTF8(reason, maxActionReason)}, nil
	})
	if err != nil {
		return token.Rotation{}, err
	}
	if err := c.SigningKeys.Reload(ctx); err != nil {
		// The rotation is durable; the periodic reload picks it up before the key activates.
		c.opts.Logger.WarnContext(ctx, "reload signing keys after a rotation", "error", err)
	}
	return r, nil
}

// RotateCA rotates the root of the built-in CA (identity.CA.Rotate), recorded in the global tree
// with resource "identity/ca/<trust domain>". This replica refreshes its CA once the rotation has
// committed; the others within their refresh interval, before the new intermediate activates.
func (c *Control) RotateCA(ctx context.Context) (identity.Change, error) {
	if c.CA == nil {
		return identity.Change{}, errs.New(errs.Unavailable, "the built-in identity CA is not enabled on this kernel")
	}
	var ch identity.Change
	err := c.mutate(ctx, func(ctx context.Context) (outcome, error) {
		var err error
		if ch, err = c.CA.Rotate(ctx); err != nil {
			return outcome{}, err
		}
		return caOutcome(ch), nil
	})
	if err != nil {
		return identity.Change{}, err
	}
	if err := c.CA.Refresh(ctx); err != nil {
		c.opts.Logger.WarnContext(ctx, "refresh the identity ca after a rotation", "error", err)
	}
	return ch, nil
}

// RecordCAChange records a change the CA made on its own (its creation, an intermediate's renewal,
// the removal of retired roots) in the global tree, inside the change's transaction: it is the
// CA's identity.Config.OnChange. The actor is the system.
func (c *Control) RecordCAChange(ctx context.Context, ch identity.Change) error {
	o := caOutcome(ch)
	return c.appendOnly(ctx, o.tenant, o.action, o.resource, o.reason)
}

// caOutcome is the audit record of a change of the CA.
func caOutcome(ch identity.Change) outcome {
	var parts []string
	for _, a := range ch.Added {
		p := fmt.Sprintf("%s %s", a.Kind, a.ID)
		if a.Kind == identity.KindIntermediate {
			p += fmt.Sprintf(" under %s, issuing from %s", a.ParentID, a.ActivatesAt.UTC().Format(time.RFC3339))
		}
		parts = append(parts, p)
	}
	for _, r := range ch.Retiring {
		parts = append(parts, fmt.Sprintf("root %s retires %s", r.ID, r.RetiresAt.UTC().Format(time.RFC3339)))
	}
	if len(ch.Removed) > 0 {
		parts = append(parts, "removed "+strings.Join(ch.Removed, ", "))
	}
	parts = append(parts, fmt.Sprintf("sequence %d", ch.Sequence))
	return outcome{
		action:   ch.Kind.AuditAction(),
		resource: "identity/ca/" + ch.TrustDomain,
		reason:   truncateUTF8("allowed: "+strings.Join(parts, "; "), maxActionReason),
	}
}
