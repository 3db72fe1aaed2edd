package registry

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"

	"github.com/nops-kernel/nops/internal/errs"
)

// maxIfMatchLen bounds the If-Match field value CheckIfMatch parses.
const maxIfMatchLen = 4096

// ErrPreconditionFailed is wrapped by every error that means "the agent changed since the caller
// read it": a stale If-Match, or a compare-and-set write that lost. Stores return it inside an
// errs.Conflict; the Service returns it inside an errs.PreconditionFailed (HTTP 412).
var ErrPreconditionFailed = errors.New("precondition failed")

// ErrPreconditionRequired is wrapped (inside an errs.Invalid naming "header.If-Match") by the
// error for an update without If-Match. The HTTP layer may map it to 428; as it stands it is 400.
var ErrPreconditionRequired = errors.New("precondition required")

// ETag returns the strong entity tag of a's registration, quoted as HTTP wants it. It derives
// from the ID and Revision only, so it is opaque, stable across replicas and changes exactly when
// an Update changes the registration.
func (a Agent) ETag() string {
	sum := sha256.Sum256([]byte(a.ID + "\x00" + strconv.FormatInt(a.Revision, 10)))
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
}

// CheckIfMatch evaluates an If-Match field value (RFC 9110 §13.1.1; several header lines joined
// with commas) against a. "*" or a list holding a's ETag passes; weak tags never match (If-Match
// uses the strong comparison). An empty value is an ErrPreconditionRequired error, a syntax
// error an errs.Field("header.If-Match"), and anything else an errs.PreconditionFailed wrapping
// ErrPreconditionFailed.
func CheckIfMatch(header string, a Agent) error {
	h := strings.Trim(header, " \t")
	if h == "" {
		return preconditionRequired()
	}
	if len(header) > maxIfMatchLen {
		return errs.Field("header.If-Match", "too long")
	}
	if h == "*" {
		return nil
	}
	tags, ok := parseETags(h)
	if !ok {
		return errs.Field("header.If-Match", "must be * or a comma-separated list of entity tags")
	}
	want := a.ETag()
	for _, t := range tags {
		if t == want {
			return nil
		}
	}
	return errs.Wrap(errs.PreconditionFailed, ErrPreconditionFailed, "the agent was changed since it was read; get it again and retry")
}

func preconditionRequired() error {
	return &errs.Error{
		Code:    errs.Invalid,
		Message: "invalid input",
		Fields: []errs.FieldError{{
			Name:   "header.If-Match",
			Reason: "required: send the ETag of the agent as last read",
		}},
		Err: ErrPreconditionRequired,
	}
}

// parseETags splits a #entity-tag list. Weak tags are returned with their W/ prefix, so they
// never equal a strong tag. Empty list elements are allowed, as RFC 9110 §5.6.1 asks.
func parseETags(s string) ([]string, bool) {
	var tags []string
	i := 0
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == ',') {
			i++
		}
		if i == len(s) {
			break
		}
		start := i
		if strings.HasPrefix(s[i:], "W/") {
			i += 2
		}
		if i == len(s) || s[i] != '"' {
			return nil, false
		}
		i++
		for i < len(s) && s[i] != '"' {
			// etagc = %x21 / %x23-7E / obs-text
			if c := s[i]; c < 0x21 || c == 0x7f {
				return nil, false
			}
			i++
		}
		if i == len(s) {
			return nil, false
		}
		i++
		tags = append(tags, s[start:i])
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i < len(s) && s[i] != ',' {
			return nil, false
		}
	}
	return tags, len(tags) > 0
}
