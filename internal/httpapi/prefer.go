package httpapi

import "strings"

// maxPreferences bounds how many preferences of one request are looked at: the header is
// untrusted input, and the kernel understands one preference.
const maxPreferences = 32

// preferences parses the values of Prefer header fields (RFC 7240 section 2):
//
//	Prefer     = 1#preference
//	preference = token [ BWS "=" BWS word ] *( OWS ";" [ OWS parameter ] )
//	parameter  = token [ BWS "=" BWS word ]
//	word       = token / quoted-string
//
// It returns each preference's name, lower-cased (preference names are case-insensitive), with its
// value (unquoted; "" when it has none); parameters are dropped, since the kernel understands no
// preference that has any. Following section 2, a preference named twice keeps its first
// occurrence, and a malformed preference is skipped without affecting the others: a server
// ignores what it does not understand.
func preferences(values []string) map[string]string {
	out := map[string]string{}
	n := 0
	for _, v := range values {
		for _, elem := range splitList(v) {
			if n == maxPreferences {
				return out
			}
			n++
			name, value, ok := parsePreference(elem)
			if !ok {
				continue
			}
			if _, seen := out[name]; !seen {
				out[name] = value
			}
		}
	}
	return out
}

// splitList splits a comma-separated field value into its elements, not splitting inside quoted
// strings; empty elements (",," is allowed by the list syntax) are dropped.
func splitList(v string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case quoted && c == '\\':
			i++ // the escaped octet, whatever it is
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			if e := strings.TrimSpace(v[start:i]); e != "" {
				out = append(out, e)
			}
			start = i + 1
		}
	}
	if e := strings.TrimSpace(v[start:]); e != "" {
		out = append(out, e)
	}
	return out
}

// parsePreference parses one preference (its parameters are checked for syntax, not kept).
func parsePreference(s string) (name, value string, ok bool) {
	name, value, rest, ok := parsePair(s)
	if !ok {
		return "", "", false
	}
	for {
		rest = strings.TrimLeft(rest, " \t")
		if rest == "" {
			return strings.ToLower(name), value, true
		}
		if rest[0] != ';' {
			return "", "", false
		}
		rest = strings.TrimLeft(rest[1:], " \t")
		if rest == "" || rest[0] == ';' {
			continue // "; ;" and a trailing ";" are allowed: the parameter is optional
		}
		if _, _, rest, ok = parsePair(rest); !ok {
			return "", "", false
		}
	}
}

// parsePair reads token [ BWS "=" BWS word ] from the start of s and returns the rest.
func parsePair(s string) (name, value, rest string, ok bool) {
	i := 0
	for i < len(s) && isTokenChar(s[i]) {
		i++
	}
	if i == 0 {
		return "", "", "", false
	}
	name, rest = s[:i], strings.TrimLeft(s[i:], " \t")
	if rest == "" || rest[0] != '=' {
		return name, "", rest, true
	}
	rest = strings.TrimLeft(rest[1:], " \t")
	if rest != "" && rest[0] == '"' {
		value, rest, ok = parseQuoted(rest)
		return name, value, rest, ok
	}
	j := 0
	for j < len(rest) && isTokenChar(rest[j]) {
		j++
	}
	if j == 0 {
		return "", "", "", false
	}
	return name, rest[:j], rest[j:], true
}

// parseQuoted reads a quoted-string (RFC 9110 section 5.6.4) from the start of s, which begins
// with '"', and returns its unescaped content and the rest.
func parseQuoted(s string) (content, rest string, ok bool) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			return b.String(), s[i+1:], true
		case c == '\\':
			if i+1 == len(s) || !isQuotedChar(s[i+1]) {
				return "", "", false
			}
			i++
			b.WriteByte(s[i])
		case isQuotedChar(c):
			b.WriteByte(c)
		default:
			return "", "", false
		}
	}
	return "", "", false // unterminated
}

// isTokenChar reports whether c may appear in a token (RFC 9110 section 5.6.2).
func isTokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// isQuotedChar reports whether c may appear in a quoted-string: qdtext or the octet of a
// quoted-pair (HTAB, SP, VCHAR, obs-text).
func isQuotedChar(c byte) bool {
	return c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f)
}
