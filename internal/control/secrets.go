package control

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/sealbox"
	"github.com/nops-kernel/nops/internal/token"
)

// Audit actions of the rotation of the kernel's own secrets: the API-key pepper and the
// key-encryption key (KEK) sealing request-signing secrets and the identity CA's keys. Stable
// strings: auditors filter on them. Each step of a rotation is one record in the global tree,
// saying the step and the versions (never key material); see docs/operations.md, "Rotating keys".
const (
	ActionPepperRotate = "apikey.pepper.rotate"
	ActionKEKRotate    = "signing.kek.rotate"
)

// The secrets a rotation step is about, and the resources their records name.
const (
	SecretPepper = "api-key-pepper"
	SecretKEK    = "kek"
)

// The steps of a rotation.
const (
	StepAdd     = "add"     // a new version every replica knows, not used for new digests or seals yet
	StepPromote = "promote" // the version new digests or seals use
	StepRewrap  = "rewrap"  // sealed values moved to the current KEK
	StepRetire  = "retire"  // a version removed
)

// SecretStep is one step of a rotation, as its audit record says it.
type SecretStep struct {
	Secret   string // SecretPepper or SecretKEK
	Step     string // StepAdd, StepPromote, StepRewrap or StepRetire
	Version  string // the version added, promoted or retired; for a rewrap, the current KEK
	Previous string // for a promotion: the version that was current
	Forced   bool   // a retirement forced while something still used the version
	Detail   string // what the step found or did (counts); never key material
	Host     string // where the key file was changed: the host name of the command
}

// RecordSecretStep appends the audit record of a rotation step carried out on a key file, in the
// global tree, with the actor from ctx (the operator running the command).
func (c *Control) RecordSecretStep(ctx context.Context, s SecretStep) error {
	action := ActionPepperRotate
	switch s.Secret {
	case SecretPepper:
	case SecretKEK:
		action = ActionKEKRotate
	default:
		return fmt.Errorf("record secret step: unknown secret %q", s.Secret)
	}
	reason := []string{"step=" + s.Step, "version=" + s.Version}
	if s.Previous != "" {
		reason = append(reason, "previous="+s.Previous)
	}
	if s.Forced {
		reason = append(reason, "forced=true")
	}
	if s.Host != "" {
		reason = append(reason, "host="+s.Host)
	}
	if s.Detail != "" {
		reason = append(reason, s.Detail)
	}
	return c.RecordAction(ctx, Action{Action: action, Resource: "secrets/" + s.Secret, Reason: strings.Join(reason, " ")})
}

// SealedAAD returns the associated data the value r names was sealed with: the key ID for a
// request-signing secret (internal/reqsig), identity.SealAAD for a CA key, token.SealAAD for a
// token signing key.
func SealedAAD(r sealbox.Ref) ([]byte, error) {
	switch r.Kind {
	case sealbox.KindRequestKey:
		return []byte(r.ID), nil
	case sealbox.KindCAKey:
		return identity.SealAAD(r.ID), nil
	case sealbox.KindSigningKey:
		return token.SealAAD(r.ID), nil
	}
	return nil, fmt.Errorf("sealed value of unknown kind %q", r.Kind)
}

// RewrapOptions are the optional settings of Rewrap.
type RewrapOptions struct {
	Batch    int                        // values per transaction; 0: sealbox's default
	Progress func(scanned, total int64) // told after each batch
	Host     string                     // recorded with the step
}

// Rewrap re-seals every value of st not sealed under box's current KEK (sealbox.Rewrap), a
// batch per transaction, and records the step — even one that failed part way, saying so — in
// the audit trail. st must be the store Control writes to. It is idempotent. A value that did not
// open is an error after the others were done: its KEK is missing from box, and retiring that
// KEK would lose it.
func (c *Control) Rewrap(ctx context.Context, st sealbox.Store, box *sealbox.Box, opts RewrapOptions) (sealbox.RewrapResult, error) {
	res, err := sealbox.Rewrap(ctx, st, box, sealbox.RewrapOptions{AAD: SealedAAD, InTx: c.store.InTx, Batch: opts.Batch, Progress: opts.Progress})
	detail := fmt.Sprintf("scanned=%d rewrapped=%d already_current=%d changed_meanwhile=%d failed=%d",
		res.Scanned, res.Rewrapped, res.Current, res.Changed, res.Failed)
	if err != nil {
		detail += " stopped=" + strings.ReplaceAll(err.Error(), " ", "_")
	}
	auditErr := c.RecordSecretStep(context.WithoutCancel(ctx), SecretStep{Secret: SecretKEK, Step: StepRewrap, Version: box.Current(), Detail: detail, Host: opts.Host})
	if err != nil {
		return res, err
	}
	if auditErr != nil {
		return res, auditErr
	}
	if res.Failed > 0 {
		refs := make([]string, 0, len(res.FailedRefs))
		for _, r := range res.FailedRefs {
			refs = append(refs, r.String())
		}
		return res, fmt.Errorf("%d sealed values do not open with the key file's keys (a key missing from the file, or a damaged value): %s",
			res.Failed, strings.Join(refs, ", "))
	}
	return res, nil
}

