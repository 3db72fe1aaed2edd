package egress

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/sumdb/note"
)

// AllowList is a loaded egress allow-list: per service the default Rules of every tenant, per
// tenant the Rules that replace them for that tenant. A service it does not name gets DenyAll.
// It is never changed once loaded; the gate swaps whole lists.
type AllowList struct {
	Serial   uint64                       // the file's serial: a reload never goes back to a lower one
	Services map[string]*Rules            // by service
	Tenants  map[string]map[string]*Rules // by tenant id, then service
	Source   string                       // "signed allow-list" or "configuration"
	Signer   string                       // the name of the key that signed it; "" for configuration
	SHA256   string                       // hex SHA-256 of the signed file; "" for configuration
}

// Rules returns the rules of service for tenant ("" for none): the tenant's own when the list
// has them, else the service's default, else DenyAll.
func (l *AllowList) Rules(service, tenant string) *Rules {
	if tenant != "" {
		if r, ok := l.Tenants[tenant][service]; ok {
			return r
		}
	}
	if r, ok := l.Services[service]; ok {
		return r
	}
	return DenyAll
}

// The file is a Go signed note (golang.org/x/mod/sumdb/note, Ed25519): YAML text, a blank line,
// then signature lines. The YAML, strictly decoded:
//
//	serial: 7                       # required, > 0
//	services:
//	  agents:
//	    class: D2                   # D0 … D4
//	    on_violation: deregister_agent   # none (default) | deregister_agent
//	    allow:
//	      - cidr: 10.20.0.0/16
//	        ports: [8080, "9000-9100"]
//	      - host: "*.agents.internal"
//	        class: D2               # name entries: the class its addresses must have (default D3)
//	tenants:
//	  <tenant id>:
//	    agents: {class: D4}
type fileList struct {
	Serial   uint64                          `yaml:"serial"`
	Services map[string]fileRules            `yaml:"services"`
	Tenants  map[string]map[string]fileRules `yaml:"tenants"`
}

type fileRules struct {
	Class       string      `yaml:"class"`
	OnViolation string      `yaml:"on_violation"`
	Allow       []fileEntry `yaml:"allow"`
}

type fileEntry struct {
	CIDR  string   `yaml:"cidr"`
	Host  string   `yaml:"host"`
	Class string   `yaml:"class"`
	Ports []string `yaml:"ports"`
}

// MaxAllowListBytes bounds an allow-list file.
const MaxAllowListBytes = 1 << 20

// ParseAllowList decodes and validates the YAML text of an allow-list (no signature). Errors
// name the offending field, e.g. `services.agents.allow[1].cidr: …`.
func ParseAllowList(text []byte) (*AllowList, error) {
	if len(text) > MaxAllowListBytes {
		return nil, fmt.Errorf("allow-list larger than %d bytes", MaxAllowListBytes)
	}
	var f fileList
	dec := yaml.NewDecoder(bytes.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("allow-list YAML: %w", err)
	}
	if f.Serial == 0 {
		return nil, errors.New("serial: required, a number above 0 that grows with every new version")
	}
	l := &AllowList{Serial: f.Serial, Services: map[string]*Rules{}, Tenants: map[string]map[string]*Rules{}}
	for _, name := range slices.Sorted(maps.Keys(f.Services)) {
		r, err := f.Services[name].compile("services."+name, name)
		if err != nil {
			return nil, err
		}
		l.Services[name] = r
	}
	for _, tenant := range slices.Sorted(maps.Keys(f.Tenants)) {
		if strings.TrimSpace(tenant) == "" {
			return nil, errors.New("tenants: a tenant id must not be empty")
		}
		l.Tenants[tenant] = map[string]*Rules{}
		for _, name := range slices.Sorted(maps.Keys(f.Tenants[tenant])) {
			r, err := f.Tenants[tenant][name].compile("tenants."+tenant+"."+name, name)
			if err != nil {
				return nil, err
			}
			l.Tenants[tenant][name] = r
		}
	}
	return l, nil
}

func (f fileRules) compile(path, service string) (*Rules, error) {
	if !slices.Contains(Services, service) {
		return nil, fmt.Errorf("%s: unknown service %q (known: %s)", path, service, strings.Join(Services, ", "))
	}
	if f.Class == "" {
		return nil, fmt.Errorf("%s.class: required (D0 … D4)", path)
	}
	c, err := ParseClass(f.Class)
	if err != nil {
		return nil, fmt.Errorf("%s.class: %w", path, err)
	}
	r := &Rules{Class: c, Action: ActionNone}
	switch Action(f.OnViolation) {
	case "", ActionNone:
	case ActionDeregister:
		if service != ServiceAgents {
			return nil, fmt.Errorf("%s.on_violation: %s applies to the agents service only", path, ActionDeregister)
		}
		r.Action = ActionDeregister
	default:
		return nil, fmt.Errorf("%s.on_violation: must be none or deregister_agent, got %q", path, f.OnViolation)
	}
	for i, e := range f.Allow {
		d, err := e.compile(fmt.Sprintf("%s.allow[%d]", path, i), c)
		if err != nil {
			return nil, err
		}
		r.Allow = append(r.Allow, d)
	}
	return r, nil
}

