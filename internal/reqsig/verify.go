package reqsig

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/dunglas/httpsfv"
	httpsig "github.com/remitly-oss/httpsig-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/nops-kernel/nops/internal/errs"
)

// Defaults of Config.
const (
	// Tag is the value of the tag parameter that marks a signature of a request to the kernel.
	Tag = "nops-request"
	// DefaultMaxSkew is how far created may be from the verifier's clock, either way.
	DefaultMaxSkew = 300 * time.Second
	// DefaultMaxNonceLen bounds a nonce, in bytes.
	DefaultMaxNonceLen = 128
	// DefaultMaxHeaderLen bounds Signature-Input and Signature together, in bytes.
	DefaultMaxHeaderLen = 8 << 10
	// maxKeyIDLen bounds a keyid before it is looked up.
	maxKeyIDLen = 128
)

// Config is the verifier's policy; the zero value is the kernel's strict default.
type Config struct {
	// MaxSkew is how far created may be from now, in the past or the future (0: DefaultMaxSkew).
	// A nonce is remembered for as long as a signature created with it can pass this check.
	MaxSkew time.Duration
	// Scheme is the scheme of the URI clients sign in @target-uri: "https" for a kernel behind a
	// TLS-terminating proxy. "": https on TLS connections, http otherwise.
	Scheme string
	// MaxNonceLen and MaxHeaderLen bound untrusted input (0: the defaults).
	MaxNonceLen  int
	MaxHeaderLen int

	// Relaxations of the policy, for tests that check the cryptography against foreign
	// vectors (RFC 9421 Appendix B) only. The kernel sets none of them.
	InsecureSkipTag      bool // accept any tag, or none
	InsecureSkipNonce    bool // accept a signature without nonce (a nonce present is still claimed)
	InsecureSkipCoverage bool // do not require @method, @target-uri, content-digest, content-type

	// NonceDurability is what an accepted claim survives when the nonce store is a database
	// that implements NonceTxRunner (the SQL stores): "" or DurabilityFull, or
	// DurabilityProcess. A store that reports its own durability (DurableNonceStore: FileNonces)
	// needs "" or that one. It must be "" or DurabilityFull for any other store.
	NonceDurability Durability

	Now           func() time.Time     // nil: time.Now
	Logger        *slog.Logger         // refusals at Info, never key material; nil: discard
	MeterProvider metric.MeterProvider // nil: no metrics
}

// KeyLookup finds the key a signature names; *Keys implements it. An unknown keyid is an
// errs.NotFound; any other error is a failure of the lookup itself.
type KeyLookup interface {
	Lookup(ctx context.Context, keyID string) (Material, error)
}

// Result is what a verified signature tells about the request.
type Result struct {
	KeyID    string
	TenantID string
	AgentID  string // "" when the key is not bound to an agent
	Alg      Algorithm
	Label    string    // the label of the verified signature
	Created  time.Time // UTC
	Nonce    string    // "" only under InsecureSkipNonce
	// Previous reports that the signature verified with the material a rotation replaced, still
	// in its grace period: the client should switch to the new secret or key.
	Previous bool
}

// Verifier checks RFC 9421 signatures of requests. Create it with NewVerifier; it is safe for
// concurrent use.
type Verifier struct {
	keys       KeyLookup
	nonces     NonceStore
	cfg        Config
	outcome    metric.Int64Counter
	claimTime  metric.Float64Histogram
	claimAttrs metric.MeasurementOption
	// acceptedAttrs is the outcome counter's attribute set of an accepted signature, the one
	// nearly every request records, built once (a set is sorted, hashed and allocated).
	acceptedAttrs metric.MeasurementOption
}

