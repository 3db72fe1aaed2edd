package events

import (
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nops-kernel/nops/internal/errs"
)

// checkID accepts the ids of tenants, agents and keys: 1 to 64 characters from [A-Za-z0-9_-].
// They become tokens of bus subjects and parts of keys, so nothing with a meaning there ('.',
// '*', '>', ':', whitespace) may appear.
func checkID(field, v string) error {
	if !idToken(v) {
		return errs.Field(field, "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	}
	return nil
}

func idToken(v string) bool {
	if v == "" || len(v) > 64 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func checkNonEmpty(field, v string) error {
	if v == "" {
		return errs.Field(field, "is required")
	}
	return nil
}

func checkEnum(field, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return errs.Field(field, "must be one of "+strings.Join(allowed, ", "))
}

// checkTime requires a set time in UTC: payload times are written with a "Z" offset, which the
// schemas require.
func checkTime(field string, t time.Time) error {
	if t.IsZero() {
		return errs.Field(field, "is required")
	}
	if _, offset := t.Zone(); offset != 0 {
		return errs.Field(field, "must be in UTC")
	}
	if y := t.Year(); y < 1 || y > 9999 {
		return errs.Field(field, "must have a four-digit year")
	}
	return nil
}

func checkOptionalTime(field string, t *time.Time) error {
	if t == nil {
		return nil
	}
	return checkTime(field, *t)
}

// ceString reports whether s is a CloudEvents String: valid UTF-8 without C0 or C1 control
// characters, surrogates or Unicode noncharacters.
func ceString(s string) bool {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return false
			}
		}
		switch {
		case r <= 0x1f, r >= 0x7f && r <= 0x9f:
			return false
		case r >= 0xd800 && r <= 0xdfff:
			return false
		case r >= 0xfdd0 && r <= 0xfdef, r&0xfffe == 0xfffe:
			return false
		}
	}
	return true
}

// uriReference reports whether s is a non-empty RFC 3986 URI-reference: only characters the RFC
// allows, percent signs followed by two hex digits, and a structure net/url accepts (which also
// rejects a colon in the first segment of a relative path).
func uriReference(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~:/?#[]@!$&'()*+,;=", c) >= 0:
		case c == '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return false
			}
		default:
			return false
		}
	}
	if strings.Count(s, "#") > 1 {
		return false
	}
	_, err := url.Parse(s)
	return err == nil
}

// absoluteURI reports whether s is an RFC 3986 absolute URI: a URI-reference with a scheme and
// no fragment.
func absoluteURI(s string) bool {
	if !uriReference(s) || strings.Contains(s, "#") {
		return false
	}
	scheme, _, ok := strings.Cut(s, ":")
	if !ok || scheme == "" || !isAlpha(scheme[0]) {
		return false
	}
	for i := 1; i < len(scheme); i++ {
		c := scheme[i]
		if !isAlpha(c) && (c < '0' || c > '9') && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && (s[i] < 'a' || s[i] > 'f') {
			return false
		}
	}
	return true
}

// validTraceparent reports whether s is a W3C Trace Context traceparent of version 00 (the only
// version defined): "00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>", lower case, with
// neither id all zeros.
func validTraceparent(s string) bool {
	if len(s) != 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return false
	}
	version, traceID, parentID, flags := s[:2], s[3:35], s[36:52], s[53:]
	if version != "00" || !isLowerHex(traceID) || !isLowerHex(parentID) || !isLowerHex(flags) {
		return false
	}
	return strings.Trim(traceID, "0") != "" && strings.Trim(parentID, "0") != ""
}

// attributeName reports whether s is a valid CloudEvents attribute name: 1 to 20 characters from
// a-z and 0-9.
func attributeName(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < 'a' || s[i] > 'z') && (s[i] < '0' || s[i] > '9') {
			return false
		}
	}
	return true
}
