package token

import (
	"context"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// KeyState is where a signing key is in its life, at a given time.
type KeyState string

// The states of a signing key.
const (
	// StatePending: published in the JWKS, verifies, and starts signing at its activation.
	StatePending KeyState = "pending"
	// StateSigning: the key this kernel signs new tokens with.
	StateSigning KeyState = "signing"
	// StateVerifying: in the JWKS and accepted, but not signing: a superseded key until its
	// retirement, or a key of an algorithm this kernel does not sign with.
	StateVerifying KeyState = "verifying"
	// StateRetired: neither published nor accepted any more.
	StateRetired KeyState = "retired"
)

// KeyInfo describes a signing key without its material.
type KeyInfo struct {
	ID          string
	Algorithm   string
	CreatedAt   time.Time // zero for the configured HS256 secret
	ActivatesAt time.Time // zero for the configured HS256 secret
	RetiresAt   time.Time // zero while the key is current
	State       KeyState
	// FromConfig marks the HS256 secret of the configuration (auth.hs256_secret): never stored,
	// never rotated here.
	FromConfig bool
}

// Rotation is what Rotate did.
type Rotation struct {
	Key        KeyInfo   // the new key, pending until Key.ActivatesAt
	Superseded []string  // the keys it supersedes, of the same algorithm
	RetiresAt  time.Time // when the superseded keys leave the JWKS and stop verifying
}

// Rotate stores a new signing key of alg ("" means the configured algorithm, the only one
// accepted) that is published at once and signs from now + PublishDelay on every replica, and
// supersedes the current keys of alg: they keep signing until the new key activates, then keep
// verifying until every token they signed has expired (TTL + leeway after the activation), and
// retire. It runs in the caller's transaction when ctx carries one and does not reload: call
// Reload once the transaction has committed (the periodic reload of Run does it otherwise, well
// before the key activates). With an HS256 secret from the configuration it refuses (409): that
// secret is rotated in the configuration.
func (s *Service) Rotate(ctx context.Context, alg string) (Rotation, error) {
	if s.secret != nil {
		return Rotation{}, errs.New(errs.Conflict,
			"the HS256 signing secret comes from the configuration (auth.hs256_secret): rotate it there, or unset it to let the kernel store and rotate its keys")
	}
	if alg == "" {
		alg = s.cfg.Algorithm
	}
	if methodFor(alg) == nil {
		return Rotation{}, errs.Field("algorithm", fmt.Sprintf("must be one of %s, %s, %s, %s; got %q", AlgEdDSA, AlgES256, AlgRS256, AlgHS256, alg))
	}
	if alg != s.cfg.Algorithm {
		return Rotation{}, errs.Field("algorithm", fmt.Sprintf("this kernel signs with %s (auth.signing_alg); a %s key would never sign: change auth.signing_alg to switch algorithms",
			s.cfg.Algorithm, alg))
	}
	sk, err := generateKey(alg, s.cfg.Now())
	if err != nil {
		return Rotation{}, fmt.Errorf("rotate signing key: %w", err)
	}
	sk.ActivatesAt = sk.CreatedAt.Add(s.cfg.PublishDelay)
	if sk, err = s.seal(sk); err != nil {
		return Rotation{}, fmt.Errorf("rotate signing key: %w", err)
	}
	overlap := s.cfg.TTL + s.cfg.Leeway
	stored, superseded, err := s.store.RotateSigningKey(ctx, sk, overlap)
	if err != nil {
		return Rotation{}, fmt.Errorf("rotate %s signing key: %w", alg, err)
	}
	s.logger.InfoContext(ctx, "signing key rotated", "kid", stored.ID, "alg", alg, "activates_at", stored.ActivatesAt, "superseded", superseded)
	info := infoOf(stored)
	info.State = StatePending
	return Rotation{Key: info, Superseded: superseded, RetiresAt: stored.ActivatesAt.Add(overlap)}, nil
}

// Keys lists the signing keys as stored now (not as this replica last loaded them), oldest first,
// with their state at this moment; the configured HS256 secret comes first when there is one.
func (s *Service) Keys(ctx context.Context) ([]KeyInfo, error) {
	stored, err := s.store.SigningKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	now := s.cfg.Now()
	var out []KeyInfo
	var signers []*key
	if s.secret != nil {
		out = append(out, KeyInfo{ID: s.secret.id, Algorithm: AlgHS256, State: StateSigning, FromConfig: true})
	} else {
		for _, sk := range stored {
			if sk.Algorithm == s.cfg.Algorithm {
				signers = append(signers, &key{id: sk.ID, alg: sk.Algorithm, createdAt: sk.CreatedAt, activatesAt: sk.activation(), retiresAt: sk.RetiresAt})
			}
		}
	}
	signing := signerAt(signers, now)
	for _, sk := range stored {
		if s.secret != nil && sk.ID == s.secret.id {
			continue
		}
		info := infoOf(sk)
		switch {
		case !sk.RetiresAt.IsZero() && !now.Before(sk.RetiresAt):
			info.State = StateRetired
		case signing != nil && sk.ID == signing.id:
			info.State = StateSigning
		case now.Before(sk.activation()):
			info.State = StatePending
		default:
			info.State = StateVerifying
		}
		out = append(out, info)
	}
	return out, nil
}

func infoOf(sk SigningKey) KeyInfo {
	return KeyInfo{ID: sk.ID, Algorithm: sk.Algorithm, CreatedAt: sk.CreatedAt, ActivatesAt: sk.activation(), RetiresAt: sk.RetiresAt}
}

// Run reloads the keys every ReloadInterval until ctx ends, so that a key another replica rotated
// is held here before it signs (PublishDelay ≥ ReloadInterval) and keys retire from the JWKS. A
// failed reload is logged and the current keys keep serving. It returns nil when ctx ends.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.Reload(ctx); err != nil && ctx.Err() == nil {
				s.logger.WarnContext(ctx, "periodic reload of signing keys failed", "error", err)
			}
		}
	}
}
