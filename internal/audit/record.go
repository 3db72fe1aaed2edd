package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nops-kernel/nops/internal/errs"
)

// GlobalTree is the tree of actions that belong to no tenant: SUPER_ADMIN operations on tenants,
// failed logins whose tenant is unknown, and the like.
const GlobalTree = "global"

// MaxCanonicalSize bounds a record's canonical encoding. ParseCanonical refuses longer input
// before decoding it; the field limits of Validate keep every valid record well below it.
const MaxCanonicalSize = 32 << 10

// canonicalVersion is the "v" member of the canonical encoding. A change to the encoding must
// bump it, so that leaves written before the change still verify.
const canonicalVersion = 1

// timeLayout is the canonical time form: UTC, always nine fractional digits. A fixed width keeps
// the encoding trivial to reproduce outside Go.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Field limits, in bytes. They keep records small and make an oversized value an error at the
// caller rather than a silently truncated audit trail.
const (
	maxTreeLen      = 128
	maxActionLen    = 64
	maxPrincipalLen = 256
	maxIPLen        = 64
	maxRequestIDLen = 128
	maxResourceLen  = 512
	maxReasonLen    = 1024
)

// Record is one audit record: a leaf of its tree.
type Record struct {
	Seq           int64     // 0-based index in Tree, assigned by Append
	Tree          string    // a tenant id ("ten_…") or GlobalTree
	Time          time.Time // when the action was decided; stored in UTC with nanoseconds
	Actor         Actor
	Action        string // what was attempted: "agent.create", "auth.login", …
	Resource      string // what it was attempted on: "agents/agt_…"; empty when there is none
	Decision      Decision
	RequestDigest string // "sha256:<64 lowercase hex>" of the request body, or empty; never a secret
}

// Actor is who acted, from where.
type Actor struct {
	Principal string // user or service principal id; empty when authentication failed early
	IP        string // client address in netip canonical form, or empty
	RequestID string
}

// Decision is the outcome of the authorization (or authentication) decision.
type Decision struct {
	Allowed bool
	Reason  string
}

