package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
)

// ChangeKind says what a change of the CA's authorities was. The audit action of a change is
// "identity.ca." + its kind (AuditAction).
type ChangeKind string

// The kinds of change.
const (
	// ChangeCreate: the CA's first root and intermediate.
	ChangeCreate ChangeKind = "create"
	// ChangeRecover: a new root and intermediate because every root had expired.
	ChangeRecover ChangeKind = "recover"
	// ChangeRenew: a new intermediate under the current root, the old one past half its lifetime.
	ChangeRenew ChangeKind = "renew"
	// ChangeRotate: a planned root rotation (Rotate).
	ChangeRotate ChangeKind = "rotate"
	// ChangeRetire: roots whose retirement passed, and their intermediates, removed from the CA.
	ChangeRetire ChangeKind = "retire"
)

// AuditAction is the audit action recording a change of kind k: identity.ca.<kind>. Stable
// strings: auditors filter on them.
func (k ChangeKind) AuditAction() string { return "identity.ca." + string(k) }

// AuthorityInfo describes an authority without its key.
type AuthorityInfo struct {
	ID          string
	Kind        Kind
	ParentID    string
	NotBefore   time.Time
	NotAfter    time.Time
	ActivatesAt time.Time // intermediates: when it starts issuing
	RetiresAt   time.Time // roots: when it leaves the bundle; zero: at NotAfter
}

func infoOf(a Authority) AuthorityInfo {
	info := AuthorityInfo{ID: a.ID, Kind: a.Kind, ParentID: a.ParentID, NotAfter: a.NotAfter, RetiresAt: a.RetiresAt}
	if cert, err := x509.ParseCertificate(a.CertDER); err == nil {
		info.NotBefore = cert.NotBefore.UTC()
	}
	if a.Kind == KindIntermediate {
		info.ActivatesAt = a.activation()
	}
	return info
}

// Change is one committed change of a CA's authorities.
type Change struct {
	Kind        ChangeKind
	TrustDomain string
	Sequence    int64           // the CA's sequence after the change
	Added       []AuthorityInfo // new authorities, roots first
	Retiring    []AuthorityInfo // roots given a retirement by a rotation, with it
	Removed     []string        // IDs of the authorities removed (ChangeRetire)
}

// Rotate rotates the CA's root with an overlap: it adds a new root, which is in the bundle at
// once, and an intermediate under it that starts issuing RootRotationDelay later (after any
// intermediate already staged), and gives every other root still in the bundle a retirement at
// that activation + SVIDTTL + Backdate: by then every SVID the old intermediates issued has
// expired (the margin covers replicas whose clocks run up to Backdate behind). Refresh removes a
// retired root and its intermediates from the CA (ChangeRetire).
//
// It is one compare-and-set transaction on the sequence (joining the caller's), retried when
// another replica changed the CA first. It does not reload: call Refresh once the caller's
// transaction has committed (Run's next refresh does it otherwise, before the new intermediate
// activates, since RootRotationDelay ≥ RefreshInterval). Config.OnChange is not called: the
// caller records the rotation (internal/control does, as identity.ca.rotate).
func (ca *CA) Rotate(ctx context.Context) (Change, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	for range maxAttempts {
		seq, auths, err := ca.st.CAAuthorities(ctx, ca.td.Name())
		if err != nil {
			return Change{}, fmt.Errorf("identity ca: load authorities of %s: %w", ca.td.Name(), err)
		}
		if seq == 0 {
			return Change{}, errs.New(errs.Unavailable, "the identity CA of %s does not exist yet", ca.td.Name())
		}
		now := ca.cfg.Now()
		activates := now.Add(ca.cfg.RootRotationDelay)
		var retiring []AuthorityInfo
		for _, a := range auths {
			cert, err := x509.ParseCertificate(a.CertDER)
			if err != nil {
				return Change{}, fmt.Errorf("identity ca: parse the certificate of authority %s: %w", a.ID, err)
			}
			if !now.Before(cert.NotAfter) {
				continue
			}
			switch {
			case a.Kind == KindIntermediate && !activates.After(a.activation()):
				// Rotations activate in the order they were made.
				activates = a.activation().Add(time.Second)
			case a.Kind == KindRoot && a.RetiresAt.IsZero():
				retiring = append(retiring, infoOf(a))
			}
		}
		retiresAt := activates.Add(ca.cfg.SVIDTTL + Backdate).UTC()
		for i := range retiring {
			retiring[i].RetiresAt = retiresAt
		}
		root, rootKey, err := ca.newRoot(now)
		if err != nil {
			return Change{}, err
		}
		inter, err := ca.newIntermediate(now, root, rootKey)
		if err != nil {
			return Change{}, err
		}
		inter.ActivatesAt = activates.UTC()
		ch := ca.adding(ChangeRotate, root, inter).Change
		ch.Retiring, ch.Sequence = retiring, seq+1
		ids := make([]string, len(retiring))
		for i, r := range retiring {
			ids[i] = r.ID
		}
		err = ca.st.InTx(ctx, func(ctx context.Context) error {
			if err := ca.st.AddCAAuthorities(ctx, ca.td.Name(), seq, []Authority{root, inter}); err != nil {
				return err
			}
			return ca.st.RetireCAAuthorities(ctx, ca.td.Name(), ids, retiresAt)
		})
		switch {
		case errs.Is(err, errs.Conflict):
			continue
		case err != nil:
			return Change{}, fmt.Errorf("identity ca: rotate the root of %s: %w", ca.td.Name(), err)
		}
		ca.logChange(ctx, ch)
		return ch, nil
	}
	return Change{}, errors.New("identity ca: the authorities kept changing during the rotation")
}
