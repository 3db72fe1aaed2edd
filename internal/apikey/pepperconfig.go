package apikey

import (
	"fmt"
	"strings"
)

// PeppersFromConfig returns the peppers given in configuration: the current one (version,
// secretText, as PepperFromConfig) and the older ones still accepted for verification, listed in
// previous as whitespace-separated "<version>:<secret>" entries (a version holds no ':' and a
// secret no whitespace, so the split is unambiguous). Keys hashed with an older pepper are
// re-digested under the current one as they verify. Errors name versions and positions, never a
// secret.
func PeppersFromConfig(version, secretText, previous string) (Peppers, error) {
	cur, err := PepperFromConfig(version, secretText)
	if err != nil {
		return Peppers{}, err
	}
	var older []Pepper
	for i, entry := range strings.Fields(previous) {
		v, secret, ok := strings.Cut(entry, ":")
		if !ok || v == "" || secret == "" {
			return Peppers{}, fmt.Errorf("previous pepper %d: want <version>:<secret>", i+1)
		}
		p, err := PepperFromConfig(v, secret)
		if err != nil {
			return Peppers{}, fmt.Errorf("previous pepper %d: %w", i+1, err)
		}
		older = append(older, p)
	}
	return NewPeppers(cur, older...)
}