// SecretsStore is what the status of secret rotations reads.
type SecretsStore interface {
	apikey.PepperUseStore
	sealbox.Store
}

// SecretsSource is what a status of secret rotations is made from: on a kernel the sets in use
// (and why their last reload failed, if it did), in a command the key files themselves.
type SecretsSource struct {
	Store SecretsStore
	// PepperSource is "file" (api_keys.pepper_file) or "config" (api_keys.pepper).
	PepperSource string
	// Peppers returns the peppers in use, the creation time of each version when known (a
	// pepper file's; nil for configuration), and the last reload's failure.
	Peppers func() (apikey.PepperRing, map[string]time.Time, error)
	// KEK returns the key file in use and the last reload's failure.
	KEK func() (sealbox.FileInfo, error)
	Now func() time.Time // nil: time.Now
}

// SecretsStatus is where rotations of the kernel's secrets stand.
type SecretsStatus struct {
	CheckedAt time.Time
	Pepper    PepperStatus
	KEK       KEKStatus
}

// PepperStatus is the API-key pepper's part of SecretsStatus.
type PepperStatus struct {
	apikey.PepperStatus
	Source      string
	ReloadError string // why the last reload of the pepper file failed; "" when it did not
}

// KEKStatus is the key-encryption key's part of SecretsStatus.
type KEKStatus struct {
	Current     string
	ReloadError string
	Versions    []KEKVersionStatus // in the order: older, current, pending, unknown; then by version
}

// KEKVersionStatus is one KEK version and the stored values it seals.
type KEKVersionStatus struct {
	Version           string
	State             string // sealbox.State, or "unknown" for a version values name that the file lacks
	CreatedAt         time.Time
	RequestKeySecrets int64
	CAKeys            int64
	SigningKeys       int64 // token signing keys (internal/token)
}

// InUse is what stops the version from being retired.
func (v KEKVersionStatus) InUse() int64 { return v.RequestKeySecrets + v.CAKeys + v.SigningKeys }

// Status reports the versions of both secrets and how many stored items use each.
func (src SecretsSource) Status(ctx context.Context) (SecretsStatus, error) {
	now := time.Now
	if src.Now != nil {
		now = src.Now
	}
	out := SecretsStatus{CheckedAt: now().UTC()}
	ring, created, perr := src.Peppers()
	ps, err := apikey.PepperStatusOf(ctx, src.Store, ring, created, out.CheckedAt)
	if err != nil {
		return SecretsStatus{}, err
	}
	out.Pepper = PepperStatus{PepperStatus: ps, Source: src.PepperSource, ReloadError: errText(perr)}

	info, kerr := src.KEK()
	uses, err := src.Store.SealedUse(ctx)
	if err != nil {
		return SecretsStatus{}, fmt.Errorf("count sealed values: %w", err)
	}
	out.KEK = KEKStatus{Current: info.Current, ReloadError: errText(kerr)}
	byVersion := map[string]*KEKVersionStatus{}
	for _, k := range info.Keys {
		out.KEK.Versions = append(out.KEK.Versions, KEKVersionStatus{Version: k.Version, State: string(k.State), CreatedAt: k.CreatedAt})
	}
	for i := range out.KEK.Versions {
		byVersion[out.KEK.Versions[i].Version] = &out.KEK.Versions[i]
	}
	var unknown []KEKVersionStatus
	for _, u := range uses {
		v := byVersion[u.Version]
		if v == nil {
			i := slices.IndexFunc(unknown, func(x KEKVersionStatus) bool { return x.Version == u.Version })
			if i < 0 {
				unknown = append(unknown, KEKVersionStatus{Version: u.Version, State: "unknown"})
				i = len(unknown) - 1
			}
			v = &unknown[i]
		}
		switch u.Kind {
		case sealbox.KindRequestKey:
			v.RequestKeySecrets += u.Count
		case sealbox.KindCAKey:
			v.CAKeys += u.Count
		case sealbox.KindSigningKey:
			v.SigningKeys += u.Count
		}
	}
	out.KEK.Versions = append(out.KEK.Versions, unknown...)
	rank := map[string]int{string(sealbox.StateOlder): 0, string(sealbox.StateCurrent): 1, string(sealbox.StatePending): 2, "unknown": 3}
	slices.SortStableFunc(out.KEK.Versions, func(a, b KEKVersionStatus) int {
		return cmp.Or(cmp.Compare(rank[a.State], rank[b.State]), cmp.Compare(a.Version, b.Version))
	})
	return out, nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