// NewVerifier returns a Verifier looking keys up in keys and claiming nonces in nonces. A
// nonces that is also a TxRunner (the SQL stores) has its claims committed in groups
// (GroupCommitNonces), with Config.NonceDurability: concurrent signed requests share one commit.
func NewVerifier(keys KeyLookup, nonces NonceStore, cfg Config) (*Verifier, error) {
	_, isTx := nonces.(TxRunner)
	own, hasOwn := nonces.(DurableNonceStore)
	hasOwn = hasOwn && !isTx
	switch {
	case keys == nil:
		return nil, errors.New("new request verifier: nil key lookup")
	case nonces == nil:
		return nil, errors.New("new request verifier: nil nonce store")
	case cfg.MaxSkew < 0, cfg.MaxNonceLen < 0, cfg.MaxHeaderLen < 0:
		return nil, errors.New("new request verifier: negative limit")
	case cfg.Scheme != "" && cfg.Scheme != "http" && cfg.Scheme != "https":
		return nil, fmt.Errorf("new request verifier: scheme %q is neither http nor https", cfg.Scheme)
	case cfg.NonceDurability != "" && !cfg.NonceDurability.Valid():
		return nil, fmt.Errorf("new request verifier: unknown nonce durability %q", cfg.NonceDurability)
	case hasOwn && cfg.NonceDurability != "" && cfg.NonceDurability != own.Durability():
		return nil, fmt.Errorf("new request verifier: nonce durability %s, but the nonce store's is %s", cfg.NonceDurability, own.Durability())
	case cfg.NonceDurability == DurabilityProcess && !isTx && !hasOwn:
		return nil, fmt.Errorf("new request verifier: nonce durability %s applies to a database nonce store, not %T", cfg.NonceDurability, nonces)
	}
	if cfg.MaxSkew == 0 {
		cfg.MaxSkew = DefaultMaxSkew
	}
	if cfg.MaxNonceLen == 0 {
		cfg.MaxNonceLen = DefaultMaxNonceLen
	}
	if cfg.MaxHeaderLen == 0 {
		cfg.MaxHeaderLen = DefaultMaxHeaderLen
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mp := cfg.MeterProvider
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	outcome, err := mp.Meter("github.com/nops-kernel/nops/internal/reqsig").Int64Counter("nops.reqsig.verifications",
		metric.WithUnit("{request}"),
		metric.WithDescription("Request signature verifications by outcome (accepted, refused, error) and refusal reason."))
	if err != nil {
		return nil, fmt.Errorf("new request verifier: %w", err)
	}
	claimTime, err := mp.Meter("github.com/nops-kernel/nops/internal/reqsig").Float64Histogram("nops.reqsig.nonce_claim.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Time from the start of a nonce claim to its answer (for a database: the wait for the group commit and the commit itself), by store durability."),
		metric.WithExplicitBucketBoundaries(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
	if err != nil {
		return nil, fmt.Errorf("new request verifier: %w", err)
	}
	durability := "store"
	if hasOwn {
		durability = string(own.Durability())
	}
	if tx, ok := nonces.(TxRunner); ok {
		g, err := NewGroupCommitNonces(nonces, tx, cfg.NonceDurability)
		if err != nil {
			return nil, fmt.Errorf("new request verifier: %w", err)
		}
		nonces, durability = g, string(g.Durability())
	}
	return &Verifier{keys: keys, nonces: nonces, cfg: cfg, outcome: outcome, claimTime: claimTime,
		claimAttrs:    metric.WithAttributeSet(attribute.NewSet(attribute.String("durability", durability))),
		acceptedAttrs: outcomeAttrs("accepted", "")}, nil
}

// Refusal codes: the machine-readable reason of a refusal (RefusalCode), for logs, metrics and
// audit records. Stable strings.
const (
	CodeMissing         = "missing"          // no Signature-Input or Signature
	CodeMalformed       = "malformed"        // a header is not what RFC 9421 and RFC 9651 say
	CodeTag             = "tag"              // tag is not nops-request
	CodeParameter       = "parameter"        // created, keyid or nonce missing
	CodeNotCovered      = "not_covered"      // a required component is not covered
	CodeUnsupported     = "unsupported"      // a component the kernel does not support
	CodeSkew            = "skew"             // created too far from now
	CodeExpired         = "expired"          // past the signature's expires
	CodeUnknownKey      = "unknown_key"      // keyid names no key
	CodeKeyRevoked      = "key_revoked"      // the key is revoked
	CodeKeyExpired      = "key_expired"      // the key has expired
	CodeAlgMismatch     = "alg_mismatch"     // alg is not the key's algorithm
	CodeDigest          = "digest"           // Content-Digest missing, malformed or unsupported
	CodeDigestMismatch  = "digest_mismatch"  // Content-Digest does not match the body
	CodeBadSignature    = "bad_signature"    // the signature does not verify
	CodeReplay          = "replay"           // the nonce was used before
	codeInternalFailure = "internal_failure" // metrics only: not a refusal
)

// Refusal is the cause inside the errs.Unauthenticated error of a refused signature: Message is
// the client-safe reason (also the error's message), Code one of the Code* constants.
type Refusal struct {
	Code    string
	Message string
}

func (r *Refusal) Error() string { return r.Message }

// RefusalCode returns the code of a refusal in err's chain, or "" when err is not a refusal.
func RefusalCode(err error) string {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Code
	}
	return ""
}

func refuse(code, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return errs.Wrap(errs.Unauthenticated, &Refusal{Code: code, Message: msg}, "%s", msg)
}

// Verify checks the signature of r, whose body is body (already read: the caller bounds its
// size), and claims its nonce. A refusal is an *errs.Error with code Unauthenticated whose
// message says which check failed (never an expected signature or digest); a failure of the key
// lookup or the nonce store is an Unavailable or Internal error. On an error the Result holds
// what was read before the failing check (for logs), never an accepted signature. See the package
// documentation for the rules and their order.
func (v *Verifier) Verify(ctx context.Context, r *http.Request, body []byte) (Result, error) {
	res, claim, err := v.check(ctx, r, body)
	if err == nil && claim != nil {
		err = v.claim(ctx, claim)
	}
	v.record(ctx, res, err)
	return res, err
}

// Pending is a signature whose checks passed and whose nonce claim may still be committing
// (Begin). It is accepted only once Wait returns nil. Safe for concurrent use.
type Pending struct {
	res  Result
	done chan struct{} // closed once err is final
	err  error
}

// Result is what the signature says (key, tenant, agent, nonce), before its nonce claim is
// known to have succeeded: nothing may be done on its strength that Wait's refusal could not
// undo.
func (p *Pending) Result() Result { return p.res }

// Done is closed when Wait would return at once.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Wait waits for the nonce claim and returns the verification's outcome, as Verify does: nil
// once the claim committed, a refusal (CodeReplay) when the nonce was used before, an
// errs.Unavailable error when the nonce store failed. It may be called any number of times.
func (p *Pending) Wait() (Result, error) {
	<-p.done
	return p.res, p.err
}

// settled returns a Pending whose outcome is known.
func settled(res Result, err error) *Pending {
	p := &Pending{res: res, err: err, done: make(chan struct{})}
	close(p.done)
	return p
}

// Begin checks the signature of r as Verify does, and starts claiming its nonce without waiting
// for the claim to commit: the caller may go on with work that the claim's refusal can undo
// (checks, a read whose response it holds back), then calls Wait. An error is a refusal or
// failure of the checks before the claim (the returned Pending holds what was read, for logs;
// Wait returns the same error). The claim runs without ctx's cancellation (a claim started
// completes, bounded by the store's own timeouts), and the verification's outcome is counted
// and logged when it is known.
func (v *Verifier) Begin(ctx context.Context, r *http.Request, body []byte) (*Pending, error) {
	res, claim, err := v.check(ctx, r, body)
	if err != nil || claim == nil {
		v.record(ctx, res, err)
		return settled(res, err), err
	}
	p := &Pending{res: res, done: make(chan struct{})}
	go func() {
		p.err = v.claim(context.WithoutCancel(ctx), claim)
		v.record(ctx, p.res, p.err)
		close(p.done)
	}()
	return p, nil
}

// record counts and logs the outcome of one verification.
func (v *Verifier) record(ctx context.Context, res Result, err error) {
	outcome, code := "accepted", ""
	switch {
	case err == nil:
	case RefusalCode(err) != "":
		outcome, code = "refused", RefusalCode(err)
		v.cfg.Logger.InfoContext(ctx, "request signature refused", "reason", code, "key_id", res.KeyID, "error", err)
	default:
		outcome, code = "error", codeInternalFailure
		v.cfg.Logger.ErrorContext(ctx, "request signature check failed", "key_id", res.KeyID, "error", err)
	}
	if err == nil {
		v.outcome.Add(ctx, 1, v.acceptedAttrs)
		return
	}
	v.outcome.Add(ctx, 1, outcomeAttrs(outcome, code))
}

// outcomeAttrs is the outcome counter's attribute set.
func outcomeAttrs(outcome, code string) metric.MeasurementOption {
	return metric.WithAttributes(attribute.String("outcome", outcome), attribute.String("reason", code))
}

// signatureInput is the selected signature, with its parameters checked for type.
type signatureInput struct {
	label      string
	components []string
	signature  []byte
	keyID      string
	nonce      string
	tag        string
	alg        string
	created    int64
	expires    int64
	hasCreated bool
	hasExpires bool
	hasNonce   bool
	hasTag     bool
	hasAlg     bool
}

// pendingClaim is the nonce claim a checked signature still has to make.
type pendingClaim struct {
	keyID, nonce string
	until, now   time.Time
}

// check runs every check of the signature but the nonce claim, which it returns (nil under
// InsecureSkipNonce without a nonce).
func (v *Verifier) check(ctx context.Context, r *http.Request, body []byte) (Result, *pendingClaim, error) {
	in, err := v.parse(r)
	if err != nil {
		return Result{}, nil, err
	}
	res := Result{KeyID: in.keyID, Label: in.label, Nonce: in.nonce}
	if err := v.checkParams(in); err != nil {
		return res, nil, err
	}
	if err := v.checkComponents(r, body, in); err != nil {
		return res, nil, err
	}
	now := v.cfg.Now()
	created := time.Unix(in.created, 0).UTC()
	res.Created = created
	if err := v.checkTime(in, created, now); err != nil {
		return res, nil, err
	}

	m, err := v.keys.Lookup(ctx, in.keyID)
	switch {
	case errs.Is(err, errs.NotFound):
		return res, nil, refuse(CodeUnknownKey, "unknown keyid")
	case errs.As(err) != nil && errs.As(err).Code == errs.Internal:
		return res, nil, err // an unreadable sealed secret: the operator must act
	case err != nil:
		return res, nil, errs.Wrap(errs.Unavailable, err, "request keys are unavailable")
	}
	k := m.Key
	res.TenantID, res.AgentID, res.Alg = k.TenantID, k.AgentID, k.Alg
	switch {
	case k.Revoked(now):
		return res, nil, refuse(CodeKeyRevoked, "key %s is revoked", k.ID)
	case k.Expired(now):
		return res, nil, refuse(CodeKeyExpired, "key %s has expired", k.ID)
	case in.hasAlg && in.alg != string(k.Alg):
		return res, nil, refuse(CodeAlgMismatch, "algorithm %s does not match key %s", in.alg, k.ID)
	}

	previous, err := v.checkSignature(ctx, r, body, in, m, now)
	if err != nil {
		return res, nil, err
	}
	res.Previous = previous

	if !in.hasNonce {
		return res, nil, nil
	}
	// A replay is refused by the created check once created+MaxSkew has passed; until then the
	// record refuses it. One second more covers created's truncation to seconds.
	return res, &pendingClaim{keyID: k.ID, nonce: in.nonce, until: created.Add(v.cfg.MaxSkew + time.Second), now: now}, nil
}

// claim claims c's nonce: nil when it is accepted, a refusal when it was used before.
func (v *Verifier) claim(ctx context.Context, c *pendingClaim) error {
	start := time.Now()
	ok, err := v.nonces.ClaimNonce(ctx, c.keyID, c.nonce, c.until, c.now)
	v.claimTime.Record(ctx, time.Since(start).Seconds(), v.claimAttrs)
	switch {
	case err != nil:
		return errs.Wrap(errs.Unavailable, err, "the nonce store is unavailable")
	case !ok:
		return refuse(CodeReplay, "nonce already used")
	}
	return nil
}

// parse reads both headers as RFC 9651 dictionaries (httpsfv), selects the signature to verify
// — the first whose tag is Config's tag, else the first — and checks the type of each of its
// parameters, which the library would otherwise assert (and panic on).
func (v *Verifier) parse(r *http.Request) (signatureInput, error) {
	var in signatureInput
	inputs, sigs := r.Header.Values("Signature-Input"), r.Header.Values("Signature")
	switch {
	case len(inputs) == 0:
		return in, refuse(CodeMissing, "missing Signature-Input")
	case len(sigs) == 0:
		return in, refuse(CodeMissing, "missing Signature")
	}
	n := 0
	for _, s := range inputs {
		n += len(s)
	}
	for _, s := range sigs {
		n += len(s)
	}
	if n > v.cfg.MaxHeaderLen {
		return in, refuse(CodeMalformed, "malformed Signature-Input: Signature-Input and Signature exceed %d bytes", v.cfg.MaxHeaderLen)
	}
	inDict, err := httpsfv.UnmarshalDictionary(inputs)
	if err != nil {
		return in, refuse(CodeMalformed, "malformed Signature-Input: %v", err)
	}
	sigDict, err := httpsfv.UnmarshalDictionary(sigs)
	if err != nil {
		return in, refuse(CodeMalformed, "malformed Signature: %v", err)
	}
	labels := inDict.Names()
	if len(labels) == 0 {
		return in, refuse(CodeMissing, "missing Signature-Input")
	}
	in.label = labels[0]
	for _, l := range labels {
		if m, _ := inDict.Get(l); isTagged(m, Tag) {
			in.label = l
			break
		}
	}
	m, _ := inDict.Get(in.label)
	list, ok := m.(httpsfv.InnerList)
	if !ok {
		return in, refuse(CodeMalformed, "malformed Signature-Input: %s is not an inner list", in.label)
	}
	sm, ok := sigDict.Get(in.label)
	if !ok {
		return in, refuse(CodeMissing, "missing Signature for label %s", in.label)
	}
	item, ok := sm.(httpsfv.Item)
	if !ok {
		return in, refuse(CodeMalformed, "malformed Signature: %s is not a byte sequence", in.label)
	}
	if in.signature, ok = item.Value.([]byte); !ok {
		return in, refuse(CodeMalformed, "malformed Signature: %s is not a byte sequence", in.label)
	}
	for _, c := range list.Items {
		name, ok := c.Value.(string)
		if !ok {
			return in, refuse(CodeMalformed, "malformed Signature-Input: component identifiers must be strings")
		}
		if err := checkComponentID(name, c.Params); err != nil {
			return in, err
		}
		if slices.Contains(in.components, name) {
			return in, refuse(CodeMalformed, "malformed Signature-Input: component %q is covered twice", name)
		}
		in.components = append(in.components, name)
	}
	for _, p := range list.Params.Names() {
		val, _ := list.Params.Get(p)
		var ok bool
		switch p {
		case "created":
			in.created, ok = val.(int64)
			in.hasCreated = true
		case "expires":
			in.expires, ok = val.(int64)
			in.hasExpires = true
		case "keyid":
			in.keyID, ok = val.(string)
		case "nonce":
			in.nonce, ok = val.(string)
			in.hasNonce = true
		case "tag":
			in.tag, ok = val.(string)
			in.hasTag = true
		case "alg":
			in.alg, ok = val.(string)
			in.hasAlg = true
		default:
			return in, refuse(CodeMalformed, "malformed Signature-Input: unknown parameter %s", p)
		}
		if !ok {
			kind := "a string"
			if p == "created" || p == "expires" {
				kind = "an integer"
			}
			return in, refuse(CodeMalformed, "malformed Signature-Input: %s must be %s", p, kind)
		}
	}
	return in, nil
}

// isTagged reports whether a Signature-Input member is an inner list tagged tag.
func isTagged(m httpsfv.Member, tag string) bool {
	list, ok := m.(httpsfv.InnerList)
	if !ok {
		return false
	}
	t, _ := list.Params.Get("tag")
	return t == tag
}

// derived lists the derived components the kernel accepts: those the library derives as RFC
// 9421 defines them for a request (with the view's help). @scheme and @request-target are not
// among them: the library derives both as empty strings, which would cover nothing.
var derived = []string{"@method", "@target-uri", "@authority", "@path", "@query", "@query-param"}

// checkComponentID refuses component identifiers the library would mis-handle: upper case
// names, unknown derived components, and parameters (the library ignores sf, bs, key, req and
// tr and would sign the raw value); @query-param keeps its required name parameter.
func checkComponentID(name string, params *httpsfv.Params) error {
	switch {
	case name == "":
		return refuse(CodeMalformed, "malformed Signature-Input: empty component name")
	case strings.ToLower(name) != name:
		return refuse(CodeMalformed, "malformed Signature-Input: component %q must be lower case", name)
	case strings.HasPrefix(name, "@") && !slices.Contains(derived, name):
		return refuse(CodeUnsupported, "component %q is not supported", name)
	}
	names := params.Names()
	if name == "@query-param" {
		if len(names) != 1 || names[0] != "name" {
			return refuse(CodeMalformed, "malformed Signature-Input: @query-param takes exactly one parameter, name")
		}
		return nil
	}
	if len(names) > 0 {
		return refuse(CodeUnsupported, "component %q: parameters (%s) are not supported", name, strings.Join(names, ", "))
	}
	return nil
}

// checkParams checks the presence and bounds of the parameters.
func (v *Verifier) checkParams(in signatureInput) error {
	switch {
	case !v.cfg.InsecureSkipTag && in.tag != Tag:
		// First: a signature not made for the kernel is refused for that, whatever else it has.
		return refuse(CodeTag, "tag must be %s", Tag)
	case in.keyID == "":
		return refuse(CodeParameter, "keyid missing")
	case len(in.keyID) > maxKeyIDLen:
		return refuse(CodeMalformed, "malformed Signature-Input: keyid longer than %d bytes", maxKeyIDLen)
	case !in.hasCreated:
		return refuse(CodeParameter, "created missing")
	case !in.hasNonce && !v.cfg.InsecureSkipNonce:
		return refuse(CodeParameter, "nonce missing")
	case in.hasNonce && in.nonce == "":
		return refuse(CodeMalformed, "malformed Signature-Input: nonce is empty")
	case len(in.nonce) > v.cfg.MaxNonceLen:
		return refuse(CodeMalformed, "malformed Signature-Input: nonce longer than %d bytes", v.cfg.MaxNonceLen)
	case in.hasAlg && !knownAlg(in.alg):
		return refuse(CodeMalformed, "malformed Signature-Input: unknown alg")
	}
	return nil
}

// knownAlg reports whether alg is registered by RFC 9421 §6.2.2, so that it can be named in a
// message.
func knownAlg(alg string) bool {
	switch httpsig.Algorithm(alg) {
	case httpsig.Algo_HMAC_SHA256, httpsig.Algo_ED25519, httpsig.Algo_RSA_PSS_SHA512, httpsig.Algo_RSA_v1_5_sha256,
		httpsig.Algo_ECDSA_P256_SHA256, httpsig.Algo_ECDSA_P384_SHA384:
		return true
	}
	return false
}

// checkComponents checks that the request's parts the kernel protects are covered, and that
// every covered field is in the request.
func (v *Verifier) checkComponents(r *http.Request, body []byte, in signatureInput) error {
	has := func(c string) bool { return slices.Contains(in.components, c) }
	for _, c := range in.components {
		if !strings.HasPrefix(c, "@") && len(r.Header.Values(c)) == 0 {
			return refuse(CodeMalformed, "covered field %s is not in the request", c)
		}
	}
	if v.cfg.InsecureSkipCoverage {
		return nil
	}
	if !has("@method") {
		return refuse(CodeNotCovered, "component @method not covered")
	}
	if !has("@target-uri") {
		parts := []string{"@authority", "@path", "@query"}
		if !slices.ContainsFunc(parts, has) {
			return refuse(CodeNotCovered, "component @target-uri not covered (nor @authority, @path and @query)")
		}
		for _, c := range parts {
			if !has(c) {
				return refuse(CodeNotCovered, "component %s not covered", c)
			}
		}
	}
	if len(body) > 0 {
		if len(r.Header.Values("Content-Digest")) == 0 {
			return refuse(CodeDigest, "missing Content-Digest: a request with a body must carry one")
		}
		if !has("content-digest") {
			return refuse(CodeNotCovered, "component content-digest not covered")
		}
	}
	if len(r.Header.Values("Content-Type")) > 0 && !has("content-type") {
		return refuse(CodeNotCovered, "component content-type not covered")
	}
	return nil
}

// checkTime checks created against now ± MaxSkew, and expires when present.
func (v *Verifier) checkTime(in signatureInput, created, now time.Time) error {
	skew := v.cfg.MaxSkew
	d := now.Sub(created)
	switch {
	case d > skew:
		return refuse(CodeSkew, "created is %ds in the past (allowed skew %ds)", ceilSeconds(d), ceilSeconds(skew))
	case -d > skew:
		return refuse(CodeSkew, "created is %ds in the future (allowed skew %ds)", ceilSeconds(-d), ceilSeconds(skew))
	}
	if in.hasExpires {
		expires := time.Unix(in.expires, 0)
		if !now.Before(expires) {
			return refuse(CodeExpired, "the signature expired %ds ago", ceilSeconds(now.Sub(expires)))
		}
	}
	return nil
}

func ceilSeconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return s
}

