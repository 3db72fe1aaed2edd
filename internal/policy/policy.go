package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/etag"
)

// IDPrefix starts the ID of every policy stored through the API.
const IDPrefix = "pol_"

// Limits of a policy's fields.
const (
	MaxNameLen        = 100  // characters
	MaxDescriptionLen = 1024 // characters
)

// Effect is what a matching policy does.
type Effect string

// The effects.
const (
	EffectAllow Effect = "allow"
	EffectDeny  Effect = "deny"
)

// Valid reports whether e is one of the effects.
func (e Effect) Valid() bool { return e == EffectAllow || e == EffectDeny }

// Policy is an ABAC rule: a CEL expression over the request (see Input) that must evaluate to a
// bool, and what a true result does.
type Policy struct {
	ID          string // IDPrefix + lower-case ULID for stored policies; chosen by the file for file policies
	TenantID    string // "" for a global policy, which applies to every tenant
	Name        string // unique within its tenant (or among global policies)
	Description string
	Effect      Effect
	Expression  string
	Enabled     bool
	CreatedAt   time.Time // UTC, microsecond precision
	UpdatedAt   time.Time
	Version     int64 // 1 at creation, +1 on every change; guards writes (compare-and-set)
}

// ETag returns the strong entity tag of p's current version, quoted as HTTP wants it. It derives
// from the ID and Version only, so it is opaque and stable across replicas.
func (p Policy) ETag() string { return etag.New(p.ID, strconv.FormatInt(p.Version, 10)) }

// ErrVersionConflict is wrapped by every error that means "the policy changed since the caller
// read it": a stale If-Match (inside an errs.PreconditionFailed) or a compare-and-set write that
// lost (stores return it inside an errs.Conflict).
var ErrVersionConflict = errors.New("policy version changed")

// CheckIfMatch evaluates an If-Match field value (RFC 9110 §13.1.1) against p: "*" or a list
// holding p's ETag passes, weak tags never match. An empty value is an errs.Invalid naming
// "header.If-Match" (required), so is a malformed one; anything else is an errs.PreconditionFailed
// wrapping ErrVersionConflict.
func CheckIfMatch(header string, p Policy) error {
	if etag.Empty(header) {
		return errs.Field("header.If-Match", "required: send the ETag of the policy as last read")
	}
	ok, err := etag.Match("header.If-Match", header, p.ETag())
	if err != nil || ok {
		return err
	}
	return errs.Wrap(errs.PreconditionFailed, ErrVersionConflict, "the policy was changed since it was read; get it again and retry")
}

// newID returns a fresh policy ID.
func newID() string { return IDPrefix + strings.ToLower(ulid.Make().String()) }

// ValidID reports whether id has the shape of a stored policy's ID.
func ValidID(id string) bool {
	rest, ok := strings.CutPrefix(id, IDPrefix)
	if !ok || len(rest) != ulid.EncodedSize || strings.ToLower(rest) != rest {
		return false
	}
	_, err := ulid.ParseStrict(strings.ToUpper(rest))
	return err == nil
}

// Spec is what an author writes of a policy, through the API or in a file.
type Spec struct {
	Name        string
	Description string
	Effect      Effect
	Expression  string
	Enabled     *bool // nil: enabled
}

// enabled returns the Enabled setting, true when unset.
func (s Spec) enabled() bool { return s.Enabled == nil || *s.Enabled }

// validate checks the fields other than the expression and returns an errs.Invalid naming every
// bad one under prefix ("body."), or nil.
func (s Spec) validate(prefix string) error {
	var fields []errs.FieldError
	add := func(name, reason string) {
		fields = append(fields, errs.FieldError{Name: prefix + name, Reason: reason})
	}
	if r := textProblem(s.Name, MaxNameLen, false); r != "" {
		add("name", r)
	} else if s.Name == "" {
		add("name", "required")
	}
	if r := textProblem(s.Description, MaxDescriptionLen, true); r != "" {
		add("description", r)
	}
	if !s.Effect.Valid() {
		add("effect", `must be "allow" or "deny"`)
	}
	if len(fields) == 0 {
		return nil
	}
	return &errs.Error{Code: errs.Invalid, Message: "invalid input", Fields: fields}
}

// textProblem checks free text: UTF-8, at most maxLen characters, no surrounding white space and
// no control characters but, when multiline, new lines.
func textProblem(s string, maxLen int, multiline bool) string {
	switch {
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	case utf8.RuneCountInString(s) > maxLen:
		return fmt.Sprintf("must be at most %d characters", maxLen)
	case strings.TrimSpace(s) != s:
		return "must not start or end with white space"
	case strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) && !(multiline && r == '\n') }) >= 0:
		return "must not contain control characters"
	}
	return ""
}
