package registry

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/semver"

	"github.com/nops-kernel/nops/internal/errs"
)

// Limits on client input. They bound the size of a stored registration and the schema
// compilation work one request can cause.
const (
	MaxNameLen           = 63        // bytes; agent names are DNS labels
	MaxVersionLen        = 128       // bytes
	MaxCapabilities      = 64        // per agent
	MaxCapabilityNameLen = 128       // bytes, whole dotted name
	MaxDescriptionLen    = 1024      // characters (runes)
	MaxSchemaBytes       = 32 << 10  // per schema document
	MaxSchemaTotalBytes  = 256 << 10 // all schemas of one agent together
	MaxSchemaDepth       = 32        // nesting of objects and arrays in a schema
	MaxEndpointLen       = 2048      // bytes
	MaxLabels            = 64        // per agent
	MaxLabelNameLen      = 63        // bytes, the name part of a label key, and a label value
	MaxLabelPrefixLen    = 253       // bytes, the DNS-subdomain prefix of a label key
	MaxMetadataBytes     = 16 << 10  // metadata as compact JSON
	MaxMetadataDepth     = 16        // nesting of objects and arrays in metadata
)

// fieldErrors collects the offending fields of one input.
type fieldErrors []errs.FieldError

func (f *fieldErrors) add(name, reason string) {
	*f = append(*f, errs.FieldError{Name: name, Reason: reason})
}

func (f fieldErrors) err() error {
	if len(f) == 0 {
		return nil
	}
	return &errs.Error{Code: errs.Invalid, Message: "invalid input", Fields: f}
}

// Normalize validates in and returns it in canonical form: the version canonical, the
// criticality defaulted, and nil collections made empty. The error is one errs.Invalid naming
// every offending field.
func (in AgentInput) Normalize() (AgentInput, error) {
	var fe fieldErrors
	out := in

	if reason := nameProblem(in.Name); reason != "" {
		fe.add("body.name", reason)
	}
	if v, err := CanonicalVersion(in.Version); err != nil {
		fe.add("body.version", err.Error())
	} else {
		out.Version = v
	}
	out.Capabilities = validateCapabilities(&fe, in.Capabilities)
	if reason := endpointProblem(in.Endpoint); reason != "" {
		fe.add("body.endpoint", reason)
	}
	validateLabels(&fe, in.Labels)
	if reason := metadataProblem(in.Metadata); reason != "" {
		fe.add("body.metadata", reason)
	}
	switch {
	case in.Criticality == "":
		out.Criticality = DefaultCriticality
	case !in.Criticality.Valid():
		fe.add("body.criticality", "must be one of critical, essential, best_effort")
	}
	if err := fe.err(); err != nil {
		return AgentInput{}, err
	}
	out.Labels = maps.Clone(in.Labels)
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	out.Metadata = maps.Clone(in.Metadata)
	if out.Metadata == nil {
		out.Metadata = map[string]any{}
	}
	return out, nil
}

func nameProblem(name string) string {
	switch {
	case name == "":
		return "required"
	case len(name) > MaxNameLen:
		return fmt.Sprintf("must be at most %d characters", MaxNameLen)
	case !isDNSLabel(name):
		return "must be lowercase letters, digits and '-', starting and ending with a letter or digit"
	}
	return ""
}

// isDNSLabel reports whether s is lowercase letters, digits and inner '-' (RFC 1123 label syntax,
// length unchecked).
func isDNSLabel(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isLowerAlnum(c) || c == '-' && i > 0 && i < len(s)-1 {
			continue
		}
		return false
	}
	return s != ""
}

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func isAlnum(c byte) bool { return isLowerAlnum(c) || c >= 'A' && c <= 'Z' }

