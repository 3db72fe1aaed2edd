package flags

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/etag"
)

// Type is a flag's type.
type Type string

// The flag types.
const (
	TypeBoolean Type = "boolean" // variants "true" and "false"
	TypeVariant Type = "variant" // named string variants
)

// The variants of a boolean flag.
const (
	VariantTrue  = "true"
	VariantFalse = "false"
)

// Limits of a flag's fields.
const (
	MaxKeyLen         = 128
	MaxDescriptionLen = 1024
	MaxVariants       = 32
	MaxVariantLen     = 64
	MaxRules          = 64
)

var (
	keyPattern     = regexp.MustCompile(`^[a-z][a-z0-9_.-]*$`)
	variantPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
)

// ValidKey reports whether s can be a flag key: a lowercase letter, then lowercase letters,
// digits, '_', '-' and '.', at most MaxKeyLen bytes.
func ValidKey(s string) bool { return len(s) <= MaxKeyLen && keyPattern.MatchString(s) }

// Rule is one targeting rule: when Expression (CEL, over tenant and attributes) is true, the flag
// answers Variant.
type Rule struct {
	Expression string `json:"expression"`
	Variant    string `json:"variant"`
}

// Spec is what a client puts for a flag: everything but its key and bookkeeping.
type Spec struct {
	Type           Type
	Description    string
	Variants       []string // TypeVariant only; a boolean flag's are implied
	DefaultVariant string
	Enabled        bool
	Rules          []Rule
}

// Flag is one stored feature flag.
type Flag struct {
	Key            string
	Type           Type
	Description    string
	Variants       []string // for a boolean flag: ["false", "true"]
	DefaultVariant string
	Enabled        bool
	Rules          []Rule
	Revision       int64     // 1 at creation, +1 on every change; guards writes (compare-and-set)
	CreatedAt      time.Time // UTC, microsecond precision
	UpdatedAt      time.Time
}

// Spec returns the client-owned part of f (sharing nothing with f).
func (f Flag) Spec() Spec {
	s := Spec{Type: f.Type, Description: f.Description, Variants: slices.Clone(f.Variants), DefaultVariant: f.DefaultVariant,
		Enabled: f.Enabled, Rules: slices.Clone(f.Rules)}
	return s
}

func (f Flag) with(s Spec) Flag {
	f.Type, f.Description, f.Variants, f.DefaultVariant, f.Enabled, f.Rules =
		s.Type, s.Description, slices.Clone(s.Variants), s.DefaultVariant, s.Enabled, slices.Clone(s.Rules)
	return f
}

func (s Spec) equal(o Spec) bool {
	return s.Type == o.Type && s.Description == o.Description && slices.Equal(s.Variants, o.Variants) &&
		s.DefaultVariant == o.DefaultVariant && s.Enabled == o.Enabled && slices.Equal(s.Rules, o.Rules)
}

// ETag returns the strong entity tag of f's current revision. Like a route's, it derives from the
// key, the creation time and the revision, so it is the same on every replica and a flag deleted
// and created again does not get its predecessor's tag.
func (f Flag) ETag() string {
	return etag.New("flag", f.Key, strconv.FormatInt(f.CreatedAt.UnixMicro(), 10), strconv.FormatInt(f.Revision, 10))
}

// ErrRevisionConflict is wrapped by every error meaning "the flag changed since the caller read
// it": a failed precondition (errs.PreconditionFailed) or a compare-and-set write that lost
// (errs.Conflict), a create included.
var ErrRevisionConflict = errors.New("flag revision changed")

// Preconditions are a write's conditional request headers; empty fields set no condition.
type Preconditions struct {
	IfMatch     string
	IfNoneMatch string
}

// Check evaluates p against the current flag, nil when there is none.
func (p Preconditions) Check(cur *Flag) error {
	if err := checkCondition("header.If-Match", p.IfMatch, cur, true); err != nil {
		return err
	}
	return checkCondition("header.If-None-Match", p.IfNoneMatch, cur, false)
}