func (e fileEntry) compile(path string, ceiling Class) (Destination, error) {
	var d Destination
	switch {
	case e.CIDR != "" && e.Host != "":
		return d, fmt.Errorf("%s: give cidr or host, not both", path)
	case e.CIDR != "":
		p, err := netip.ParsePrefix(e.CIDR)
		if err != nil {
			return d, fmt.Errorf("%s.cidr: %w", path, err)
		}
		if e.Class != "" {
			return d, fmt.Errorf("%s.class: only host entries have a class (an address entry's class is its addresses')", path)
		}
		d.Prefix = p.Masked()
	case e.Host != "":
		h := normalHost(e.Host)
		if !validHostPattern(h) {
			return d, fmt.Errorf("%s.host: %q is not a DNS name or *.name", path, e.Host)
		}
		d.Host, d.Class = h, D3
		if e.Class != "" {
			c, err := ParseClass(e.Class)
			if err != nil {
				return d, fmt.Errorf("%s.class: %w", path, err)
			}
			if c < D1 || c > D3 {
				return d, fmt.Errorf("%s.class: a host entry is D1, D2 or D3, got %s", path, c)
			}
			d.Class = c
		}
		if d.Class > ceiling {
			return d, fmt.Errorf("%s.class: %s is wider than the service's class %s", path, d.Class, ceiling)
		}
	default:
		return d, fmt.Errorf("%s: cidr or host required", path)
	}
	for j, ps := range e.Ports {
		pr, err := parsePortRange(ps)
		if err != nil {
			return d, fmt.Errorf("%s.ports[%d]: %w", path, j, err)
		}
		d.Ports = append(d.Ports, pr)
	}
	return d, nil
}

func parsePortRange(s string) (PortRange, error) {
	from, to, isRange := strings.Cut(strings.TrimSpace(s), "-")
	a, err := strconv.ParseUint(strings.TrimSpace(from), 10, 16)
	if err != nil || a == 0 {
		return PortRange{}, fmt.Errorf("%q is not a port (1-65535) or range (8000-8100)", s)
	}
	b := a
	if isRange {
		b, err = strconv.ParseUint(strings.TrimSpace(to), 10, 16)
		if err != nil || b < a {
			return PortRange{}, fmt.Errorf("%q is not a port range low-high with 1 <= low <= high <= 65535", s)
		}
	}
	return PortRange{From: uint16(a), To: uint16(b)}, nil
}

// validHostPattern accepts a DNS name of letters, digits, hyphens and dots (labels 1–63, total
// at most 253), optionally preceded by "*." — and refuses IP literals, which belong in cidr.
func validHostPattern(h string) bool {
	name := strings.TrimPrefix(h, "*.")
	if name == "" || len(name) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// ErrAllowListSignature is the class of a signed allow-list refused at load because its
// signature does not hold: tampered, signed by an unknown key, or not signed at all.
var ErrAllowListSignature = errors.New("allow-list signature refused")

// OpenAllowList verifies a signed allow-list with the trusted keys and parses it. A file changed
// after signing, one signed only by keys not in verifiers, and an unsigned or malformed file are
// refused with an error wrapping ErrAllowListSignature that says which.
func OpenAllowList(signed []byte, verifiers note.Verifiers) (*AllowList, error) {
	if len(signed) > MaxAllowListBytes {
		return nil, fmt.Errorf("%w: file larger than %d bytes", ErrAllowListSignature, MaxAllowListBytes)
	}
	n, err := note.Open(signed, verifiers)
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		switch {
		case errors.As(err, &invalid):
			return nil, fmt.Errorf("%w: the signature of key %s does not match the text: the file was changed after it was signed", ErrAllowListSignature, invalid.Name)
		case errors.As(err, &unverified):
			return nil, fmt.Errorf("%w: not signed by a trusted key (egress.allowlist_keys)", ErrAllowListSignature)
		}
		return nil, fmt.Errorf("%w: not a signed allow-list (%v); sign it with nops egress sign", ErrAllowListSignature, err)
	}
	l, err := ParseAllowList([]byte(n.Text))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(signed)
	l.Source, l.SHA256 = "signed allow-list", hex.EncodeToString(sum[:])
	if len(n.Sigs) > 0 {
		l.Signer = n.Sigs[0].Name
	}
	return l, nil
}

// SignAllowList validates text as an allow-list and signs it with the note signer key skey
// (from GenerateAllowListKey). Text that does not parse is refused: a signer vouches for what
// the kernel will load.
func SignAllowList(text []byte, skey string) ([]byte, error) {
	if _, err := ParseAllowList(text); err != nil {
		return nil, err
	}
	s, err := note.NewSigner(strings.TrimSpace(skey))
	if err != nil {
		return nil, fmt.Errorf("signer key: %w", err)
	}
	t := string(text)
	if !strings.HasSuffix(t, "\n") {
		t += "\n"
	}
	out, err := note.Sign(&note.Note{Text: t}, s)
	if err != nil {
		return nil, fmt.Errorf("sign allow-list: %w", err)
	}
	return out, nil
}

// GenerateAllowListKey makes an Ed25519 key pair for signing allow-lists: the signer key (keep
// it secret, off the kernel's machines) and the verifier key (egress.allowlist_keys).
func GenerateAllowListKey(name string) (skey, vkey string, err error) {
	return note.GenerateKey(rand.Reader, name)
}

// ParseVerifierKeys reads a comma- or newline-separated list of note verifier keys.
func ParseVerifierKeys(s string) (note.Verifiers, error) {
	var vs []note.Verifier
	for k := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == ',' || r == '\n' || r == ' ' || r == '\t' || r == '\r' }) {
		v, err := note.NewVerifier(k)
		if err != nil {
			return nil, fmt.Errorf("verifier key %q: %w", k, err)
		}
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return nil, errors.New("no verifier key")
	}
	return note.VerifierList(vs...), nil
}