// CanonicalVersion validates a semantic version ("1.2.3" or "v1.2.3", with optional pre-release
// and build metadata) and returns its canonical form: no "v", no build metadata, which carries no
// precedence. Go's shorthands "v1" and "v1.2" are refused: semantic versions have three parts.
func CanonicalVersion(v string) (string, error) {
	switch {
	case v == "":
		return "", fmt.Errorf("required")
	case len(v) > MaxVersionLen:
		return "", fmt.Errorf("must be at most %d characters", MaxVersionLen)
	}
	gv := v
	if !strings.HasPrefix(gv, "v") {
		gv = "v" + gv
	}
	canon := semver.Canonical(gv)
	// Canonical fills in a missing minor or patch; comparing with the input minus its build
	// metadata catches those shorthands.
	if canon == "" || canon != strings.TrimSuffix(gv, semver.Build(gv)) {
		return "", fmt.Errorf("must be a semantic version MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]")
	}
	return canon[1:], nil
}

// CompareVersions compares two versions as CanonicalVersion accepts them, by semantic-version
// precedence: -1, 0 or +1. An invalid version sorts before every valid one.
func CompareVersions(a, b string) int {
	ca, errA := CanonicalVersion(a)
	cb, errB := CanonicalVersion(b)
	switch {
	case errA != nil && errB != nil:
		return 0
	case errA != nil:
		return -1
	case errB != nil:
		return 1
	}
	return semver.Compare("v"+ca, "v"+cb)
}

// ValidCapabilityName reports whether name is a capability name: dot-separated segments of
// lowercase letters, digits, '-' and '_', each starting and ending with a letter or digit, at
// most MaxCapabilityNameLen bytes ("text.summarize", "billing.invoice_create").
func ValidCapabilityName(name string) bool {
	if name == "" || len(name) > MaxCapabilityNameLen {
		return false
	}
	for seg := range strings.SplitSeq(name, ".") {
		if seg == "" || !isLowerAlnum(seg[0]) || !isLowerAlnum(seg[len(seg)-1]) {
			return false
		}
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; !isLowerAlnum(c) && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

func validateCapabilities(fe *fieldErrors, caps []Capability) []Capability {
	if len(caps) > MaxCapabilities {
		fe.add("body.capabilities", fmt.Sprintf("must have at most %d capabilities", MaxCapabilities))
		return caps
	}
	total := 0
	for _, c := range caps {
		total += len(c.InputSchema) + len(c.OutputSchema)
	}
	if total > MaxSchemaTotalBytes {
		fe.add("body.capabilities", fmt.Sprintf("schemas must total at most %d bytes", MaxSchemaTotalBytes))
		return caps
	}
	seen := make(map[string]bool, len(caps))
	for i, c := range caps {
		at := fmt.Sprintf("body.capabilities[%d]", i)
		switch {
		case c.Name == "":
			fe.add(at+".name", "required")
		case !ValidCapabilityName(c.Name):
			fe.add(at+".name", "must be dot-separated segments of lowercase letters, digits, '-' and '_', each starting and ending with a letter or digit, at most 128 characters")
		case seen[c.Name]:
			fe.add(at+".name", "duplicate capability name")
		}
		seen[c.Name] = true
		if reason := textProblem(c.Description, MaxDescriptionLen, true); reason != "" {
			fe.add(at+".description", reason)
		}
		if len(c.InputSchema) > 0 {
			if _, err := CompileSchema(c.InputSchema); err != nil {
				fe.add(at+".input_schema", err.Error())
			}
		}
		if len(c.OutputSchema) > 0 {
			if _, err := CompileSchema(c.OutputSchema); err != nil {
				fe.add(at+".output_schema", err.Error())
			}
		}
	}
	// A copy, so the caller's later changes to its input cannot reach a stored agent.
	return append([]Capability{}, caps...)
}

// textProblem checks free text: valid UTF-8, at most max runes, no control characters except,
// when multiline, newline and tab.
func textProblem(s string, max int, multiline bool) string {
	switch {
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	case utf8.RuneCountInString(s) > max:
		return fmt.Sprintf("must be at most %d characters", max)
	case strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\t'))
	}) >= 0:
		return "must not contain control characters"
	}
	return ""
}

