package httpapi

import (
	"context"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/httpapi/gen"
	"github.com/nops-kernel/nops/internal/identity"
	"github.com/nops-kernel/nops/internal/token"
)

// Key rotations: the token signing keys (/v1/admin/signing-keys*) and the built-in CA's root
// (/v1/identity/ca/rotate). They need system scopes, which only a SUPER_ADMIN holds; both are
// audited by internal/control in the global tree.

func (h *handlers) ListSigningKeys(ctx context.Context, _ gen.ListSigningKeysRequestObject) (gen.ListSigningKeysResponseObject, error) {
	keys, err := h.deps.Control.ListSigningKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := gen.ListSigningKeys200JSONResponse{Items: make([]gen.SigningKey, 0, len(keys))}
	for _, k := range keys {
		out.Items = append(out.Items, signingKeyOut(k))
	}
	return out, nil
}

func (h *handlers) RotateSigningKey(ctx context.Context, req gen.RotateSigningKeyRequestObject) (gen.RotateSigningKeyResponseObject, error) {
	var alg string
	if req.Body != nil {
		alg = deref(req.Body.Algorithm)
	}
	r, err := h.deps.Control.RotateSigningKey(ctx, alg)
	if e := errs.As(err); e != nil && len(e.Fields) == 1 && e.Fields[0].Name == "algorithm" {
		return nil, errs.Field("body.algorithm", e.Fields[0].Reason)
	}
	if err != nil {
		return nil, err
	}
	out := gen.RotateSigningKey200JSONResponse{Key: signingKeyOut(r.Key), Superseded: r.Superseded}
	if out.Superseded == nil {
		out.Superseded = []string{}
	} else {
		out.RetiresAt = optTime(r.RetiresAt)
	}
	return out, nil
}

func signingKeyOut(k token.KeyInfo) gen.SigningKey {
	out := gen.SigningKey{
		Kid:         k.ID,
		Algorithm:   gen.SigningKeyAlgorithm(k.Algorithm),
		State:       gen.SigningKeyState(k.State),
		Source:      "store",
		CreatedAt:   optTime(k.CreatedAt),
		ActivatesAt: optTime(k.ActivatesAt),
		RetiresAt:   optTime(k.RetiresAt),
	}
	if k.FromConfig {
		out.Source = "config"
	}
	return out
}

func (h *handlers) RotateCA(ctx context.Context, _ gen.RotateCARequestObject) (gen.RotateCAResponseObject, error) {
	ch, err := h.deps.Control.RotateCA(ctx)
	if err != nil {
		return nil, err
	}
	out := gen.RotateCA200JSONResponse{TrustDomain: ch.TrustDomain, Sequence: ch.Sequence, Retiring: make([]gen.CAAuthority, 0, len(ch.Retiring))}
	for _, a := range ch.Added {
		switch a.Kind {
		case identity.KindRoot:
			out.Root = authorityOut(a)
		case identity.KindIntermediate:
			out.Intermediate = authorityOut(a)
		}
	}
	for _, a := range ch.Retiring {
		out.Retiring = append(out.Retiring, authorityOut(a))
	}
	return out, nil
}

func authorityOut(a identity.AuthorityInfo) gen.CAAuthority {
	return gen.CAAuthority{
		Id:          a.ID,
		Kind:        gen.CAAuthorityKind(a.Kind),
		ParentId:    optString(a.ParentID),
		NotBefore:   a.NotBefore,
		NotAfter:    a.NotAfter,
		ActivatesAt: optTime(a.ActivatesAt),
		RetiresAt:   optTime(a.RetiresAt),
	}
}
