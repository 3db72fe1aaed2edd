// Package etag makes the kernel's strong entity tags and evaluates the conditional request
// headers that carry them (If-Match, If-None-Match; RFC 9110 §8.8.3, §13.1.1–2). Every resource
// with optimistic concurrency (agents, policies, routes, perimeter settings) derives its tag with
// New and reads the caller's condition with Match, so all of them parse the headers alike.
package etag

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"

	"github.com/nops-kernel/nops/internal/errs"
)

// MaxLen bounds a conditional header value Match reads.
const MaxLen = 4096

// New returns the strong entity tag of parts (what identifies one state of a resource: its ID
// and revision, for instance), quoted as HTTP wants it: the first 128 bits of the SHA-256 of the
// parts joined with NUL, base64url. Opaque, and the same on every replica.
func New(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`
}

// Match reports whether the field value h of a conditional header (field names it, as
// "header.If-Match", in errors) lists current: "*" matches any current tag, a list matches when
// it holds current (strong comparison: weak tags never match). current "" means the resource does
// not exist: nothing matches then, "*" included. An empty h is Empty's business: Match reports
// false. A value that is too long or not "*" / a comma-separated list of entity tags is an
// errs.Field naming field.
func Match(field, h, current string) (bool, error) {
	h = strings.Trim(h, " \t")
	if h == "" {
		return false, nil
	}
	if len(h) > MaxLen {
		return false, errs.Field(field, "too long")
	}
	if h == "*" {
		return current != "", nil
	}
	tags, ok := parse(h)
	if !ok {
		return false, errs.Field(field, "must be * or a comma-separated list of entity tags")
	}
	for _, t := range tags {
		if current != "" && t == current {
			return true, nil
		}
	}
	return false, nil
}

// Empty reports whether a conditional header value sets no condition.
func Empty(h string) bool { return strings.Trim(h, " \t") == "" }

// parse splits a #entity-tag list. Weak tags keep their W/ prefix, so they never equal a strong
// tag. Empty list elements are allowed, as RFC 9110 §5.6.1 asks.
func parse(s string) ([]string, bool) {
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