// checkSignature has the library verify the Content-Digest and the signature, with the current
// material and then, during a rotation's grace period, the previous one. It reports whether the
// previous one verified.
func (v *Verifier) checkSignature(ctx context.Context, r *http.Request, body []byte, in signatureInput, m Material, now time.Time) (bool, error) {
	k := m.Key
	type candidate struct {
		spec     httpsig.KeySpec
		previous bool
	}
	var cands []candidate
	switch k.Alg {
	case AlgHMACSHA256:
		cands = append(cands, candidate{spec: httpsig.KeySpec{KeyID: k.ID, Algo: httpsig.Algo_HMAC_SHA256, Secret: m.Secret}})
		if k.InGrace(now) && len(m.PrevSecret) > 0 {
			cands = append(cands, candidate{spec: httpsig.KeySpec{KeyID: k.ID, Algo: httpsig.Algo_HMAC_SHA256, Secret: m.PrevSecret}, previous: true})
		}
	case AlgEd25519:
		cands = append(cands, candidate{spec: httpsig.KeySpec{KeyID: k.ID, Algo: httpsig.Algo_ED25519, PubKey: k.PublicKey}})
		if k.InGrace(now) && len(k.PrevPublicKey) == ed25519.PublicKeySize {
			cands = append(cands, candidate{spec: httpsig.KeySpec{KeyID: k.ID, Algo: httpsig.Algo_ED25519, PubKey: k.PrevPublicKey}, previous: true})
		}
	default:
		return false, errs.New(errs.Internal, "request key %s has the unsupported algorithm %q", k.ID, k.Alg)
	}
	var err error
	for _, c := range cands {
		if len(c.spec.Secret) == 0 && c.spec.PubKey == nil {
			continue
		}
		err = libVerify(serverView(ctx, r, body, v.cfg.Scheme), in.label, c.spec)
		if err == nil {
			return c.previous, nil
		}
		var se *httpsig.SignatureError
		if !errors.As(err, &se) || se.Code != httpsig.ErrSigVerification {
			break // not a mismatch of this material: another would fail the same way
		}
	}
	return false, libRefusal(err)
}

