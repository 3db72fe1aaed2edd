// The built-in CA of workload identity (identity.Store), tables identity_cas and
// identity_authorities of migration 00016.
//
// CAAuthorities reads the sequence and the authorities in one statement, so they agree. Writes are
// a compare-and-set on the sequence followed by plain inserts; the caller runs them in one
// transaction. Creation is INSERT … ON CONFLICT DO NOTHING, not a caught unique violation, which
// would abort the caller's transaction.

package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/identity"
)

var _ identity.Store = (*Store)(nil)

// caAuthoritiesQuery lists a CA's authorities in the order they were added; a CA without any yet
// still yields one row (its sequence) through the outer join.
const caAuthoritiesQuery = `SELECT c.sequence, a.id, a.kind, a.parent_id, a.cert_der, a.sealed_key, a.not_after, a.created_at,
	a.activates_at, a.retires_at
	FROM identity_cas c LEFT JOIN identity_authorities a ON a.trust_domain = c.trust_domain
	WHERE c.trust_domain = $1 ORDER BY a.created_at, a.id`

// CAAuthorities returns the sequence and the authorities of the CA of trustDomain: 0 and none
// when it does not exist.
func (s *Store) CAAuthorities(ctx context.Context, trustDomain string) (int64, []identity.Authority, error) {
	what := fmt.Sprintf("read identity ca %s", trustDomain)
	rows, err := s.q(ctx).Query(ctx, caAuthoritiesQuery, trustDomain)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var (
		seq   int64
		auths []identity.Authority
	)
	for rows.Next() {
		var (
			id, kind, parent    *string
			notAfter, createdAt *time.Time
			activates, retires  *time.Time
			a                   identity.Authority
		)
		if err := rows.Scan(&seq, &id, &kind, &parent, &a.CertDER, &a.SealedKey, &notAfter, &createdAt, &activates, &retires); err != nil {
			return 0, nil, fmt.Errorf("%s: %w", what, err)
		}
		if id == nil {
			continue // the CA row of a CA without authorities
		}
		a.ID, a.Kind = *id, identity.Kind(*kind)
		if parent != nil {
			a.ParentID = *parent
		}
		a.NotAfter, a.CreatedAt = notAfter.UTC(), createdAt.UTC()
		a.ActivatesAt, a.RetiresAt = timeOrZero(activates), timeOrZero(retires)
		auths = append(auths, a)
	}
	if err := rows.Err(); err != nil {
		return 0, nil, fmt.Errorf("%s: %w", what, err)
	}
	return seq, auths, nil
}

// AddCAAuthorities moves the CA's sequence from prevSeq to prevSeq+1 (prevSeq 0: creates the CA)
// and inserts auths: an errs.Conflict when the sequence is no longer prevSeq. The caller's
// transaction makes the two one change.
func (s *Store) AddCAAuthorities(ctx context.Context, trustDomain string, prevSeq int64, auths []identity.Authority) error {
	if len(auths) == 0 {
		return errors.New("add identity ca authorities: none given")
	}
	what := fmt.Sprintf("add authorities to identity ca %s", trustDomain)
	at := auths[0].CreatedAt
	var (
		tag pgconn.CommandTag
		err error
	)
	if prevSeq == 0 {
		tag, err = s.q(ctx).Exec(ctx,
			`INSERT INTO identity_cas (trust_domain, sequence, updated_at) VALUES ($1, 1, $2) ON CONFLICT (trust_domain) DO NOTHING`,
			trustDomain, at)
	} else {
		tag, err = s.q(ctx).Exec(ctx,
			`UPDATE identity_cas SET sequence = sequence + 1, updated_at = $1 WHERE trust_domain = $2 AND sequence = $3`,
			at, trustDomain, prevSeq)
	}
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", what, err)
	case tag.RowsAffected() == 0:
		return errs.New(errs.Conflict, "identity ca %s changed since sequence %d", trustDomain, prevSeq)
	}
	for _, a := range auths {
		var parent *string
		if a.ParentID != "" {
			parent = &a.ParentID
		}
		_, err := s.q(ctx).Exec(ctx,
			`INSERT INTO identity_authorities (id, trust_domain, kind, parent_id, cert_der, sealed_key, not_after, created_at, activates_at, retires_at)
			 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			a.ID, trustDomain, string(a.Kind), parent, a.CertDER, a.SealedKey, a.NotAfter, a.CreatedAt, nullTime(a.ActivatesAt), nullTime(a.RetiresAt))
		switch {
		case isUniqueViolation(err):
			return errs.Wrap(errs.Conflict, err, "identity ca authority %s already exists", a.ID)
		case err != nil:
			return fmt.Errorf("%s: authority %s: %w", what, a.ID, err)
		}
	}
	return nil
}