// DigestRequest returns the RequestDigest of a request body.
func DigestRequest(body []byte) string {
	sum := sha256.Sum256(body)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// TreeFor returns the tree of a tenant's actions: the tenant id itself, or GlobalTree for none.
func TreeFor(tenant string) string {
	if tenant == "" {
		return GlobalTree
	}
	return tenant
}

// ValidTree reports whether name may name a tree: 1 to 128 ASCII letters, digits, '_' or '-'.
// The set keeps a tree name safe inside a checkpoint origin line and unambiguous after its '/'.
func ValidTree(name string) bool {
	if name == "" || len(name) > maxTreeLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validAction(a string) bool {
	if a == "" || len(a) > maxActionLen {
		return false
	}
	for i := 0; i < len(a); i++ {
		c := a[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validDigest(d string) bool {
	if d == "" {
		return true
	}
	hexPart, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hexPart) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(hexPart); i++ {
		c := hexPart[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Validate checks r field by field and returns an errs.Invalid error naming the first bad field.
// Append and ParseCanonical call it; a record that passes has a canonical encoding that parses
// back to it exactly.
func (r Record) Validate() error {
	if r.Seq < 0 {
		return errs.Field("seq", "must not be negative")
	}
	if !ValidTree(r.Tree) {
		return errs.Field("tree", "must be 1 to 128 ASCII letters, digits, '_' or '-'")
	}
	if r.Time.IsZero() {
		return errs.Field("time", "required")
	}
	if y := r.Time.UTC().Year(); y < 1 || y > 9999 {
		return errs.Field("time", "year must be between 1 and 9999")
	}
	if !validAction(r.Action) {
		return errs.Field("action", "must be 1 to 64 of a-z, 0-9, '.', '_' or '-'")
	}
	strs := []struct {
		name, value string
		max         int
	}{
		{"actor.principal", r.Actor.Principal, maxPrincipalLen},
		{"actor.ip", r.Actor.IP, maxIPLen},
		{"actor.request_id", r.Actor.RequestID, maxRequestIDLen},
		{"resource", r.Resource, maxResourceLen},
		{"decision.reason", r.Decision.Reason, maxReasonLen},
	}
	for _, s := range strs {
		if len(s.value) > s.max {
			return errs.Field(s.name, "longer than "+strconv.Itoa(s.max)+" bytes")
		}
		if !utf8.ValidString(s.value) {
			return errs.Field(s.name, "not valid UTF-8")
		}
	}
	if r.Actor.IP != "" {
		a, err := netip.ParseAddr(r.Actor.IP)
		if err != nil || a.String() != r.Actor.IP {
			return errs.Field("actor.ip", "must be an IP address in canonical form")
		}
	}
	if !validDigest(r.RequestDigest) {
		return errs.Field("request_digest", `must be empty or "sha256:" and 64 lowercase hex digits`)
	}
	return nil
}

// Canonical returns the canonical encoding of r, the bytes hashed into its leaf (see the package
// documentation for the exact form). It is defined for every record; only for a record that
// passes Validate does ParseCanonical give r back.
func (r Record) Canonical() []byte {
	b := make([]byte, 0, 256)
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, canonicalVersion, 10)
	b = append(b, `,"tree":`...)
	b = appendString(b, r.Tree)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, r.Seq, 10)
	b = append(b, `,"time":"`...)
	b = r.Time.UTC().AppendFormat(b, timeLayout)
	b = append(b, `","actor":{"principal":`...)
	b = appendString(b, r.Actor.Principal)
	b = append(b, `,"ip":`...)
	b = appendString(b, r.Actor.IP)
	b = append(b, `,"request_id":`...)
	b = appendString(b, r.Actor.RequestID)
	b = append(b, `},"action":`...)
	b = appendString(b, r.Action)
	b = append(b, `,"resource":`...)
	b = appendString(b, r.Resource)
	b = append(b, `,"decision":{"allowed":`...)
	b = strconv.AppendBool(b, r.Decision.Allowed)
	b = append(b, `,"reason":`...)
	b = appendString(b, r.Decision.Reason)
	b = append(b, `},"request_digest":`...)
	b = appendString(b, r.RequestDigest)
	b = append(b, '}')
	return b
}

// appendString writes s as a JSON string the way RFC 8785 (JCS) does: '"' and '\' escaped with a
// backslash; U+0008, U+0009, U+000A, U+000C, U+000D as \b \t \n \f \r; every other code point
// below U+0020 as \u00xx with lowercase hex; everything else as raw UTF-8. Invalid UTF-8 bytes
// become U+FFFD (Validate refuses them first).
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\b':
				b = append(b, '\\', 'b')
			case c == '\t':
				b = append(b, '\\', 't')
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\f':
				b = append(b, '\\', 'f')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = utf8.AppendRune(b, utf8.RuneError)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// wireRecord is the decoding target of ParseCanonical. Field presence, order and spelling are
// checked by re-encoding, not here.
type wireRecord struct {
	V     int    `json:"v"`
	Tree  string `json:"tree"`
	Seq   int64  `json:"seq"`
	Time  string `json:"time"`
	Actor struct {
		Principal string `json:"principal"`
		IP        string `json:"ip"`
		RequestID string `json:"request_id"`
	} `json:"actor"`
	Action   string `json:"action"`
	Resource string `json:"resource"`
	Decision struct {
		Allowed bool   `json:"allowed"`
		Reason  string `json:"reason"`
	} `json:"decision"`
	RequestDigest string `json:"request_digest"`
}

// ParseCanonical parses a record from its canonical encoding. It accepts exactly the bytes
// Canonical produces for a valid record and nothing else: unknown or missing members, another
// member order, whitespace, other escapes or number spellings, a non-UTC or shortened time,
// trailing data and invalid field values are all errs.Invalid. So
// Canonical(ParseCanonical(b)) == b whenever it succeeds.
func ParseCanonical(b []byte) (Record, error) {
	if len(b) > MaxCanonicalSize {
		return Record{}, errs.New(errs.Invalid, "audit record longer than %d bytes", MaxCanonicalSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var w wireRecord
	if err := dec.Decode(&w); err != nil {
		return Record{}, errs.Wrap(errs.Invalid, err, "malformed audit record")
	}
	if w.V != canonicalVersion {
		return Record{}, errs.New(errs.Invalid, "unsupported audit record version %d", w.V)
	}
	t, err := time.Parse(timeLayout, w.Time)
	if err != nil {
		return Record{}, errs.Wrap(errs.Invalid, err, "malformed audit record time")
	}
	r := Record{
		Seq:  w.Seq,
		Tree: w.Tree,
		Time: t.UTC(),
		Actor: Actor{
			Principal: w.Actor.Principal,
			IP:        w.Actor.IP,
			RequestID: w.Actor.RequestID,
		},
		Action:        w.Action,
		Resource:      w.Resource,
		Decision:      Decision{Allowed: w.Decision.Allowed, Reason: w.Decision.Reason},
		RequestDigest: w.RequestDigest,
	}
	if err := r.Validate(); err != nil {
		return Record{}, err
	}
	if !bytes.Equal(r.Canonical(), b) {
		return Record{}, errs.New(errs.Invalid, "audit record is not in canonical form")
	}
	return r, nil
}
