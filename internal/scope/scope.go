package scope

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nops-kernel/nops/internal/errs"
)

// Wildcard is the segment that matches any value.
const Wildcard = "*"

// MaxSegmentLen bounds one segment; it fits the longest capability name (128 bytes).
const MaxSegmentLen = 128

// Causes of the Forbidden errors of Check and Routes.Check, for errors.Is (and the audit reason).
var (
	ErrMissingScope = errors.New("missing scope")
	ErrNotOpen      = errors.New("operation not open to workload identities")
	ErrNotSelf      = errors.New("operation allowed on the caller itself only")
)

// Scope is service:operation:tenant. The zero Scope is not valid.
type Scope struct {
	Service   string
	Operation string
	Tenant    string
}

// Parse reads a scope, refusing anything but three valid segments.
func Parse(s string) (Scope, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return Scope{}, fmt.Errorf("scope %q: want service:operation:tenant", s)
	}
	for i, p := range parts {
		if err := ValidSegment(p); err != nil {
			return Scope{}, fmt.Errorf("scope %q: %s segment: %w", s, segmentNames[i], err)
		}
	}
	return Scope{Service: parts[0], Operation: parts[1], Tenant: parts[2]}, nil
}

var segmentNames = [3]string{"service", "operation", "tenant"}

// MustParse is Parse for scopes written in the code; it panics on an invalid one.
func MustParse(s string) Scope {
	sc, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sc
}

// ParseAll parses every scope of ss.
func ParseAll(ss []string) ([]Scope, error) {
	out := make([]Scope, 0, len(ss))
	for _, s := range ss {
		sc, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

// Strings renders scopes, for principal.Principal.Scopes and audit records.
func Strings(scopes []Scope) []string {
	out := make([]string, len(scopes))
	for i, s := range scopes {
		out[i] = s.String()
	}
	return out
}

// ValidSegment returns why seg is not a segment, or nil.
func ValidSegment(seg string) error {
	switch {
	case seg == Wildcard:
		return nil
	case seg == "":
		return errors.New("empty")
	case len(seg) > MaxSegmentLen:
		return fmt.Errorf("longer than %d bytes", MaxSegmentLen)
	}
	for i := 0; i < len(seg); i++ {
		if !segmentChar(seg[i]) {
			// A '*' lands here too: only a whole segment may be a wildcard.
			return fmt.Errorf("character %q at %d is not one of A-Z a-z 0-9 . _ -", seg[i], i)
		}
	}
	return nil
}

func segmentChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}

// String renders the scope as service:operation:tenant.
func (s Scope) String() string { return s.Service + ":" + s.Operation + ":" + s.Tenant }

// Valid reports whether every segment of s is valid.
func (s Scope) Valid() bool {
	return ValidSegment(s.Service) == nil && ValidSegment(s.Operation) == nil && ValidSegment(s.Tenant) == nil
}

// Covers reports whether the granted scope s allows need: each segment of s is the wildcard or
// equal to need's. An invalid scope on either side covers and is covered by nothing.
func (s Scope) Covers(need Scope) bool {
	if !s.Valid() || !need.Valid() {
		return false
	}
	return segmentCovers(s.Service, need.Service) &&
		segmentCovers(s.Operation, need.Operation) &&
		segmentCovers(s.Tenant, need.Tenant)
}

func segmentCovers(granted, need string) bool { return granted == Wildcard || granted == need }

// Grants reports whether any scope of granted covers need.
func Grants(granted []Scope, need Scope) bool {
	for _, g := range granted {
		if g.Covers(need) {
			return true
		}
	}
	return false
}

// Check returns nil when granted covers need, and otherwise an errs.Forbidden naming the needed
// scope (the client may learn which scope it lacks; it is not a secret) with ErrMissingScope as
// its cause.
func Check(granted []Scope, need Scope) error {
	if Grants(granted, need) {
		return nil
	}
	return errs.Wrap(errs.Forbidden, fmt.Errorf("%w %s", ErrMissingScope, need), "this operation needs the scope %s", need)
}
