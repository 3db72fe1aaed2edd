package apikey

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// PepperUse counts the stored digests that name one pepper version.
type PepperUse struct {
	Version string
	// Keys are live keys (not revoked, not expired) whose current secret is hashed with Version.
	Keys int64
	// PreviousSecrets are live keys whose previous secret, still within its grace period, is
	// hashed with Version.
	PreviousSecrets int64
	// Inactive are digests naming Version that no longer verify anyway: of revoked or expired
	// keys, and previous secrets past their grace period. They do not hold a pepper back.
	Inactive int64
}

// InUse is what stops Version from being retired: digests that still verify.
func (u PepperUse) InUse() int64 { return u.Keys + u.PreviousSecrets }

// PepperUseStore counts and finds keys by the pepper of their digests.
type PepperUseStore interface {
	// APIKeyPepperUse counts, per pepper version named by any stored digest, the digests as
	// PepperUse describes them at now. Versions come in no particular order.
	APIKeyPepperUse(ctx context.Context, now time.Time) ([]PepperUse, error)
	// APIKeysUsingPepper returns the IDs (ascending, at most limit) of the live keys with a
	// digest hashed with version that still verifies at now: what retiring version would break.
	APIKeysUsingPepper(ctx context.Context, version string, now time.Time, limit int) ([]string, error)
}

// PepperVersionStatus is one pepper version: its state, when it was created (zero when it came
// from configuration, or is unknown) and what uses it.
type PepperVersionStatus struct {
	PepperUse
	State     PepperState
	CreatedAt time.Time
}

// PepperStatus is where a rotation of the API-key pepper stands on one kernel: the current
// version, and every version the kernel holds or a stored digest names.
type PepperStatus struct {
	Current  string
	Versions []PepperVersionStatus // in the order: older, current, pending, unknown; then by version
}

// PepperStatusOf reports the peppers of ring against the digests in st at now. created gives
// the creation time of a version when known (a pepper file's); nil for none.
func PepperStatusOf(ctx context.Context, st PepperUseStore, ring PepperRing, created map[string]time.Time, now time.Time) (PepperStatus, error) {
	uses, err := st.APIKeyPepperUse(ctx, now)
	if err != nil {
		return PepperStatus{}, fmt.Errorf("count api keys by pepper: %w", err)
	}
	byVersion := map[string]PepperUse{}
	for _, u := range uses {
		byVersion[u.Version] = u
	}
	cur := ring.Peppers.Current().Version
	out := PepperStatus{Current: cur}
	for _, v := range ring.Peppers.Versions() {
		state := PepperOlder
		switch {
		case v == cur:
			state = PepperCurrent
		case slices.Contains(ring.Pending, v):
			state = PepperPending
		}
		u := byVersion[v]
		u.Version = v
		delete(byVersion, v)
		out.Versions = append(out.Versions, PepperVersionStatus{PepperUse: u, State: state, CreatedAt: created[v]})
	}
	for _, u := range byVersion {
		out.Versions = append(out.Versions, PepperVersionStatus{PepperUse: u, State: PepperUnknown})
	}
	rank := map[PepperState]int{PepperOlder: 0, PepperCurrent: 1, PepperPending: 2, PepperUnknown: 3}
	slices.SortFunc(out.Versions, func(a, b PepperVersionStatus) int {
		return cmp.Or(cmp.Compare(rank[a.State], rank[b.State]), cmp.Compare(a.Version, b.Version))
	})
	return out, nil
}

// Version returns the status of version, if the report has it.
func (s PepperStatus) Version(version string) (PepperVersionStatus, bool) {
	i := slices.IndexFunc(s.Versions, func(v PepperVersionStatus) bool { return v.Version == version })
	if i < 0 {
		return PepperVersionStatus{}, false
	}
	return s.Versions[i], true
}

// ErrPepperInUse is wrapped by CheckRetirePepper's refusal.
var ErrPepperInUse = errors.New("pepper still in use")

// maxListedKeys is how many key IDs a refusal names.
const maxListedKeys = 10

// CheckRetirePepper returns nil when no stored digest that still verifies is hashed with
// version at now, else an error wrapping ErrPepperInUse that says what uses it: how many keys
// and previous secrets, and the first key IDs. Inactive digests (revoked or expired keys) do not
// hold a pepper back. Retiring a pepper some key uses stops that key from verifying.
func CheckRetirePepper(ctx context.Context, st PepperUseStore, version string, now time.Time) error {
	uses, err := st.APIKeyPepperUse(ctx, now)
	if err != nil {
		return fmt.Errorf("count api keys by pepper: %w", err)
	}
	var u PepperUse
	for _, x := range uses {
		if x.Version == version {
			u = x
		}
	}
	if u.InUse() == 0 {
		return nil
	}
	ids, err := st.APIKeysUsingPepper(ctx, version, now, maxListedKeys)
	if err != nil {
		return fmt.Errorf("list api keys of pepper %s: %w", version, err)
	}
	more := ""
	if n := u.Keys + u.PreviousSecrets; n > int64(len(ids)) {
		more = fmt.Sprintf(" (first %d shown)", len(ids))
	}
	return fmt.Errorf("%w: pepper %s hashes %d live api keys and %d previous secrets in grace: %s%s; "+
		"each moves to the current pepper the next time it is used, or rotate or revoke it",
		ErrPepperInUse, version, u.Keys, u.PreviousSecrets, strings.Join(ids, ", "), more)
}