func checkCondition(field, header string, cur *Flag, mustMatch bool) error {
	if etag.Empty(header) {
		return nil
	}
	current := ""
	if cur != nil {
		current = cur.ETag()
	}
	matched, err := etag.Match(field, header, current)
	if err != nil {
		return err
	}
	switch {
	case matched == mustMatch:
		return nil
	case cur == nil:
		return errs.Wrap(errs.PreconditionFailed, ErrRevisionConflict, "the flag does not exist (it may have been deleted); get it again and retry")
	case mustMatch:
		return errs.Wrap(errs.PreconditionFailed, ErrRevisionConflict, "the flag was changed since it was read; get it again and retry")
	}
	return errs.Wrap(errs.PreconditionFailed, ErrRevisionConflict, "the flag already exists")
}

// Normalize validates s and returns it in canonical form (a boolean flag's variants filled in).
// Every rule's expression is compiled. The error is one errs.Invalid naming every offending field
// under "body." ("body.rules[1].expression").
func (s Spec) Normalize() (Spec, error) {
	var fe []errs.FieldError
	add := func(name, reason string) { fe = append(fe, errs.FieldError{Name: name, Reason: reason}) }
	out := Spec{Type: s.Type, Description: s.Description, DefaultVariant: s.DefaultVariant, Enabled: s.Enabled, Rules: slices.Clone(s.Rules)}
	if len(s.Description) > MaxDescriptionLen {
		add("body.description", fmt.Sprintf("must be at most %d bytes", MaxDescriptionLen))
	}
	switch s.Type {
	case TypeBoolean:
		if len(s.Variants) > 0 && !slices.Equal(sortedCopy(s.Variants), []string{VariantFalse, VariantTrue}) {
			add("body.variants", `a boolean flag's variants are "true" and "false"; omit them`)
		}
		out.Variants = []string{VariantFalse, VariantTrue}
	case TypeVariant:
		switch {
		case len(s.Variants) == 0:
			add("body.variants", "required: at least one variant")
		case len(s.Variants) > MaxVariants:
			add("body.variants", fmt.Sprintf("must hold at most %d variants", MaxVariants))
		default:
			for i, v := range s.Variants {
				if len(v) > MaxVariantLen || !variantPattern.MatchString(v) {
					add(fmt.Sprintf("body.variants[%d]", i), fmt.Sprintf("must be 1 to %d letters, digits, '_', '-' or '.', starting with a letter or digit", MaxVariantLen))
				} else if j := slices.Index(s.Variants, v); j < i {
					add(fmt.Sprintf("body.variants[%d]", i), fmt.Sprintf("duplicate of body.variants[%d]", j))
				}
			}
		}
		out.Variants = slices.Clone(s.Variants)
	default:
		add("body.type", `must be "boolean" or "variant"`)
	}
	known := func(v string) bool { return slices.Contains(out.Variants, v) }
	if s.Type == TypeBoolean || s.Type == TypeVariant {
		if !known(s.DefaultVariant) {
			add("body.default_variant", "must be one of the flag's variants")
		}
	}
	if len(s.Rules) > MaxRules {
		add("body.rules", fmt.Sprintf("must hold at most %d rules", MaxRules))
	} else {
		for i, r := range s.Rules {
			at := fmt.Sprintf("body.rules[%d]", i)
			if _, err := compile(r.Expression); err != nil {
				add(at+".expression", err.Error())
			}
			if (s.Type == TypeBoolean || s.Type == TypeVariant) && !known(r.Variant) {
				add(at+".variant", "must be one of the flag's variants")
			}
		}
	}
	if len(fe) > 0 {
		return Spec{}, &errs.Error{Code: errs.Invalid, Message: "invalid flag", Fields: fe}
	}
	return out, nil
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
