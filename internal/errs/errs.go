// Package errs is the kernel's one error type. Domain packages return *Error values carrying a
// Code, a message that is safe to show a client, optional offending fields, and an internal cause
// that is logged but never returned. The HTTP edge (internal/httpapi) maps codes to RFC 9457
// problems in one table. Any package may import errs; errs imports nothing of the project.
package errs

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Code classifies an error for clients. The set is deliberately small.
type Code string

// The codes. Keep this list and httpapi's status table in step.
const (
	Invalid              Code = "invalid"
	Unauthenticated      Code = "unauthenticated"
	Forbidden            Code = "forbidden"
	NotFound             Code = "not_found"
	MethodNotAllowed     Code = "method_not_allowed"
	Conflict             Code = "conflict"
	PreconditionFailed   Code = "precondition_failed"
	TooLarge             Code = "too_large"
	UnsupportedMediaType Code = "unsupported_media_type"
	Unprocessable        Code = "unprocessable"
	RateLimited          Code = "rate_limited"
	Unavailable          Code = "unavailable"
	BadGateway           Code = "bad_gateway"     // an upstream agent failed or could not be reached
	GatewayTimeout       Code = "gateway_timeout" // an upstream agent did not answer in time
	Internal             Code = "internal"
)

// FieldError names one offending input field ("body.username", "query.limit", "http.addr").
type FieldError struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Error is the kernel's error. Message and Fields are shown to clients; Err is only logged.
type Error struct {
	Code    Code
	Message string
	Fields  []FieldError
	Err     error
	// RetryAfter, when positive, tells clients when to retry (HTTP Retry-After) an
	// Unavailable or RateLimited error.
	RetryAfter time.Duration
}

// Error renders the code, the message and the cause, for logs.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(string(e.Code))
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	for _, f := range e.Fields {
		fmt.Fprintf(&b, "; %s: %s", f.Name, f.Reason)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Err }

// New returns an error with a client-safe message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an error with a client-safe message and an internal cause.
func Wrap(code Code, err error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// Field returns an Invalid error naming one field.
func Field(name, reason string) *Error {
	return &Error{Code: Invalid, Message: "invalid input", Fields: []FieldError{{Name: name, Reason: reason}}}
}

// As returns the first *Error in err's chain, or nil.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// CodeOf returns the code of the first *Error in err's chain, Internal for any other non-nil
// error, and "" for nil.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	if e := As(err); e != nil {
		return e.Code
	}
	return Internal
}

// Is reports whether err carries code.
func Is(err error, code Code) bool { return CodeOf(err) == code }
