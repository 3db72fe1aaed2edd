package token

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"time"
)

// jwk is one public key in RFC 7517 form. Only public members exist here, so a private or
// symmetric value cannot be published by mistake.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// publicJWK describes the public half of an asymmetric key (RFC 7518 §6, RFC 8037 §2).
func publicJWK(k *key) (*jwk, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	j := &jwk{Kid: k.id, Alg: k.alg, Use: "sig"}
	switch pub := k.verify.(type) {
	case ed25519.PublicKey:
		j.Kty, j.Crv, j.X = "OKP", "Ed25519", b64(pub)
	case *ecdsa.PublicKey:
		// Uncompressed point: 0x04 || X || Y, each coordinate padded to 32 bytes as RFC 7518 asks.
		pt, err := pub.Bytes()
		if err != nil {
			return nil, fmt.Errorf("encode ecdsa public key %s: %w", k.id, err)
		}
		j.Kty, j.Crv, j.X, j.Y = "EC", "P-256", b64(pt[1:33]), b64(pt[33:65])
	case *rsa.PublicKey:
		j.Kty, j.N, j.E = "RSA", b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())
	default:
		return nil, fmt.Errorf("no jwk form for %T", k.verify)
	}
	return j, nil
}

// buildJWKS renders the key set document of every asymmetric key not retired at now, oldest
// first, and returns the earliest retirement among them (zero when none retires): the document is
// stale from then on.
func buildJWKS(keys []*key, now time.Time) ([]byte, time.Time, error) {
	doc := struct {
		Keys []*jwk `json:"keys"`
	}{Keys: []*jwk{}}
	var until time.Time
	for _, k := range keys {
		if k.jwk == nil || !k.retiresAt.IsZero() && !now.Before(k.retiresAt) {
			continue
		}
		doc.Keys = append(doc.Keys, k.jwk)
		if !k.retiresAt.IsZero() && (until.IsZero() || k.retiresAt.Before(until)) {
			until = k.retiresAt
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("marshal jwks: %w", err)
	}
	return b, until, nil
}

// JWKS returns the RFC 7517 JSON key set {"keys":[...]} of every stored asymmetric key that is not
// retired — pending keys of a rotation included, so verifiers learn them before they sign — for
// GET /.well-known/jwks.json. Symmetric keys are never included. Keys added by other replicas
// appear after a reload. The document is built at each reload (and again, without I/O, once a key
// in it has retired), so this never does I/O and never fails; ctx and the error let key sets that
// do I/O share the interface (httpapi.KeySet). The returned slice is the caller's to keep or
// modify.
func (s *Service) JWKS(context.Context) ([]byte, error) {
	set := s.keys.Load()
	if now := s.cfg.Now(); !set.jwksUntil.IsZero() && !now.Before(set.jwksUntil) {
		b, _, err := buildJWKS(set.ordered, now)
		return b, err
	}
	return slices.Clone(set.jwks), nil
}
