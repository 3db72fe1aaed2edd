package registry

import (
	"errors"
	"strconv"

	"github.com/nops-kernel/nops/internal/errs"
	"github.com/nops-kernel/nops/internal/etag"
)

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
func (a Agent) ETag() string { return etag.New(a.ID, strconv.FormatInt(a.Revision, 10)) }

// CheckIfMatch evaluates an If-Match field value (RFC 9110 §13.1.1; several header lines joined
// with commas) against a. "*" or a list holding a's ETag passes; weak tags never match (If-Match
// uses the strong comparison). An empty value is an ErrPreconditionRequired error, a syntax
// error an errs.Field("header.If-Match"), and anything else an errs.PreconditionFailed wrapping
// ErrPreconditionFailed.
func CheckIfMatch(header string, a Agent) error {
	if etag.Empty(header) {
		return preconditionRequired()
	}
	ok, err := etag.Match("header.If-Match", header, a.ETag())
	if err != nil || ok {
		return err
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
