package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nops-kernel/nops/internal/apikey"
	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/token"
)

// APIKeyVerifier checks a raw API key and returns the key it names; *apikey.Service implements
// it. Every refusal is an errs.Unauthenticated error; any other error is a failure to check.
type APIKeyVerifier interface {
	Verify(ctx context.Context, raw string) (apikey.Key, error)
}

// errNoAPIKeys is returned when the Service was built without Options.APIKeys: a wiring fault,
// reported as an internal error rather than as a refused credential.
var errNoAPIKeys = errors.New("api key login is not configured")

// errBadAPIKey is the one answer to every refused API key, so callers cannot tell an unknown key
// from a wrong secret, a revoked, expired or rotated-out one.
func errBadAPIKey(cause error) error {
	return errs.Wrap(errs.Unauthenticated, cause, "invalid api key")
}

// LoginAPIKey exchanges a raw API key ("nops_<keyid>_<secret>") for a token whose principal is
// the key's: Subject is the key ID, with the key's tenant, its one role and its scopes. scope,
// when not empty, is a space-separated subset of the key's scopes. Unlike password logins,
// refusals are not slowed down: a key's secret has 256 bits, so there is nothing to guess.
//
// The token lives as long as the issuer's tokens do, even if the key expires, is revoked or is
// rotated out sooner; clients that need revocation to take effect at once send X-API-Key.
func (s *Service) LoginAPIKey(ctx context.Context, raw, scope string) (Token, error) {
	if s.opts.APIKeys == nil {
		return Token{}, errNoAPIKeys
	}
	k, err := s.opts.APIKeys.Verify(ctx, raw)
	switch {
	case errs.Is(err, errs.Unauthenticated):
		// The verifier has logged why; the caller learns nothing more than "invalid".
		return Token{}, errBadAPIKey(err)
	case err != nil:
		return Token{}, fmt.Errorf("api key login: %w", err)
	}
	scopes, err := narrowScopes(k.Scopes, scope)
	if err != nil {
		return Token{}, err
	}
	claims := token.Claims{Subject: k.ID, Tenant: k.TenantID, Roles: []string{k.Role}, Scopes: scopes}
	access, exp, err := s.issuer.Issue(ctx, claims)
	if err != nil {
		return Token{}, fmt.Errorf("issue token for api key %s: %w", k.ID, err)
	}
	s.opts.Logger.InfoContext(ctx, "api key login succeeded", "subject", k.ID)
	return Token{AccessToken: access, ExpiresAt: exp, Scopes: scopes}, nil
}

// narrowScopes returns granted when scope is blank, and otherwise the distinct scopes of the
// space-separated scope, each of which must be in granted.
func narrowScopes(granted []string, scope string) ([]string, error) {
	if strings.TrimSpace(scope) == "" {
		return slices.Clone(granted), nil
	}
	var out []string
	for _, sc := range strings.Fields(scope) {
		if !slices.Contains(granted, sc) {
			return nil, errs.Field("body.scope", fmt.Sprintf("scope %q is not granted to this key", sc))
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}
