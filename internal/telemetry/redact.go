package telemetry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"unicode"
)

// Redacted replaces every secret the logger removes.
const Redacted = "[REDACTED]"

// secretWords are matched against attribute keys after lower-casing and dropping the separators
// '-', '_', '.' and ' ', so "db_password", "X-API-Key", "refreshToken" and "set-cookie" all match.
// Matching by containment is deliberately broad: a redacted harmless field costs a little
// debugging, a leaked credential costs an incident.
var secretWords = []string{
	"password", "passwd", "secret", "token", "apikey", "authorization", "cookie",
	"privatekey", "credential", "signature",
}

// IsSecretKey reports whether an attribute (or JSON object) key names a secret. Keys naming an
// identifier of a secret ("api_key_id", "tokenID", "kid") are not secret: they are what operators
// need to find which key was used.
func IsSecretKey(key string) bool {
	if key == "" || isIdentifierKey(key) {
		return false
	}
	norm := strings.Map(func(r rune) rune {
		switch r {
		case '-', '_', '.', ' ':
			return -1
		}
		return unicode.ToLower(r)
	}, key)
	for _, w := range secretWords {
		if strings.Contains(norm, w) {
			return true
		}
	}
	return false
}

func isIdentifierKey(key string) bool {
	if strings.EqualFold(key, "kid") {
		return true
	}
	lower := strings.ToLower(key)
	for _, suf := range []string{"_id", "-id", ".id", "_ids", "-ids", ".ids"} {
		if strings.HasSuffix(lower, suf) {
			return true
		}
	}
	// camelCase: "apiKeyId", "tokenID", "keyIDs".
	for _, suf := range []string{"Id", "ID", "Ids", "IDs"} {
		if strings.HasSuffix(key, suf) && len(key) > len(suf) {
			prev := rune(key[len(key)-len(suf)-1])
			if unicode.IsLower(prev) || unicode.IsDigit(prev) {
				return true
			}
		}
	}
	return false
}