// libRefusal maps the library's error to a refusal. Its messages name components and codes,
// never a computed digest or signature.
func libRefusal(err error) error {
	var se *httpsig.SignatureError
	if err == nil || !errors.As(err, &se) {
		return errs.Wrap(errs.Internal, err, "request signature verification failed")
	}
	switch se.Code {
	case httpsig.ErrSigVerification:
		return refuse(CodeBadSignature, "signature does not verify")
	case httpsig.ErrNoSigWrongDigest:
		return refuse(CodeDigestMismatch, "content-digest does not match the body")
	case httpsig.ErrNoSigUnsupportedDigest:
		return refuse(CodeDigest, "Content-Digest carries no sha-256 or sha-512 digest")
	case httpsig.ErrNoSigInvalidHeader:
		return refuse(CodeDigest, "malformed Content-Digest")
	case httpsig.ErrNoSigMessageBody:
		return errs.Wrap(errs.Internal, err, "request body unreadable")
	case httpsig.ErrInvalidComponent, httpsig.ErrInvalidSignatureOptions, httpsig.ErrUnsupported, httpsig.ErrInvalidMetadata,
		httpsig.ErrSigInvalidSignature, httpsig.ErrNoSigInvalidSignature, httpsig.ErrNoSigMissingSignature:
		return refuse(CodeMalformed, "malformed signature: %s", se.Message)
	case httpsig.ErrSigProfile, httpsig.ErrSigUnsupportedAlgorithm:
		return refuse(CodeAlgMismatch, "algorithm not allowed: %s", se.Message)
	}
	return errs.Wrap(errs.Internal, err, "request signature verification failed (%s)", se.Code)
}
