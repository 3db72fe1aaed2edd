package registry

import (
	"fmt"
	"strings"

	"github.com/nops-kernel/nops/internal/errs"
)

// Bounds of a label selector.
const (
	MaxSelectorLen          = 1024 // bytes
	MaxSelectorRequirements = 32
)

// selectorField names the query parameter in errors.
const selectorField = "query.selector"

// Operator is how a Requirement tests a label.
type Operator string

// The operators of the equality-based subset of Kubernetes label selectors.
const (
	OpEquals    Operator = "="       // key=value or key==value: the label is present with the value
	OpNotEquals Operator = "!="      // key!=value: the label is absent or has another value
	OpExists    Operator = "exists"  // key: the label is present, with any value
	OpNotExists Operator = "!exists" // !key: the label is absent
)

// Requirement is one comma-separated term of a selector.
type Requirement struct {
	Key   string
	Op    Operator
	Value string // empty for OpExists and OpNotExists
}

// LabelSelector is a conjunction of requirements. The empty selector matches every label set.
type LabelSelector []Requirement

// ParseSelector parses the equality-based subset of Kubernetes label selector syntax:
// comma-separated terms "key=value", "key==value", "key!=value", "key" and "!key", with spaces
// and tabs allowed around keys, operators and values. Keys and values follow the label rules
// (values may be empty: "tier=" selects an empty tier label). The empty string is the empty
// selector. Errors are errs.Field("query.selector").
func ParseSelector(s string) (LabelSelector, error) {
	if len(s) > MaxSelectorLen {
		return nil, errs.Field(selectorField, fmt.Sprintf("must be at most %d bytes", MaxSelectorLen))
	}
	if strings.Trim(s, " \t") == "" {
		return nil, nil
	}
	terms := strings.Split(s, ",")
	if len(terms) > MaxSelectorRequirements {
		return nil, errs.Field(selectorField, fmt.Sprintf("must have at most %d terms", MaxSelectorRequirements))
	}
	sel := make(LabelSelector, 0, len(terms))
	for i, term := range terms {
		r, reason := parseRequirement(term)
		if reason != "" {
			return nil, errs.Field(selectorField, fmt.Sprintf("term %d: %s", i+1, reason))
		}
		sel = append(sel, r)
	}
	return sel, nil
}

func trimOWS(s string) string { return strings.Trim(s, " \t") }

func parseRequirement(term string) (Requirement, string) {
	term = trimOWS(term)
	if term == "" {
		return Requirement{}, "empty term"
	}
	var r Requirement
	if rest, ok := strings.CutPrefix(term, "!"); ok {
		r = Requirement{Key: trimOWS(rest), Op: OpNotExists}
	} else if i := strings.IndexAny(term, "!="); i < 0 {
		r = Requirement{Key: term, Op: OpExists}
	} else {
		r.Key = trimOWS(term[:i])
		op := term[i:]
		switch {
		case strings.HasPrefix(op, "!="):
			r.Op, r.Value = OpNotEquals, op[2:]
		case strings.HasPrefix(op, "=="):
			r.Op, r.Value = OpEquals, op[2:]
		case strings.HasPrefix(op, "="):
			r.Op, r.Value = OpEquals, op[1:]
		default:
			return Requirement{}, "'!' must start the term or be followed by '='"
		}
		r.Value = trimOWS(r.Value)
		if reason := labelValueProblem(r.Value); reason != "" {
			return Requirement{}, "value " + reason
		}
	}
	if reason := labelKeyProblem(r.Key); reason != "" {
		return Requirement{}, "key " + reason
	}
	return r, ""
}

// Matches reports whether labels satisfy every requirement.
func (s LabelSelector) Matches(labels map[string]string) bool {
	for _, r := range s {
		v, ok := labels[r.Key]
		var m bool
		switch r.Op {
		case OpEquals:
			m = ok && v == r.Value
		case OpNotEquals:
			m = !ok || v != r.Value
		case OpExists:
			m = ok
		case OpNotExists:
			m = !ok
		}
		if !m {
			return false
		}
	}
	return true
}

// String returns the selector in the syntax ParseSelector reads, in canonical spelling.
func (s LabelSelector) String() string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		switch r.Op {
		case OpEquals:
			b.WriteString(r.Key + "=" + r.Value)
		case OpNotEquals:
			b.WriteString(r.Key + "!=" + r.Value)
		case OpExists:
			b.WriteString(r.Key)
		case OpNotExists:
			b.WriteString("!" + r.Key)
		}
	}
	return b.String()
}