var (
	// scheme://user:password@ → keep the user, drop the password.
	userinfoRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@\[\]]*):([^\s@/?#]*)@`)
	// HTTP authorization credentials: "Bearer xyz", "basic dXNlcjpwYXNz".
	authSchemeRE = regexp.MustCompile(`(?i)\b(?:bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*`)
	// JWTs (JWS compact form): three base64url segments, the header starting with '{"'.
	jwtRE = regexp.MustCompile(`eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*`)
	// key=value or key: value pairs inside free text whose key names a secret, as found in URLs
	// ("?api_key=..."), header dumps ("X-API-Key: ...") and JSON held in strings.
	secretPairRE = regexp.MustCompile(`(?i)([A-Za-z0-9_.\-]*(?:password|passwd|secret|token|api[_\-]?key|authorization|cookie|private[_\-]?key|credentials?|signature)[A-Za-z0-9_.\-]*)(\s*["']?\s*[:=]\s*["']?\s*)([^\s&"',;}\]]+)`)
	emailRE      = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}`)
)

// Scrub removes credentials and e-mail addresses from free text: URL userinfo passwords, Bearer
// and Basic credentials, JWTs, values of secret-named key=value pairs and e-mail addresses. The
// cheap substring checks keep the common case (nothing to scrub) away from the regexps.
func Scrub(s string) string {
	if s == "" {
		return s
	}
	if strings.Contains(s, "://") {
		s = userinfoRE.ReplaceAllString(s, "${1}:"+Redacted+"@")
	}
	if containsFold(s, "bearer") || containsFold(s, "basic") {
		s = authSchemeRE.ReplaceAllStringFunc(s, scrubAuthScheme)
	}
	if strings.Contains(s, "eyJ") {
		s = jwtRE.ReplaceAllLiteralString(s, Redacted)
	}
	if strings.ContainsAny(s, "=:") {
		s = secretPairRE.ReplaceAllString(s, "${1}${2}"+Redacted)
	}
	if strings.Contains(s, "@") {
		s = emailRE.ReplaceAllLiteralString(s, Redacted)
	}
	return s
}

// containsFold reports whether s contains the ASCII word sub in any casing, without allocating.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// scrubAuthScheme replaces the credential of one "Bearer x"/"Basic x" match. A Basic
// credential is base64 of "user:password" and so practically never all lower-case letters, which
// is what the English word "basic" is usually followed by ("basic checks passed").
func scrubAuthScheme(m string) string {
	i := strings.IndexFunc(m, unicode.IsSpace)
	j := strings.LastIndexFunc(m, unicode.IsSpace)
	scheme, cred := m[:i], m[j+1:]
	if strings.EqualFold(scheme, "basic") && strings.IndexFunc(cred, func(r rune) bool { return r < 'a' || r > 'z' }) < 0 {
		return m
	}
	return m[:j+1] + Redacted
}

// redactAttr returns a with its value redacted. secret is true inside a group whose name is a
// secret key: everything in it is replaced.
func redactAttr(a slog.Attr, secret bool) slog.Attr {
	return slog.Attr{Key: a.Key, Value: redactValue(a.Key, a.Value, secret)}
}

func redactAttrs(as []slog.Attr, secret bool) []slog.Attr {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = redactAttr(a, secret)
	}
	return out
}

func redactValue(key string, v slog.Value, secret bool) slog.Value {
	v = v.Resolve()
	if secret || IsSecretKey(key) {
		return slog.StringValue(Redacted)
	}
	switch v.Kind() {
	case slog.KindString:
		return slog.StringValue(Scrub(v.String()))
	case slog.KindGroup:
		return slog.GroupValue(redactAttrs(v.Group(), false)...)
	case slog.KindAny:
		return redactAny(v.Any())
	default:
		return v
	}
}

// redactAny renders values of arbitrary types. Errors and Stringers become their scrubbed text.
// Anything else is marshalled to JSON (as the JSON handler would), its object keys redacted and
// its strings scrubbed, and handed on as a json.RawMessage so structure survives.
func redactAny(x any) slog.Value {
	switch t := x.(type) {
	case nil:
		return slog.AnyValue(nil)
	case error:
		return slog.StringValue(Scrub(safeString(t.Error)))
	case fmt.Stringer:
		return slog.StringValue(Scrub(safeString(t.String)))
	case json.RawMessage:
		return redactJSON(t, x)
	case []byte:
		return slog.StringValue(Scrub(string(t)))
	}
	b, err := json.Marshal(x)
	if err != nil {
		// Never fall back to fmt's %+v: it would print unexported fields (headers, credentials)
		// that JSON marshalling hides.
		return slog.StringValue(fmt.Sprintf("!UNLOGGABLE %T", x))
	}
	return redactJSON(b, x)
}

func redactJSON(b []byte, orig any) slog.Value {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return slog.StringValue(fmt.Sprintf("!UNLOGGABLE %T", orig))
	}
	out, err := json.Marshal(redactJSONValue(doc))
	if err != nil {
		return slog.StringValue(fmt.Sprintf("!UNLOGGABLE %T", orig))
	}
	return slog.AnyValue(json.RawMessage(out))
}

func redactJSONValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if IsSecretKey(k) {
				t[k] = Redacted
				continue
			}
			t[k] = redactJSONValue(e)
		}
		return t
	case []any:
		for i, e := range t {
			t[i] = redactJSONValue(e)
		}
		return t
	case string:
		return Scrub(t)
	default:
		return v
	}
}

// safeString calls an Error or String method, turning a panic (typically a nil pointer receiver)
// into a marker instead of crashing the logging goroutine.
func safeString(f func() string) (s string) {
	defer func() {
		if r := recover(); r != nil {
			s = "!PANIC in String/Error method"
		}
	}()
	return f()
}
