package tenant

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/nops-kernel/nops/internal/errs"
)

// IDPrefix starts every tenant ID.
const IDPrefix = "ten_"

// Limits of the client-supplied fields.
const (
	MaxNameLen        = 63  // bytes; a DNS label
	MaxDisplayNameLen = 128 // characters (runes)
)

// Status is a tenant's lifecycle state.
type Status string

// The statuses. A suspended tenant's credentials are refused and its agents are never routable.
const (
	StatusActive    Status = "active"
	StatusSuspended Status = "suspended"
)

// Valid reports whether s is one of the statuses.
func (s Status) Valid() bool { return s == StatusActive || s == StatusSuspended }

// Tenant is an isolation boundary: every agent, key and audit record belongs to one.
type Tenant struct {
	ID          string // IDPrefix + lower-case ULID
	Name        string // DNS label, unique, immutable
	DisplayName string // free text for humans; may be empty
	Status      Status
	CreatedAt   time.Time // UTC, microsecond precision
	UpdatedAt   time.Time // UTC, microsecond precision
	Version     int64     // 1 at creation, +1 on every change; guards writes (compare-and-set)
}

// Active reports whether the tenant is active.
func (t Tenant) Active() bool { return t.Status == StatusActive }

// CreateInput is what a client may set when creating a tenant. Server-owned fields (ID, status,
// timestamps, version) are absent by construction.
type CreateInput struct {
	Name        string
	DisplayName string
}

// Validate checks in and returns an errs.Invalid naming every bad field ("body.name",
// "body.display_name"), or nil.
func (in CreateInput) Validate() error {
	var fields []errs.FieldError
	if reason := nameProblem(in.Name); reason != "" {
		fields = append(fields, errs.FieldError{Name: "body.name", Reason: reason})
	}
	if reason := displayNameProblem(in.DisplayName); reason != "" {
		fields = append(fields, errs.FieldError{Name: "body.display_name", Reason: reason})
	}
	if len(fields) == 0 {
		return nil
	}
	return &errs.Error{Code: errs.Invalid, Message: "invalid input", Fields: fields}
}

// ValidName reports whether name is a valid tenant name.
func ValidName(name string) bool { return nameProblem(name) == "" }

func nameProblem(name string) string {
	switch {
	case name == "":
		return "required"
	case len(name) > MaxNameLen:
		return "must be at most 63 characters"
	case !isDNSLabel(name):
		return "must be lowercase letters, digits and '-', starting and ending with a letter or digit"
	}
	return ""
}

func isDNSLabel(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if alnum || c == '-' && i > 0 && i < len(s)-1 {
			continue
		}
		return false
	}
	return s != ""
}

func displayNameProblem(s string) string {
	switch {
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	case utf8.RuneCountInString(s) > MaxDisplayNameLen:
		return "must be at most 128 characters"
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return "must not contain control characters"
	case strings.TrimSpace(s) != s:
		return "must not start or end with white space"
	}
	return ""
}

// newID returns a fresh tenant ID.
func newID() string { return IDPrefix + strings.ToLower(ulid.Make().String()) }

// ValidID reports whether id has the shape of a tenant ID. The Service answers errs.NotFound for
// any other string without asking the store.
func ValidID(id string) bool { return validPrefixedULID(id, IDPrefix) }

// validPrefixedULID reports whether s is prefix followed by a lower-case, canonical ULID.
func validPrefixedULID(s, prefix string) bool {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok || len(rest) != ulid.EncodedSize || strings.ToLower(rest) != rest {
		return false
	}
	_, err := ulid.ParseStrict(strings.ToUpper(rest))
	return err == nil
}