func endpointProblem(s string) string {
	switch {
	case s == "":
		return "required"
	case len(s) > MaxEndpointLen:
		return fmt.Sprintf("must be at most %d characters", MaxEndpointLen)
	case strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0:
		return "must not contain white space or control characters"
	}
	u, err := url.Parse(s)
	if err != nil {
		return "must be an absolute http or https URL"
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "must be an absolute http or https URL"
	case u.Opaque != "":
		return "must be an absolute http or https URL with a host"
	case u.User != nil:
		return "must not contain user info"
	case strings.Contains(s, "#"):
		return "must not contain a fragment"
	case u.Hostname() == "":
		return "must name a host"
	case strings.HasSuffix(u.Host, ":"):
		return "must not end the host with an empty port"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "port must be between 1 and 65535"
		}
	}
	return ""
}

func validateLabels(fe *fieldErrors, labels map[string]string) {
	if len(labels) > MaxLabels {
		fe.add("body.labels", fmt.Sprintf("must have at most %d labels", MaxLabels))
		return
	}
	for _, k := range sortedKeys(labels) {
		at := "body.labels[" + quoteKey(k) + "]"
		if reason := labelKeyProblem(k); reason != "" {
			fe.add(at, "key "+reason)
		}
		if reason := labelValueProblem(labels[k]); reason != "" {
			fe.add(at, "value "+reason)
		}
	}
}

// quoteKey quotes a client's map key for a field name, shortened so a huge bad key cannot blow
// up the error.
func quoteKey(k string) string {
	if len(k) > 80 {
		k = strings.ToValidUTF8(k[:80], "") + "…"
	}
	return strconv.Quote(k)
}

// labelKeyProblem checks a Kubernetes-style label key: an optional DNS-subdomain prefix and '/',
// then a name of at most 63 characters.
func labelKeyProblem(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if hasPrefix {
		if prefix == "" || len(prefix) > MaxLabelPrefixLen || !isDNSSubdomain(prefix) {
			return "prefix must be a DNS subdomain of at most 253 characters"
		}
	}
	if name == "" {
		return "name is required"
	}
	if len(name) > MaxLabelNameLen || !isLabelName(name) {
		return "name must be at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
	}
	return ""
}

func labelValueProblem(v string) string {
	if v != "" && (len(v) > MaxLabelNameLen || !isLabelName(v)) {
		return "must be empty or at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
	}
	return ""
}

// isLabelName reports whether s is [A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?.
func isLabelName(s string) bool {
	if s == "" || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func isDNSSubdomain(s string) bool {
	for label := range strings.SplitSeq(s, ".") {
		if len(label) > 63 || !isDNSLabel(label) {
			return false
		}
	}
	return true
}

func metadataProblem(m map[string]any) string {
	if m == nil {
		return ""
	}
	if jsonDepth(m, 0) > MaxMetadataDepth {
		return fmt.Sprintf("must nest at most %d levels", MaxMetadataDepth)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "must be a JSON object"
	}
	if len(b) > MaxMetadataBytes {
		return fmt.Sprintf("must be at most %d bytes as JSON", MaxMetadataBytes)
	}
	return ""
}

// jsonDepth returns how deeply v (a decoded JSON value) nests objects and arrays, stopping early
// once the depth exceeds what any limit allows.
func jsonDepth(v any, depth int) int {
	if depth > MaxSchemaDepth {
		return depth
	}
	deepest := depth
	visit := func(child any) {
		if d := jsonDepth(child, depth+1); d > deepest {
			deepest = d
		}
	}
	switch x := v.(type) {
	case map[string]any:
		deepest = depth + 1
		for _, c := range x {
			visit(c)
		}
	case []any:
		deepest = depth + 1
		for _, c := range x {
			visit(c)
		}
	}
	return deepest
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// finite reports whether f is neither NaN nor infinite.
func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
